package warren.daemon.relay;

import java.net.InetSocketAddress;
import java.util.ArrayDeque;
import java.util.List;
import jnr.ffi.Pointer;
import warren.control.v1.EndReason;
import warren.control.v1.Response;
import warren.control.v1.Spliced;
import warren.daemon.Log;
import warren.daemon.audit.JsonLine;
import warren.daemon.control.Call;
import warren.daemon.loop.EventLoop;
import warren.daemon.metrics.Counters;
import warren.fdpass.Fd;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.fdpass.net.TcpInfo;

/**
 * The relay engine: pairs on the daemon's event loop, their sockets registered edge-triggered
 * (EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET) with the pair and side in the handler, pipes lent from a
 * {@link PipePool}, idle and lifetime timers, and the one place a pair is torn down
 * ({@link #retire}): flush what is still in its pipes (non-blocking), give pipes back, restore the
 * sockets' file status flags, read TCP_INFO, write the audit end line and hand both original
 * sockets back in the {@code Spliced} answer.
 *
 * <p>With edge-triggered epoll a direction must run until EAGAIN: {@link Pair#pump} reads and
 * writes until neither moves a byte. A splice into a pipe can return EAGAIN while the socket still
 * has data (the pipe's slots are full of small fragments); such a direction is pumped again as
 * soon as its pipe drains, so no edge is lost. Loop thread only.
 */
public final class Relay {
    /** Settings from the config (SplicerConfig). */
    public record Settings(int pipeSize, int pipesKept, int maxPipes) {}

    /**
     * What happens to a pair's two sockets and its counts when it ends. Splicer hands both back in
     * {@code Spliced} ({@link #HAND_BACK}); Bumblebee's downgrade closes them and answers its own way.
     */
    @FunctionalInterface
    public interface Ending {
        void ended(Call call, Fd a, Fd b, Spliced counts, JsonLine audit);
    }

    /** The final answer {@code Spliced} with both original sockets. */
    public static final Ending HAND_BACK = (call, a, b, counts, audit) ->
            call.reply(Response.newBuilder().setSpliced(counts), List.of(a, b), counts.getReason().name(), audit);

    private final EventLoop loop;
    private final Counters counters;
    private final PipePool pipes;
    private final ArrayDeque<Object[]> pipeWaiters = new ArrayDeque<>();
    private final Pointer tcpInfoScratch = Native.allocate(TcpInfo.SIZE);
    /** Live pairs in start order (added at start, removed at retire), for pause and handoff. */
    private final java.util.LinkedHashSet<Pair> live = new java.util.LinkedHashSet<>();
    private boolean paused;
    private int active;

    public Relay(EventLoop loop, Counters counters, Settings settings) {
        this.loop = loop;
        this.counters = counters;
        this.pipes = new PipePool(settings.pipesKept(), settings.maxPipes(), settings.pipeSize());
    }

    EventLoop loop() {
        return loop;
    }

    public int active() {
        return active;
    }

    /** Sockets of live pairs plus open pipes' ends: what the relay holds. */
    public long fdsHeld() {
        return 2L * active + 2L * pipes.open();
    }

    public int pipesOpen() {
        return pipes.open();
    }

    /**
     * Starts relaying a and b (taken from the call) and answers {@code Accepted}. On failure the
     * sockets are closed and the call answered with the error.
     */
    public void start(Call call, Fd a, Fd b, long idleMillis, long lifetimeMillis, long byteLimit) {
        start(call, a, b, idleMillis, lifetimeMillis, byteLimit, HAND_BACK, "splice");
    }

