package warren.splicer;

import java.io.File;
import java.util.Set;
import warren.control.v1.Error;
import warren.control.v1.Limits;
import warren.control.v1.Request;
import warren.control.v1.Splice;
import warren.daemon.Daemon;
import warren.daemon.Log;
import warren.daemon.config.Config;
import warren.daemon.control.Call;
import warren.daemon.control.RequestHandler;
import warren.fdpass.Fd;
import warren.fdpass.FdInfo;
import warren.fdpass.FdPassException;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.fdpass.net.SocketPeers;
import warren.daemon.relay.Relay;

/**
 * Serves {@code Splice}: checks both fds before trusting them (connected stream sockets, not
 * listening, not the same socket twice, peer still there), checks there is room (pairs, fds),
 * refuses two sockets that are each other's peer ({@link SocketPeers}: relayed, the pair would
 * feed itself its own bytes for ever), then hands them to the {@link Relay}. Every refusal is an {@code Error} with a code; the fds of a
 * refused request are closed by the control server.
 */
public final class SpliceHandler implements RequestHandler, warren.daemon.handoff.Handoffable {
    private static final Log.Limited FD_LIMIT = Log.every("splicer.fd_limit");
    private final Relay relay;
    private final Daemon daemon;
    private final long defaultIdle;
    private final long defaultLifetime;
    private final long defaultByteLimit;
    private final long maxPairs;
    private final long fdReserve;
    private final boolean allowUnix;
    private long baselineFds;

    public SpliceHandler(Daemon d) {
        Config c = d.config();
        this.daemon = d;
        this.relay = new Relay(d.loop(), d.counters(), new Relay.Settings(c.get(SplicerConfig.PIPE_SIZE).intValue(),
                c.get(SplicerConfig.PIPES_KEPT).intValue(), c.get(SplicerConfig.MAX_PIPES).intValue(), d.fdStore()));
        if (d.fdStore()) {
            relay.journal(new warren.daemon.relay.FdStoreJournal(d.notifier(), relay, RELAY_ITEM));
        }
        this.defaultIdle = c.get(SplicerConfig.IDLE_TIMEOUT);
        this.defaultLifetime = c.get(SplicerConfig.LIFETIME);
        this.defaultByteLimit = c.get(SplicerConfig.BYTE_LIMIT);
        this.maxPairs = c.get(SplicerConfig.MAX_PAIRS);
        this.fdReserve = c.get(SplicerConfig.FD_RESERVE);
        this.allowUnix = c.get(SplicerConfig.ALLOW_UNIX);
        this.baselineFds = d.successor() ? -1 : countOpenFds(); // a successor counts later, not while paused
        d.metrics().probe(relay::sample);
    }

    public Relay relay() {
        return relay;
    }

    @Override
    public void close() {
        relay.close();
    }

    @Override
    public Set<Request.BodyCase> serves() {
        return Set.of(Request.BodyCase.SPLICE);
    }

    @Override
    public void handle(Call call) throws NativeIoException {
        Splice s = call.request().getSplice();
        Fd a = call.peekFd(s.getFdA());
        Fd b = call.peekFd(s.getFdB());
        try {
            FdInfo.requireConnectedStream(a, "fd_a", allowUnix);
            FdInfo.requireConnectedStream(b, "fd_b", allowUnix);
        } catch (FdPassException e) {
            call.fail(Error.Code.BAD_FD_TYPE, e.getMessage());
            return;
        }
        long[] sa = Native.fstat(a.get());
        long[] sb = Native.fstat(b.get());
        if (sa[2] == sb[2] && sa[3] == sb[3]) {
            call.fail(Error.Code.INVALID_ARGUMENT, "fd_a and fd_b are the same socket");
            return;
        }
        String gone = peerGone(a, "fd_a");
        if (gone == null) {
            gone = peerGone(b, "fd_b");
        }
        if (gone != null) {
            call.fail(Error.Code.PEER_GONE, gone);
            return;
        }
        if (relay.active() >= maxPairs) {
            call.fail(Error.Code.RESOURCE_EXHAUSTED, relay.active() + " pairs relayed (splice.max_pairs)");
            return;
        }
        long limit = Native.getrlimit(Native.RLIMIT_NOFILE)[0];
        if (baselineFds < 0) {
            baselineFds = Math.max(16, countOpenFds() - relay.fdsHeld() - daemon.server().clientCount()
                    - daemon.server().queuedFds());
        }
        // answers queued for clients that do not read hold fds too (a Spliced answer: both sockets)
        long inUse = baselineFds + relay.fdsHeld() + daemon.server().clientCount() + daemon.server().queuedFds() + 2;
        if (inUse + 4 + fdReserve > limit) {
            daemon.counters().increment("refused.fd_limit");
            FD_LIMIT.warn("refusing a Splice: about " + inUse + " of " + limit + " fds in use (RLIMIT_NOFILE, "
                    + "splice.fd_reserve " + fdReserve + ", " + daemon.server().queuedFds()
                    + " in answers not read yet); existing pairs carry on");
            call.fail(Error.Code.RESOURCE_EXHAUSTED, "fd limit near: about " + inUse + " of " + limit
                    + " fds in use; try again when pairs have ended");
            return;
        }
        SocketPeers.Result peers = SocketPeers.check(a, b);
        if (peers.verdict() == SocketPeers.Verdict.PEERS) {
            daemon.counters().increment("refused.peer_pair");
            call.fail(Error.Code.INVALID_ARGUMENT, "fd_a and fd_b are each other's peer (" + peers.detail()
                    + "): relaying them would send every byte back to where it came from, for ever");
            return;
        }
        if (peers.verdict() == SocketPeers.Verdict.UNKNOWN) {
            daemon.counters().increment("splice.peer_check_unknown"); // relayed; the pump's budget keeps the loop free
            Log.debug("cannot tell whether fd_a and fd_b are peers (" + peers.detail() + "); relaying them");
        }
        Limits l = s.getLimits();
        relay.start(call, call.takeFd(s.getFdA()), call.takeFd(s.getFdB()),
                l.getIdleTimeoutMs() != 0 ? l.getIdleTimeoutMs() : defaultIdle,
                l.getLifetimeMs() != 0 ? l.getLifetimeMs() : defaultLifetime,
                l.getByteLimit() != 0 ? l.getByteLimit() : defaultByteLimit);
    }

