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
 * feed itself its own bytes for ever), then hands them to a {@link Relay}. Every refusal is an {@code Error} with a code; the fds of a
 * refused request are closed by the control server.
 *
 * <p>One relay per event loop (config key {@code threads}), each with its own pipe pool, ready
 * list and pairs. A new pair goes to the relay with the fewest pairs ({@link Relay#placed}, a
 * LongAdder: the one number the control loop reads of another loop): it is prepared and its
 * task started here, on the control loop, then posted to its relay's loop, where it lives until
 * its end, whose answer comes back to the control loop through {@code Call.reply} (posted).
 */
public final class SpliceHandler implements RequestHandler, warren.daemon.handoff.Handoffable {
    private static final Log.Limited FD_LIMIT = Log.every("splicer.fd_limit");
    private final Relay[] relays;
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
        int n = d.loops().size();
        this.relays = new Relay[n];
        for (int i = 0; i < n; i++) {
            // splice.max_pipes and splice.pipes_kept are the daemon's: each loop gets its share
            relays[i] = new Relay(d.loops().get(i), i, d.counters(), new Relay.Settings(
                    c.get(SplicerConfig.PIPE_SIZE).intValue(), share(c.get(SplicerConfig.PIPES_KEPT), n, 0),
                    share(c.get(SplicerConfig.MAX_PIPES), n, 2), d.fdStore()));
            if (d.fdStore()) {
                // a pair leaves the store after its answer reached the control loop (posted there after it)
                // its description in the daemon's pair book, its fds under a slot's short name
                relays[i].journal(new warren.daemon.relay.FdStoreJournal(d.notifier(), relays[i], RELAY_ITEM,
                        i == 0 ? Runnable::run : d.loop()::execute, d.pairBook()));
            }
        }
        this.defaultIdle = c.get(SplicerConfig.IDLE_TIMEOUT);
        this.defaultLifetime = c.get(SplicerConfig.LIFETIME);
        this.defaultByteLimit = c.get(SplicerConfig.BYTE_LIMIT);
        this.maxPairs = c.get(SplicerConfig.MAX_PAIRS);
        this.fdReserve = c.get(SplicerConfig.FD_RESERVE);
        this.allowUnix = c.get(SplicerConfig.ALLOW_UNIX);
        this.baselineFds = d.successor() ? -1 : countOpenFds(); // a successor counts later, not while paused
        for (Relay r : relays) {
            d.metrics().probe(r.eventLoop(), r::sample);
        }
    }

    private static int share(long total, int n, int min) {
        return (int) Math.max(min, (total + n - 1) / n);
    }

    /** The relay of loop {@code i}. */
    public Relay relay(int i) {
        return relays[i];
    }

    @Override
    public void close() {
        for (Relay r : relays) {
            r.close();
        }
    }

    /** The relay with the fewest pairs (the first of equals: with one loop, always loop 0's). */
    private Relay leastLoaded() {
        Relay best = relays[0];
        long least = best.placed();
        for (int i = 1; i < relays.length && least > 0; i++) {
            long l = relays[i].placed();
            if (l < least) {
                best = relays[i];
                least = l;
            }
        }
        return best;
    }

    private long pairs() {
        long n = 0;
        for (Relay r : relays) {
            n += r.placed();
        }
        return n;
    }

    private long fdsHeld() {
        long n = 0;
        for (Relay r : relays) {
            n += r.fdsHeldShared();
        }
        return n;
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
        long pairs = pairs();
        if (pairs >= maxPairs) {
            call.fail(Error.Code.RESOURCE_EXHAUSTED, pairs + " pairs relayed (splice.max_pairs)");
            return;
        }
        long limit = Native.getrlimit(Native.RLIMIT_NOFILE)[0];
        if (baselineFds < 0) {
            baselineFds = Math.max(16, countOpenFds() - fdsHeld() - daemon.server().clientCount()
                    - daemon.server().queuedFds() - warren.daemon.Daemon.warmUpFds());
        }
        // answers queued for clients that do not read hold fds too (a Spliced answer: both sockets)
        long inUse = baselineFds + fdsHeld() + daemon.server().clientCount() + daemon.server().queuedFds() + 2;
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
        Relay relay = leastLoaded();
        warren.daemon.relay.Pair p = relay.prepare(call, call.takeFd(s.getFdA()), call.takeFd(s.getFdB()),
                l.getIdleTimeoutMs() != 0 ? l.getIdleTimeoutMs() : defaultIdle,
                l.getLifetimeMs() != 0 ? l.getLifetimeMs() : defaultLifetime,
                l.getByteLimit() != 0 ? l.getByteLimit() : defaultByteLimit, Relay.HAND_BACK, "splice");
        if (p == null) {
            return;
        }
        if (relay.eventLoop().inLoop()) {
            relay.begin(p); // loop 0's relay (with one loop, every pair): at once, as before
        } else {
            relay.eventLoop().execute(() -> relay.begin(p));
        }
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

    // Each loop's relay pauses and exports on its own loop (Handoffable's per-loop steps); every
    // loop's item is named RELAY_ITEM, and a successor spreads the pairs of all of them over its own
    // loops, whatever their number.

    @Override
    public void pauseLoop(int index) {
        relays[index].pause();
    }

    @Override
    public java.util.List<warren.daemon.handoff.HandoffItem> exportLoop(int index,
            java.util.function.ToLongFunction<Call> callRef) {
        relays[index].pause();
        return java.util.List.of(relays[index].export(RELAY_ITEM, callRef));
    }

    /** Pre-copy: the next pairs of loop {@code index}'s relay, their sockets duplicated (Relay.preCopy). */
    @Override
    public java.util.List<warren.daemon.handoff.HandoffItem> preCopyLoop(int index,
            java.util.function.ToLongFunction<Call> taskRef, int maxFds) throws NativeIoException {
        warren.daemon.handoff.HandoffItem it = relays[index].preCopy(RELAY_ITEM, taskRef, maxFds);
        return it == null ? java.util.List.of() : java.util.List.of(it);
    }

    @Override
    public java.util.List<String> preCopyItems() {
        return java.util.List.of(RELAY_ITEM);
    }

    @Override
    public void preCopyAbortedLoop(int index) {
        relays[index].forgetCopy();
    }

    /**
     * A pre-copy chunk, in the successor before its loops run: each item's pairs are dealt round
     * robin over the (paused) relays from the least loaded, registered there, and kept by key
     * until {@link #adopt} brings the delta and the calls.
     */
    @Override
    public void preAdopt(int stateVersion, java.util.List<warren.daemon.handoff.HandoffItem> items) throws Exception {
        if (stateVersion != stateVersion()) {
            throw new IllegalArgumentException("state version " + stateVersion + ", expected " + stateVersion());
        }
        for (Relay r : relays) {
            r.pause();
        }
        for (warren.daemon.handoff.HandoffItem it : items) {
            if (!it.name().equals(RELAY_ITEM)) {
                throw new IllegalArgumentException("unknown pre-copied item " + it.name());
            }
        }
        for (warren.daemon.handoff.HandoffItem it : items) {
            warren.handoff.v1.RelayState st = warren.handoff.v1.RelayState.parseFrom(it.payload());
            warren.daemon.relay.RelayStateCodec.check(st, it.fds(), true);
            java.util.List<warren.handoff.v1.RelayState.Builder> parts = deal(st);
            for (int i = 0; i < relays.length; i++) {
                relays[i].preAdopt(parts.get(i).build(), it.fds());
            }
        }
    }

    /**
     * Pre-copy, after each chunk: every pre-copied pair whose call was pre-copied gets it and its
     * task now (Relay.preAttach), so the pause ties only pairs whose calls came later.
     */
    @Override
    public void preAttach(java.util.function.LongFunction<Call> calls,
            java.util.function.BiConsumer<Call, warren.daemon.task.Task> attach) {
        for (Relay r : relays) {
            r.preAttach(calls, Relay.HAND_BACK, attach);
        }
    }

    /** {@code st}'s pairs round robin over the relays from the least loaded: one part per relay, relay order. */
    private java.util.List<warren.handoff.v1.RelayState.Builder> deal(warren.handoff.v1.RelayState st) {
        java.util.List<warren.handoff.v1.RelayState.Builder> parts = new java.util.ArrayList<>();
        for (int i = 0; i < relays.length; i++) {
            parts.add(warren.handoff.v1.RelayState.newBuilder().setFormat(st.getFormat()));
        }
        int start = relays.length == 1 ? 0 : java.util.Arrays.asList(relays).indexOf(leastLoaded());
        int k = 0;
        for (warren.handoff.v1.RelayPair rp : st.getPairsList()) {
            if (rp.getUpdate()) { // to the relay holding its pre-copied pair
                parts.get(holder(rp.getKey())).addPairs(rp);
            } else {
                parts.get((start + k++) % relays.length).addPairs(rp);
            }
        }
        for (long key : st.getEndedList()) {
            parts.get(holder(key)).addEnded(key);
        }
        return parts;
    }

    private int holder(long key) {
        for (int i = 0; i < relays.length; i++) {
            if (relays[i].hasCopy(key)) {
                return i;
            }
        }
        throw new IllegalArgumentException("pair key " + key + " was never pre-copied");
    }

    @Override
    public void resumeLoop(int index) throws NativeIoException {
        relays[index].resume();
    }

    @Override
    public void abandonLoop(int index) {
        relays[index].abandon();
    }

    /** Every loop at once, on the calling thread: for a daemon whose loops do not run (the warm-up's). */
    @Override
    public java.util.List<warren.daemon.handoff.HandoffItem> pauseAndExport(java.util.function.ToLongFunction<Call> callRef) {
        java.util.List<warren.daemon.handoff.HandoffItem> items = new java.util.ArrayList<>();
        for (int i = 0; i < relays.length; i++) {
            items.addAll(exportLoop(i, callRef));
        }
        return items;
    }

    @Override
    public void resume() throws NativeIoException {
        for (int i = 0; i < relays.length; i++) {
            resumeLoop(i);
        }
    }

    @Override
    public void abandon() {
        for (int i = 0; i < relays.length; i++) {
            abandonLoop(i);
        }
    }

    /**
     * Before the loops run (a successor, a recovery): every pair of every item is placed on the
     * relay with the fewest so far, paused until {@link #startAdopted}; an item's fds that no pair
     * uses are closed.
     */
    @Override
    public void adopt(int stateVersion, java.util.List<warren.daemon.handoff.HandoffItem> items,
            java.util.function.LongFunction<Call> calls,
            java.util.function.BiConsumer<Call, warren.daemon.task.Task> adoptTask) throws Exception {
        for (Relay r : relays) {
            r.pause(); // adopted pairs wait for the commit
        }
        for (warren.daemon.handoff.HandoffItem it : items) {
            if (!it.name().equals(RELAY_ITEM)) {
                throw new IllegalArgumentException("unknown handoff item " + it.name());
            }
        }
        for (warren.daemon.handoff.HandoffItem it : items) {
            warren.handoff.v1.RelayState st = warren.handoff.v1.RelayState.parseFrom(it.payload());
            warren.daemon.relay.RelayStateCodec.check(st, it.fds()); // all of it before any relay takes a pair
            // round robin from the least loaded: item by item the loops stay within one pair of each
            // other; a pre-copied pair's update or end goes to the relay that holds its copy
            java.util.List<warren.handoff.v1.RelayState.Builder> parts = deal(st);
            for (int i = 0; i < relays.length; i++) {
                if (parts.get(i).getPairsCount() == 0 && parts.get(i).getEndedCount() == 0 && relays.length > 1) {
                    continue;
                }
                for (warren.daemon.relay.Pair p : relays[i].adopt(parts.get(i).build(), it.fds(), calls, Relay.HAND_BACK)) {
                    adoptTask.accept(p.call(), p);
                }
            }
        }
        for (Relay r : relays) { // the pre-copied pairs that live on: their calls came with the control item
            for (warren.daemon.relay.Pair p : r.adoptCopies(calls, Relay.HAND_BACK)) {
                adoptTask.accept(p.call(), p);
            }
        }
    }

    @Override
    public java.util.List<warren.daemon.handoff.HandoffItem> rehearsalItems(int n, java.util.List<Fd> fds) {
        warren.handoff.v1.RelayState.Builder st = warren.handoff.v1.RelayState.newBuilder()
                .setFormat(warren.daemon.relay.RelayStateCodec.FORMAT);
        for (int i = 0; i < n; i++) {
            st.addPairs(warren.handoff.v1.RelayPair.newBuilder().setFdA(2 * i).setFdB(2 * i + 1).setCallRef(i + 1)
                    .setKey(i + 1) // the warm-up rehearses the pre-copy's path (preAdopt, then an empty delta)
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

    /** After a crash: the relays' pairs (p&lt;TASK&gt;), nothing else; any other entry is closed and counted. */
    @Override
    public java.util.List<warren.daemon.StoreRecovery> storeRecoveries() {
        return java.util.List.of(warren.daemon.relay.RelayStore.RECOVERY);
    }

    @Override
    public void startAdopted() throws NativeIoException {
        for (Relay r : relays) {
            r.resume();
        }
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