    /**
     * Starts relaying a and b. With a {@code taskKind} the pair becomes the call's task and
     * {@code Accepted} is sent; with null the call already has its task (which ends the pair
     * through the returned handle). Returns null if it could not start (then the call has its
     * answer and the sockets are closed).
     */
    public Pair start(Call call, Fd a, Fd b, long idleMillis, long lifetimeMillis, long byteLimit, Ending ending,
            String taskKind) {
        Pair p = new Pair(this, call, a.get(), b.get(), idleMillis, lifetimeMillis, byteLimit);
        p.ending = ending;
        String aLocal;
        String bLocal;
        try {
            for (int side = 0; side < 2; side++) {
                p.originalFlags[side] = Native.fcntl(p.fd[side], Native.F_GETFL, 0);
                Native.fcntl(p.fd[side], Native.F_SETFL, p.originalFlags[side] | Native.O_NONBLOCK);
            }
            aLocal = address(Native.getsockname(p.fd[0]));
            bLocal = address(Native.getsockname(p.fd[1]));
            p.aRemote = address(Native.getpeername(p.fd[0]));
            p.bRemote = address(Native.getpeername(p.fd[1]));
            for (int side = 0; side < 2; side++) {
                final int s = side;
                p.slot[side] = loop.register(p.fd[side],
                        Native.EPOLLIN | Native.EPOLLOUT | Native.EPOLLRDHUP | Native.EPOLLET,
                        events -> onSocketEvents(p, s, events));
            }
        } catch (NativeIoException e) {
            for (int side = 0; side < 2; side++) {
                loop.unregister(p.slot[side]);
                Native.LIBC.fcntl(p.fd[side], Native.F_SETFL, p.originalFlags[side]);
            }
            a.close();
            b.close();
            call.fail(warren.control.v1.Error.Code.INTERNAL, "cannot start relaying: " + e.getMessage(), e.errno());
            return null;
        }
        a.detach(); // the pair owns the raw fds until retire() hands them back
        b.detach();
        active++;
        live.add(p);
        counters.increment("pairs.started");
        if (taskKind != null) {
            call.startTask(taskKind, p, new JsonLine().put("a_local", aLocal).put("a_remote", p.aRemote)
                    .put("b_local", bLocal).put("b_remote", p.bRemote).put("idle_timeout_ms", idleMillis)
                    .put("lifetime_ms", lifetimeMillis).put("byte_limit", byteLimit), true);
        }
        if (idleMillis > 0) {
            p.idleTimer = loop.schedule(idleMillis, () -> checkIdle(p));
        }
        if (lifetimeMillis > 0) {
            p.lifetimeTimer = loop.schedule(lifetimeMillis, () -> finish(p, EndReason.LIFETIME, 0,
                    "lifetime " + lifetimeMillis + " ms reached"));
        }
        if (paused) {
            pauseOne(p);
            return p;
        }
        p.pump(Pair.A_TO_B);
        p.pump(Pair.B_TO_A);
        if (p.ended()) {
            retire(p);
        }
        return p;
    }

    private static String address(InetSocketAddress a) {
        if (a == null) {
            return "unix";
        }
        String host = a.getAddress().getHostAddress();
        return (host.contains(":") ? "[" + host + "]" : host) + ":" + a.getPort();
    }

    private void onSocketEvents(Pair p, int side, int events) {
        if (p.retired) {
            return;
        }
        if ((events & (Native.EPOLLIN | Native.EPOLLRDHUP | Native.EPOLLHUP | Native.EPOLLERR)) != 0) {
            p.pump(side); // the direction that reads from this side
        }
        if (!p.ended() && (events & (Native.EPOLLOUT | Native.EPOLLHUP | Native.EPOLLERR)) != 0) {
            p.pump(1 - side); // the direction that writes to this side
        }
        if (p.ended()) {
            retire(p);
        }
    }

    private void checkIdle(Pair p) {
        if (p.retired) {
            return;
        }
        long idle = System.nanoTime() - p.lastActiveNanos;
        if (idle >= p.idleTimeoutNanos) {
            finish(p, EndReason.IDLE_TIMEOUT, 0, "idle for " + idle / 1_000_000 + " ms");
        } else {
            p.idleTimer = loop.schedule((p.idleTimeoutNanos - idle) / 1_000_000 + 1, () -> checkIdle(p));
        }
    }

    /** Ends a pair for a reason from outside its sockets (timer, cancel, stop). */
    void finish(Pair p, EndReason reason, int errno, String detail) {
        if (p.retired) {
            return;
        }
        p.end(reason, errno, detail);
        retire(p);
    }

    PipePool.Pipe lendPipe(Pair p, int d) {
        PipePool.Pipe pipe = pipes.acquire();
        if (pipe == null) {
            if (!p.waitingForPipe(d)) {
                p.setWaitingForPipe(d, true);
                pipeWaiters.add(new Object[] {p, d});
                counters.increment("pipes.waits");
                if (pipes.failures() > 0) {
                    Log.warn("task " + (p.call.task() == null ? "?" : p.call.task().number())
                            + ": no pipe available (" + pipes.open() + " open, splice.max_pipes or the fd limit);"
                            + " the direction waits for one");
                }
            }
            return null;
        }
        p.pipe[d] = pipe;
        return pipe;
    }