    // ---- upgrade in place: the relay's pairs are the whole state

    private static final String RELAY_ITEM = "splicer.relay";

    @Override
    public int stateVersion() {
        return 1;
    }

    @Override
    public java.util.List<Integer> acceptsStateVersions() {
        return java.util.List.of(1);
    }

    @Override
    public java.util.List<warren.daemon.handoff.HandoffItem> pauseAndExport(java.util.function.ToLongFunction<Call> callRef) {
        relay.pause();
        return java.util.List.of(relay.export(RELAY_ITEM, callRef));
    }

    @Override
    public void resume() throws NativeIoException {
        relay.resume();
    }

    @Override
    public void abandon() {
        relay.abandon();
    }

    @Override
    public void adopt(int stateVersion, java.util.List<warren.daemon.handoff.HandoffItem> items,
            java.util.function.LongFunction<Call> calls,
            java.util.function.BiConsumer<Call, warren.daemon.task.Task> adoptTask) throws Exception {
        relay.pause(); // adopted pairs wait for the commit
        for (warren.daemon.handoff.HandoffItem it : items) {
            if (!it.name().equals(RELAY_ITEM)) {
                throw new IllegalArgumentException("unknown handoff item " + it.name());
            }
            for (warren.daemon.relay.Pair p : relay.adopt(warren.handoff.v1.RelayState.parseFrom(it.payload()), it.fds(),
                    calls, Relay.HAND_BACK)) {
                adoptTask.accept(p.call(), p);
            }
        }
    }

    @Override
    public java.util.List<warren.daemon.handoff.HandoffItem> rehearsalItems(int n, java.util.List<Fd> fds) {
        warren.handoff.v1.RelayState.Builder st = warren.handoff.v1.RelayState.newBuilder().setFormat(1);
        for (int i = 0; i < n; i++) {
            st.addPairs(warren.handoff.v1.RelayPair.newBuilder().setFdA(2 * i).setFdB(2 * i + 1).setCallRef(i + 1)
                    .setIdleTimeoutMs(defaultIdle).setLifetimeMs(defaultLifetime).setByteLimit(defaultByteLimit)
                    .setStartUnixNanos(1).setAgeNanos(1).setARemote("127.0.0.1:1").setBRemote("127.0.0.1:2")
                    .setOriginalLingerA(warren.handoff.v1.Linger.getDefaultInstance())
                    .setOriginalLingerB(warren.handoff.v1.Linger.getDefaultInstance())
                    .addDirections(warren.handoff.v1.RelayDirection.newBuilder().setRead(1).setWritten(1))
                    .addDirections(warren.handoff.v1.RelayDirection.newBuilder().setRead(1).setWritten(1)));
        }
        return java.util.List.of(new warren.daemon.handoff.HandoffItem(RELAY_ITEM, st.build().toByteArray(), fds));
    }

    @Override
    public boolean survivesCrashes() {
        return daemon.fdStore();
    }

    @Override
    public void startAdopted() throws NativeIoException {
        relay.resume();
    }

    private static long countOpenFds() {
        String[] open = new File("/proc/self/fd").list();
        return open == null ? 64 : open.length;
    }

    /** Why a socket cannot be relayed (not connected, or a pending error), or null. */
    private static String peerGone(Fd fd, String role) throws NativeIoException {
        int err = Native.getsockoptInt(fd.get(), Native.SOL_SOCKET, Native.SO_ERROR);
        if (err != 0) {
            return role + " has a pending error: " + Errno.describe(err);
        }
        FdInfo info = FdInfo.of(fd);
        if (info.domain() == Native.AF_UNIX) {
            return null;
        }
        try {
            Native.getpeername(fd.get());
            return null;
        } catch (NativeIoException e) {
            if (e.errno() == Errno.ENOTCONN) {
                return role + " is not connected (ENOTCONN): its peer is gone or it never connected";
            }
            throw e;
        }
    }
}