    void returnPipe(Pair p, int d) {
        pipes.release(p.pipe[d]);
        p.pipe[d] = null;
        serveWaiters();
    }

    private void serveWaiters() {
        while (!pipeWaiters.isEmpty() && pipes.idle() > 0) {
            Object[] w = pipeWaiters.poll();
            Pair q = (Pair) w[0];
            int d = (Integer) w[1];
            q.setWaitingForPipe(d, false);
            if (!q.retired) {
                loop.execute(() -> {
                    if (!q.retired && !paused) { // a paused pair is pumped again on resume
                        q.pump(d);
                        if (q.ended()) {
                            retire(q);
                        }
                    }
                });
            }
        }
    }

    void shutdownWrite(Pair p, int d) {
        int dst = p.fd[1 - d];
        if (Native.LIBC.shutdown(dst, Native.SHUT_WR) < 0) {
            int e = Native.errno();
            if (e != Errno.ENOTCONN) {
                p.end(EndReasons.forErrno(e), e, (d == Pair.A_TO_B ? "b" : "a") + ": shutdown");
            }
        }
        p.setShut(d);
    }

    /** Tears a pair down once and answers its request with both sockets. */
    void retire(Pair p) {
        if (p.retired) {
            return;
        }
        p.retired = true;
        active--;
        live.remove(p);
        if (p.idleTimer != null) {
            p.idleTimer.cancel();
        }
        if (p.lifetimeTimer != null) {
            p.lifetimeTimer.cancel();
        }
        long[] unflushed = new long[2];
        for (int d = 0; d < 2; d++) {
            PipePool.Pipe pipe = p.pipe[d];
            if (pipe == null) {
                continue;
            }
            long left = p.read[d] - p.written[d];
            while (left > 0) { // best effort: whatever the destination takes now
                long m = Native.splice(pipe.r, p.fd[1 - d], left, Native.SPLICE_F_MOVE | Native.SPLICE_F_NONBLOCK);
                if (m <= 0) {
                    break;
                }
                p.written[d] += m;
                left -= m;
            }
            unflushed[d] = left;
            if (left == 0) {
                pipes.release(pipe);
            } else {
                pipes.discard(pipe);
            }
            p.pipe[d] = null;
        }
        for (int side = 0; side < 2; side++) {
            loop.unregister(p.slot[side]);
            Native.LIBC.fcntl(p.fd[side], Native.F_SETFL, p.originalFlags[side]);
        }
        TcpInfo ta = tcpInfo(p.fd[0]);
        TcpInfo tb = tcpInfo(p.fd[1]);
        java.time.Instant now = java.time.Instant.now();
        long endNanos = now.getEpochSecond() * 1_000_000_000L + now.getNano();
        EndReason reason = p.endReason;
        counters.increment("pairs.ended." + reason.name().toLowerCase(java.util.Locale.ROOT));
        counters.counter("bytes.relayed").add(p.written[0] + p.written[1]);
        Spliced.Builder s = Spliced.newBuilder().setFdA(0).setFdB(1).setBytesAToB(p.written[0])
                .setBytesBToA(p.written[1]).setStartUnixNanos(p.startUnixNanos).setEndUnixNanos(endNanos)
                .setReason(reason).setErrno(p.endErrno).setDetail(p.endDetail)
                .setAReadClosed(p.eof(Pair.A_TO_B)).setBReadClosed(p.eof(Pair.B_TO_A))
                .setAWriteShut(p.shut(Pair.B_TO_A)).setBWriteShut(p.shut(Pair.A_TO_B))
                .setUnflushedAToB(unflushed[0]).setUnflushedBToA(unflushed[1]);
        JsonLine audit = new JsonLine().put("reason", reason.name()).put("errno", p.endErrno)
                .put("errno_name", p.endErrno == 0 ? "" : Errno.name(p.endErrno)).put("detail", p.endDetail)
                .put("bytes_a_to_b", p.written[0]).put("bytes_b_to_a", p.written[1])
                .put("unflushed_a_to_b", unflushed[0]).put("unflushed_b_to_a", unflushed[1])
                .put("a_local", localAddress(p.fd[0])).put("a_remote", p.aRemote)
                .put("b_local", localAddress(p.fd[1])).put("b_remote", p.bRemote)
                .put("a_tcp_info", json(ta)).put("b_tcp_info", json(tb));
        if (active == 0) {
            pipes.closeAll(); // idle again: hold no pipes, so the fd count returns to its idle value
        }
        p.ending.ended(p.call, Fd.adopt(p.fd[0]), Fd.adopt(p.fd[1]), s.build(), audit);
    }

    private static String localAddress(int fd) {
        try {
            return address(Native.getsockname(fd));
        } catch (NativeIoException e) {
            return "?";
        }
    }

    private TcpInfo tcpInfo(int fd) {
        try {
            return TcpInfo.of(fd, tcpInfoScratch);
        } catch (NativeIoException e) {
            return null; // not TCP (AF_UNIX) or already torn down
        }
    }

    private static JsonLine json(TcpInfo t) {
        if (t == null) {
            return new JsonLine();
        }
        return new JsonLine().put("state", TcpInfo.stateName(t.state())).put("rtt_us", t.rttMicros())
                .put("rttvar_us", t.rttVarMicros()).put("retransmits", t.retransmits())
                .put("total_retrans", t.totalRetrans()).put("snd_cwnd", t.sndCwnd())
                .put("delivery_rate_bps", t.deliveryRate() * 8).put("bytes_acked", t.bytesAcked())
                .put("bytes_received", t.bytesReceived());
    }

    /**
     * Pauses every live pair at a clean point, for the upgrade handoff: between two pump calls
     * (the loop thread runs one handler at a time) no splice is half done, and the counts satisfy
     * {@code inPipe = read - written} with those bytes sitting in the pair's pipe. Their sockets
     * leave epoll and their timers stop; nothing is read or written until {@link #resume}. Pairs
     * started while paused start paused. Loop thread only. Returns the number paused.
     */
    public int pause() {
        paused = true;
        for (Pair p : live) {
            pauseOne(p);
        }
        return live.size();
    }

    private void pauseOne(Pair p) {
        for (int side = 0; side < 2; side++) {
            loop.unregister(p.slot[side]);
            p.slot[side] = -1;
        }
        if (p.idleTimer != null) {
            p.idleTimer.cancel();
            p.idleTimer = null;
        }
        if (p.lifetimeTimer != null) {
            p.lifetimeTimer.cancel();
            p.lifetimeTimer = null;
        }
    }

    /**
     * Undoes {@link #pause} (the handoff did not happen): sockets back in epoll, timers re-armed
     * (lifetime counted from the pair's start, idle time from the resume), and each direction
     * pumped once, since edges that came while paused were not seen. Loop thread only.
     */
    public void resume() throws NativeIoException {
        paused = false;
        for (Pair p : new java.util.ArrayList<>(live)) {
            for (int side = 0; side < 2; side++) {
                final int s = side;
                p.slot[side] = loop.register(p.fd[side],
                        Native.EPOLLIN | Native.EPOLLOUT | Native.EPOLLRDHUP | Native.EPOLLET,
                        events -> onSocketEvents(p, s, events));
            }
            p.lastActiveNanos = System.nanoTime();
            if (p.idleTimeoutNanos > 0) {
                p.idleTimer = loop.schedule(p.idleTimeoutNanos / 1_000_000, () -> checkIdle(p));
            }
            if (p.lifetimeMillis > 0) {
                long left = Math.max(0, p.lifetimeMillis - (System.nanoTime() - p.startNanos) / 1_000_000);
                p.lifetimeTimer = loop.schedule(left, () -> finish(p, EndReason.LIFETIME, 0,
                        "lifetime " + p.lifetimeMillis + " ms reached"));
            }
            p.pump(Pair.A_TO_B);
            p.pump(Pair.B_TO_A);
            if (p.ended()) {
                retire(p);
            }
        }
    }

    public boolean paused() {
        return paused;
    }

    /** Closes pooled pipes (at exit). */
    public void close() {
        pipes.closeAll();
    }
}
