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
import warren.fdpass.net.Linger;
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
 * soon as its pipe drains, so no edge is lost.
 *
 * <p>Every wakeup has a budget: a pump stops after {@link Pair#ROUNDS_PER_WAKEUP} rounds that
 * moved bytes and puts its direction on the ready list, which this relay's loop {@link
 * EventLoop.Duty duty} runs once per cycle, after the fd events: each direction queued before the
 * run gets one more budget, those that use it up again wait for the next cycle. So a direction
 * that never runs dry (a fast sender, or a loop that feeds itself) shares the thread with every
 * other fd, timer and posted task instead of holding it. The same list serves directions that
 * waited for a pipe. Loop thread only.
 */
public final class Relay {
    private static final Log.Limited NO_PIPE = Log.every("relay.no_pipe");

    /** Settings from the config (SplicerConfig). */
    /**
     * {@code pinPipes}: every pair holds its two pipes for its whole life (taken at start), so a
     * crash-safe store of the pair's fds includes whatever bytes are in flight (systemd's fd store).
     */
    public record Settings(int pipeSize, int pipesKept, int maxPipes, boolean pinPipes) {
        public Settings(int pipeSize, int pipesKept, int maxPipes) {
            this(pipeSize, pipesKept, maxPipes, false);
        }
    }

    /** Told when a pair starts (its task exists, pipes pinned if asked) and when it has ended. Loop thread. */
    public interface Journal {
        void started(Pair p);

        /** The pair is about to be answered ({@link Ending}); {@link #ended} follows. Loop thread. */
        default void ending(Pair p) {}

        void ended(Pair p);

        /**
         * A pair handed in by a predecessor (upgrade, pre-copy or crash recovery) is this
         * process's now, stored as it was ({@code Pair.storeSlot}). Main thread, loop not running.
         */
        default void adopted(Pair p) {}

        /** A pre-copied pair that ended in the predecessor before the pause (its entry is gone). */
        default void copyDropped(Pair p) {}
    }

    private Journal journal;

    public void journal(Journal j) {
        this.journal = j;
    }

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
    /** Pairs with a direction marked ready ({@link Pair#markReady}): pumped by {@link #runReady}. */
    private final ArrayDeque<Pair> ready = new ArrayDeque<>();
    private final EventLoop.Duty readyDuty = this::runReady;
    private final Pointer tcpInfoScratch = Native.allocate(TcpInfo.SIZE);
    /** Live pairs in start order (added at start, removed at retire), for pause and handoff. */
    private final java.util.LinkedHashSet<Pair> live = new java.util.LinkedHashSet<>();
    private boolean paused;
    private int active;
    /** This relay's registrations and timers: paused and resumed together (EventLoop.Group). */
    private final EventLoop.Group group;
    /** Adopted pairs not registered yet: {@link #resume} arms them. */
    private final java.util.ArrayList<Pair> unarmed = new java.util.ArrayList<>();
    /** Pre-copy, old side: keys of copied pairs retired since their copy (sent with the delta). */
    private final java.util.ArrayList<Long> endedCopies = new java.util.ArrayList<>();
    /** Pre-copy, old side: the last key given (keys are {@code index << 40 | n}: unique over a daemon's relays). */
    private long copySeq;
    /**
     * Pre-copy, old side: tracking since the first {@link #preCopy} (until {@link #forgetCopy},
     * {@link #abandon}): pairs are listed as they change, so that {@link #export} walks only those.
     */
    private boolean tracking;
    /**
     * Pre-copy, old side: head of the changed list (intrusive through {@link Pair#nextChanged}):
     * pairs begun since tracking began, and copied pairs pumped since their copy (or holding a lent
     * pipe at their copy). A pair is on it at most once ({@link Pair#listed}); retired ones stay
     * on it and are skipped.
     */
    private Pair changedHead;
    /**
     * Pre-copy, old side: live pairs that were there when tracking began and are neither copied
     * nor listed yet. 0 at the pause when the pre-copy ran to its end; otherwise {@link #export}
     * looks for them in every live pair.
     */
    private int uncopiedUnlisted;
    /** Pairs (or keys) the last {@link #export} visited; and the successor's last adoption ({@link #adoptVisits}). */
    private long pauseVisits;
    private long adoptVisits;
    /** Pre-copy, successor: pre-copied pairs by key, until {@link #adoptCopies} (the delta's lookups). */
    private java.util.HashMap<Long, Pair> copies = new java.util.HashMap<>();
    /** Pre-copy, successor: pre-copied pairs without their call yet ({@link #preAttach}, else {@link #adoptCopies}). */
    private final java.util.ArrayList<Pair> unattached = new java.util.ArrayList<>();
    /**
     * Pre-copy, successor: pre-copied pairs with something to write (bytes in flight, an end of
     * stream not passed on): checked for their pipe and pumped at the resume; the others cost
     * nothing at the pause or the resume.
     */
    private java.util.Set<Pair> moving = java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>());
    /** Pairs ended from outside (cancel, stop) while paused: retired at {@link #resume}. */
    private final java.util.ArrayList<Pair> endedWhilePaused = new java.util.ArrayList<>();
    /**
     * Pairs live here or on their way (prepared on another loop, posted here): the one number
     * other loops read (the control loop, to place new pairs and count fds). Single-writer per
     * change, summed by readers: no lock.
     */
    private final java.util.concurrent.atomic.LongAdder placed = new java.util.concurrent.atomic.LongAdder();
    private final int index;

    public Relay(EventLoop loop, Counters counters, Settings settings) {
        this(loop, 0, counters, settings);
    }

    /** A relay on loop number {@code index} of the daemon (reported in metrics). */
    public Relay(EventLoop loop, int index, Counters counters, Settings settings) {
        this.loop = loop;
        this.index = index;
        this.counters = counters;
        this.pipes = new PipePool(settings.pipesKept(), settings.maxPipes(), settings.pipeSize());
        this.settings = settings;
        this.group = loop.group("relay " + index);
        loop.addDuty(readyDuty);
    }

    /** The loop this relay's pairs run on. */
    public EventLoop eventLoop() {
        return loop;
    }

    /** Pairs live on this relay or posted to it; any thread. */
    public long placed() {
        return placed.sum();
    }

    /** Sockets of live and posted pairs plus open pipes' ends; any thread (a little stale). */
    public long fdsHeldShared() {
        return 2L * placed.sum() + 2L * pipes.openShared();
    }

    private final Settings settings;

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

    /** Counters of the bytes of ended pairs (a to b, b to a); live pairs are added by {@link #sample}. */
    static final String BYTES_OUT = "relay.bytes.out";
    static final String BYTES_IN = "relay.bytes.in";

    /**
     * The relay's part of a metrics sample: bytes written by live pairs (so the byte counters move
     * while pairs last, and do not jump when they end) and the pipes. Loop thread, at scrape time.
     */
    public void sample(warren.daemon.metrics.Sample s) {
        long out = 0;
        long in = 0;
        for (Pair p : live) {
            out += p.written[0];
            in += p.written[1];
        }
        s.addCounter(BYTES_OUT, out);
        s.addCounter(BYTES_IN, in);
        s.gauge(warren.daemon.metrics.Families.PIPES_LENT, pipes.open() - pipes.free());
        s.gauge(warren.daemon.metrics.Families.PIPES_OPEN, pipes.open());
        s.gauge(warren.daemon.metrics.Families.RELAY_PAIRS, active, Integer.toString(index));
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
        Pair p = prepare(call, a, b, idleMillis, lifetimeMillis, byteLimit, ending, taskKind);
        return p != null && begin(p) ? p : null;
    }

    /**
     * The first half of a start, on any thread that may answer the call (the control loop): the
     * sockets are made non-blocking and held with SO_LINGER {on, 0}, their addresses read, the
     * task started (with a {@code taskKind}); the pair is counted as {@link #placed} here. Nothing
     * of this relay's loop state is touched: {@link #begin} on the relay's loop does the rest.
     * Returns null if the sockets cannot be used (then the call has its answer, the sockets are
     * closed).
     */
    public Pair prepare(Call call, Fd a, Fd b, long idleMillis, long lifetimeMillis, long byteLimit, Ending ending,
            String taskKind) {
        Pair p = new Pair(this, call, a.get(), b.get(), idleMillis, lifetimeMillis, byteLimit);
        p.ending = ending;
        String aLocal;
        String bLocal;
        try {
            for (int side = 0; side < 2; side++) {
                p.originalFlags[side] = Native.fcntl(p.fd[side], Native.F_GETFL, 0);
                Native.fcntl(p.fd[side], Native.F_SETFL, p.originalFlags[side] | Native.O_NONBLOCK);
                Linger original = Linger.of(p.fd[side]);
                p.originalLinger[side] = original;
                Linger.RESET.applyTo(p.fd[side]);
            }
            aLocal = address(Native.getsockname(p.fd[0]));
            bLocal = address(Native.getsockname(p.fd[1]));
            p.aRemote = address(Native.getpeername(p.fd[0]));
            p.bRemote = address(Native.getpeername(p.fd[1]));
        } catch (NativeIoException e) {
            handBackSockets(p);
            a.close();
            b.close();
            if (e.errno() == Errno.ENOTCONN) {
                // reset or closed by its peer after the handler's checks (the live fuzzer's TCP pairs did it
                // between SpliceHandler's peerGone and getpeername here): the client's doing, not a bug
                call.fail(warren.control.v1.Error.Code.PEER_GONE, "a socket's peer went away as the pair started: "
                        + e.getMessage(), e.errno());
            } else {
                call.fail(warren.control.v1.Error.Code.INTERNAL, "cannot start relaying: " + e.getMessage(), e.errno());
            }
            return null;
        }
        a.detach(); // the pair owns the raw fds until retire() hands them back
        b.detach();
        placed.increment();
        counters.increment("pairs.started");
        if (taskKind != null) { // Accepted once begin has stored the pair (journal): see Call.startTaskAcceptedLater
            call.startTaskAcceptedLater(taskKind, p, new JsonLine().put("a_local", aLocal).put("a_remote", p.aRemote)
                    .put("b_local", bLocal).put("b_remote", p.bRemote).put("idle_timeout_ms", idleMillis)
                    .put("lifetime_ms", lifetimeMillis).put("byte_limit", byteLimit));
        }
        return p;
    }

    /**
     * The second half of a start, on this relay's loop: pipes pinned if asked, the sockets in
     * epoll, the journal told, timers armed and each direction pumped once. A pair begun while the
     * relay is paused is registered (its events held) but moves nothing until {@link #resume}.
     * Returns false if it could not (then the call has its answer and the sockets are closed).
     */
    public boolean begin(Pair p) {
        if (settings.pinPipes()) {
            PipePool.Pipe p0 = pipes.acquire();
            PipePool.Pipe p1 = p0 == null ? null : pipes.acquire();
            if (p1 == null) {
                if (p0 != null) {
                    pipes.release(p0);
                }
                abort(p, warren.control.v1.Error.Code.RESOURCE_EXHAUSTED, "no pipes for a new pair ("
                        + pipes.open() + " open: splice.max_pipes or the fd limit)", 0);
                return false;
            }
            p.pipe[0] = p0;
            p.pipe[1] = p1;
        }
        try {
            register(p);
        } catch (NativeIoException e) {
            for (int d = 0; d < 2; d++) {
                if (p.pipe[d] != null) {
                    pipes.release(p.pipe[d]);
                    p.pipe[d] = null;
                }
            }
            abort(p, warren.control.v1.Error.Code.INTERNAL, "cannot start relaying: " + e.getMessage(), e.errno());
            return false;
        }
        active++;
        live.add(p);
        if (tracking) {
            link(p); // begun during a pre-copy: sent whole at the pause unless a later chunk copies it
        }
        if (journal != null && p.call.task() != null) {
            journal.started(p);
        }
        if (p.call != null) {
            p.call.sendAccepted(); // after the store: a crash from here on finds the pair there
        }
        armTimers(p);
        if (!paused) {
            pumpBoth(p);
        }
        return true;
    }

    /** A prepared pair that cannot begin: sockets handed back and closed, the call answered. */
    private void abort(Pair p, warren.control.v1.Error.Code code, String why, int errno) {
        if (p.call != null) {
            p.call.sendAccepted(); // as before: Accepted (held back until the store), then the failure
        }
        p.retired = true;
        placed.decrement();
        handBackSockets(p);
        Native.close(p.fd[0]);
        Native.close(p.fd[1]);
        p.call.fail(code, why, errno);
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
            return; // (a paused relay's group holds the events: they come at resume)
        }
        if ((events & (Native.EPOLLIN | Native.EPOLLRDHUP | Native.EPOLLHUP | Native.EPOLLERR)) != 0) {
            p.pump(side); // the direction that reads from this side
        }
        // the direction that writes to this side; writability alone matters only to a direction with
        // something to write (its reads come with their own EPOLLIN): a pump of an idle direction is a
        // wasted splice(2), and after an upgrade every adopted socket reports EPOLLOUT once
        if (!p.ended() && ((events & (Native.EPOLLHUP | Native.EPOLLERR)) != 0
                || ((events & Native.EPOLLOUT) != 0 && p.wantsToWrite(1 - side)))) {
            p.pump(1 - side);
        }
        // a TCP socket hung up (EPOLLHUP: closed both ways while this side never shut its writes: a
        // reset) with everything it sent passed on: nothing can be written to it any more, so the
        // other direction cannot finish. Its reset may have been reported before (to a process that
        // crashed before it could act: its read now says EOF), and with the other side idle the pair
        // would wait for its idle timeout. Not AF_UNIX: a stream socket whose peer closed reports
        // EPOLLHUP on a plain close, and the other side's EOF may be a moment behind (BOTH_EOF).
        if (!p.ended() && (events & Native.EPOLLHUP) != 0 && p.shut(side) && !p.shut(1 - side)
                && !p.wantsToWrite(1 - side) && !isUnix(p.fd[side])) {
            p.end(EndReasons.forErrno(Errno.EPIPE), Errno.EPIPE,
                    (side == Pair.A_TO_B ? "a" : "b") + ": hung up");
        }
        if (p.ended()) {
            retire(p);
        }
    }

    /** AF_UNIX (or no longer a socket we can ask): asked only on a hang-up. */
    private static boolean isUnix(int fd) {
        try {
            return Native.getsockoptInt(fd, Native.SOL_SOCKET, Native.SO_DOMAIN) == Native.AF_UNIX;
        } catch (NativeIoException e) {
            return true;
        }
    }

    /** When the relay last resumed (System.nanoTime; 0: never paused): idle time counts from there at most. */
    private long resumedAtNanos;

    private void checkIdle(Pair p) {
        if (p.retired) {
            return;
        }
        long idle = System.nanoTime() - Math.max(p.lastActiveNanos, resumedAtNanos); // a pause is not idleness
        if (idle >= p.idleTimeoutNanos) {
            finish(p, EndReason.IDLE_TIMEOUT, 0, "idle for " + idle / 1_000_000 + " ms");
        } else {
            p.idleTimer = loop.schedule((p.idleTimeoutNanos - idle) / 1_000_000 + 1, () -> checkIdle(p), group);
        }
    }

    /** Ends a pair for a reason from outside its sockets (timer, cancel, stop). */
    void finish(Pair p, EndReason reason, int errno, String detail) {
        if (p.retired) {
            return;
        }
        p.end(reason, errno, detail);
        if (paused) { // in the middle of a handoff: retired at resume, or (committed) ended by the successor's own rules
            endedWhilePaused.add(p);
            return;
        }
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
                    NO_PIPE.warn("task " + (p.call.task() == null ? "?" : p.call.task().number())
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
        if (settings.pinPipes()) {
            return; // held for the pair's life
        }
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
                ready(q, d);
            }
        }
    }

    /** Direction d of p has more to move than one wakeup's budget (or a pipe for it came back). */
    void ready(Pair p, int d) {
        if (p.markReady(d)) {
            ready.add(p);
        }
    }

    /**
     * The loop's duty: one more budget for each direction queued before this run; one that uses
     * it up again goes to the back for the next cycle. A paused relay pumps nothing (resume pumps
     * every pair). Returns true if directions are left for the next cycle.
     */
    private boolean runReady() {
        if (paused) {
            return false;
        }
        for (int n = ready.size(); n > 0; n--) {
            Pair p = ready.poll();
            int dirs = p.takeReady();
            if (p.retired) {
                continue;
            }
            for (int d = 0; d < 2 && !p.ended(); d++) {
                if ((dirs & (1 << d)) != 0) {
                    p.pump(d);
                }
            }
            if (p.ended()) {
                retire(p);
            }
        }
        return !ready.isEmpty();
    }

    void shutdownWrite(Pair p, int d) {
        int dst = p.fd[1 - d];
        if (Native.tryShutdown(dst, Native.SHUT_WR) < 0) {
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
        placed.decrement();
        live.remove(p);
        if (p.copyKey != 0) {
            endedCopies.add(p.copyKey); // the successor closes its copy at the pause
        } else if (tracking && !p.listed) {
            uncopiedUnlisted--;
        }
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
            if (left == 0 && !settings.pinPipes()) {
                pipes.release(pipe);
            } else {
                // a pinned pipe is never lent again: it is in systemd's fd store under this pair's
                // name until the control loop sends the removal, and systemd keeps one copy of a file
                // whatever the names (a duplicate fd is dropped, service_add_fd_store): the next
                // pair's entry would lack it, the old entry's removal would take it, and a crash
                // would then lose that pair ("fd 2 of 6 missing"; the soak's reset and stalled pairs)
                pipes.discard(pipe);
            }
            p.pipe[d] = null;
        }
        handBackSockets(p);
        TcpInfo ta = tcpInfo(p.fd[0]);
        TcpInfo tb = tcpInfo(p.fd[1]);
        java.time.Instant now = java.time.Instant.now();
        long endNanos = now.getEpochSecond() * 1_000_000_000L + now.getNano();
        EndReason reason = p.endReason;
        counters.increment("pairs.ended." + reason.name().toLowerCase(java.util.Locale.ROOT));
        counters.counter(BYTES_OUT).add(p.written[0]); // with the live pairs' counts at scrape time: sample()
        counters.counter(BYTES_IN).add(p.written[1]);
        Spliced.Builder s = Spliced.newBuilder().setFdA(0).setFdB(1).setBytesAToB(p.written[0])
                .setBytesBToA(p.written[1]).setStartUnixNanos(p.startUnixNanos).setEndUnixNanos(endNanos)
                .setReason(reason).setErrno(p.endErrno).setDetail(p.endDetail)
                .setAReadClosed(p.eof(Pair.A_TO_B)).setBReadClosed(p.eof(Pair.B_TO_A))
                .setAWriteShut(p.shut(Pair.B_TO_A)).setBWriteShut(p.shut(Pair.A_TO_B))
                .setUnflushedAToB(unflushed[0]).setUnflushedBToA(unflushed[1]).setCountsPartial(p.countsPartial);
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
        if (journal != null) {
            journal.ending(p);
        }
        p.ending.ended(p.call, Fd.adopt(p.fd[0]), Fd.adopt(p.fd[1]), s.build(), audit);
        if (journal != null) {
            journal.ended(p); // after the answer is queued: a crash in between recovers the pair, never loses it
        }
    }

    /**
     * The sockets leave epoll and get back what the relay changed: file status flags and
     * SO_LINGER (only where the relay set it). Errors are ignored: a reset socket still takes both.
     */
    private void handBackSockets(Pair p) {
        for (int side = 0; side < 2; side++) {
            loop.unregister(p.slot[side]);
            p.slot[side] = -1;
            Native.tryFcntl(p.fd[side], Native.F_SETFL, p.originalFlags[side]);
            if (p.originalLinger[side] != null) {
                p.originalLinger[side].applyQuietly(p.fd[side]);
            }
        }
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
     * {@code inPipe = read - written} with those bytes sitting in the pair's pipe. The relay's
     * {@link EventLoop.Group} is paused: sockets stay in epoll (unregistering thousands of them was
     * half the old process's pause) but their events are held, timers due are held, the ready
     * list waits; nothing is read or written until {@link #resume}. Pairs begun while paused
     * begin paused. O(1). Loop thread only. Returns the number of live pairs.
     */
    public int pause() {
        paused = true;
        group.pause();
        return live.size();
    }

    /**
     * Undoes {@link #pause} (the handoff did not happen), or starts pairs adopted while paused:
     * the events held meanwhile are delivered (each pair that saw one is pumped), held timers come
     * back (a lifetime or idle timeout that fell due fires now), adopted pairs are armed, pairs
     * ended from outside meanwhile are retired, the ready list runs again. Loop thread only.
     */
    public void resume() throws NativeIoException {
        forgetCopy(); // a failed handoff's pre-copy, paused or not yet (a successor's pairs have their calls by now)
        if (!paused) {
            return;
        }
        paused = false;
        resumedAtNanos = System.nanoTime();
        group.resume();
        java.util.List<Pair> adopted = new java.util.ArrayList<>(unarmed);
        unarmed.clear();
        for (Pair p : adopted) {
            if (!p.retired) {
                arm(p);
            }
        }
        java.util.List<Pair> ended = new java.util.ArrayList<>(endedWhilePaused);
        endedWhilePaused.clear();
        for (Pair p : ended) {
            retire(p);
        }
    }

    /**
     * Registers a (paused or adopted) pair's sockets and arms its timers. Adding an fd to epoll
     * reports its readiness at once (also edge-triggered), so a direction is pumped here only if
     * it has bytes in flight or an end of stream not yet passed on: with thousands of pairs after
     * an upgrade, the rest would be two wasted splice(2) calls each.
     */
    private void arm(Pair p) throws NativeIoException {
        if (p.slot[0] < 0) { // pre-copied pairs were registered (paused) and their timers armed before the pause
            register(p);
            armTimers(p);
        }
        for (int d = 0; d < 2; d++) {
            if (p.read[d] != p.written[d] || (p.eof(d) && !p.shut(d))) {
                p.pump(d);
            }
        }
        if (p.ended()) {
            retire(p);
        }
    }

    /** Both sockets in epoll, edge-triggered, with the pair and side in the handler. */
    private void register(Pair p) throws NativeIoException {
        for (int side = 0; side < 2; side++) {
            final int s = side;
            p.slot[side] = loop.register(p.fd[side],
                    Native.EPOLLIN | Native.EPOLLOUT | Native.EPOLLRDHUP | Native.EPOLLET,
                    events -> onSocketEvents(p, s, events), group);
        }
    }

    /** One pump per direction (edges that came before registration are not reported again). */
    private void pumpBoth(Pair p) {
        p.pump(Pair.A_TO_B);
        p.pump(Pair.B_TO_A);
        if (p.ended()) {
            retire(p);
        }
    }

    private void armTimers(Pair p) {
        p.lastActiveNanos = System.nanoTime();
        if (p.idleTimeoutNanos > 0) {
            p.idleTimer = loop.schedule(p.idleTimeoutNanos / 1_000_000, () -> checkIdle(p), group);
        }
        if (p.lifetimeMillis > 0) {
            long left = Math.max(0, p.lifetimeMillis - (System.nanoTime() - p.startNanos) / 1_000_000);
            p.lifetimeTimer = loop.schedule(left, () -> finish(p, EndReason.LIFETIME, 0,
                    "lifetime " + p.lifetimeMillis + " ms reached"), group);
        }
    }

    /**
     * The paused relay's pairs as a handoff item: a {@code warren.handoff.v1.RelayState} and, per
     * pair, its two sockets and the pipes that hold bytes in flight. The fds are borrowed (still
     * the pairs'): after a commit call {@link #abandon}, after an abort {@link #resume}.
     * {@code callRef} names each pair's control request for the successor. Loop thread only.
     */
    public warren.daemon.handoff.HandoffItem export(String name, java.util.function.ToLongFunction<Call> callRef) {
        if (!paused) {
            throw new IllegalStateException("export needs a paused relay");
        }
        warren.handoff.v1.RelayState.Builder state = warren.handoff.v1.RelayState.newBuilder()
                .setFormat(RelayStateCodec.FORMAT);
        java.util.List<Fd> fds = new java.util.ArrayList<>();
        long now = System.nanoTime();
        long visits = 0;
        if (!tracking) { // no pre-copy: every pair, whole
            for (Pair p : live) {
                visits++;
                state.addPairs(RelayStateCodec.pair(p, fds, now, settings.pinPipes())
                        .setCallRef(callRef.applyAsLong(p.call)));
            }
        } else { // the delta: only what the changed list names, O(changed), idle copied pairs cost nothing
            for (Pair p = changedHead; p != null; p = p.nextChanged) {
                visits++;
                if (p.retired) {
                    continue; // a copied one is in endedCopies
                }
                if (p.copyKey == 0) { // begun since its relay's copy: whole
                    state.addPairs(RelayStateCodec.pair(p, fds, now, settings.pinPipes())
                            .setCallRef(callRef.applyAsLong(p.call)));
                } else { // moved since its copy, or holds bytes in a lent pipe
                    state.addPairs(RelayStateCodec.update(p, fds, settings.pinPipes()));
                }
            }
            if (uncopiedUnlisted > 0) { // paused before the pre-copy reached every pair: those, whole
                for (Pair p : live) {
                    visits++;
                    if (p.copyKey == 0 && !p.listed) {
                        state.addPairs(RelayStateCodec.pair(p, fds, now, settings.pinPipes())
                                .setCallRef(callRef.applyAsLong(p.call)));
                    }
                }
            }
            visits += endedCopies.size();
            state.addAllEnded(endedCopies);
        }
        pauseVisits = visits;
        // the Fd handles are views for sending only: the pairs still own the numbers; never close them
        return new warren.daemon.handoff.HandoffItem(name, RelayStateCodec.stamped(state).build().toByteArray(), fds);
    }

    /**
     * Pre-copy (old side, while the relay runs): the next pairs not copied yet, at most
     * {@code maxFds / 2} of them, as an item whose fds are duplicates of their sockets owned by the
     * item ({@link RelayStateCodec#preCopy}); null when every live pair is copied. Each copied pair
     * gets a key; from then on its pumps mark it dirty and its retirement is noted, so that
     * {@link #export} at the pause sends only the pairs begun since (whole), the copied pairs that
     * moved or hold bytes (updates) and the keys of those that ended. Loop thread only.
     */
    public warren.daemon.handoff.HandoffItem preCopy(String name, java.util.function.ToLongFunction<Call> taskRef,
            int maxFds) throws NativeIoException {
        warren.handoff.v1.RelayState.Builder state = warren.handoff.v1.RelayState.newBuilder()
                .setFormat(RelayStateCodec.FORMAT);
        java.util.List<Fd> fds = new java.util.ArrayList<>();
        long now = System.nanoTime();
        if (!tracking) { // the first chunk: from now on pairs are listed as they change
            tracking = true;
            changedHead = null;
            for (Pair p : live) {
                p.listed = false;
                p.nextChanged = null;
            }
            uncopiedUnlisted = live.size();
        }
        int perPair = settings.pinPipes() ? 6 : 2; // pinned pipes go with their sockets
        try {
            for (Pair p : live) {
                if (!fds.isEmpty() && fds.size() + perPair > maxFds) {
                    break; // (one pair at least: an empty chunk means every pair is copied)
                }
                if (p.copyKey != 0) {
                    continue;
                }
                warren.handoff.v1.RelayPair.Builder rp = RelayStateCodec.preCopy(p, fds, now, settings.pinPipes());
                p.copyKey = ((long) index << 40) | ++copySeq;
                if (!p.listed) { // there when tracking began, unchanged since
                    uncopiedUnlisted--;
                    if ((p.pipe[0] != null && (p.pipesCopied & 1) == 0) || (p.pipe[1] != null && (p.pipesCopied & 2) == 0)) {
                        link(p); // bytes in a lent pipe: an update brings it at the pause
                    }
                } // a listed pair (begun or pumped since tracking began) gets an update at the pause
                state.addPairs(rp.setKey(p.copyKey).setCallRef(taskRef.applyAsLong(p.call)));
            }
        } catch (NativeIoException | RuntimeException e) {
            Fd.closeAll(fds); // the copy is given up (preCopyAborted): the keys are forgotten then
            throw e;
        }
        return fds.isEmpty() ? null
                : new warren.daemon.handoff.HandoffItem(name, RelayStateCodec.stamped(state).build().toByteArray(), fds);
    }

    /** Pairs given a key by {@link #preCopy} (for tests). */
    public int copied() {
        int n = 0;
        for (Pair p : live) {
            n += p.copyKey != 0 ? 1 : 0;
        }
        return n;
    }

    /**
     * The pre-copy was given up (or the handoff failed after it): every pair forgets its key and
     * nothing is tracked. Nothing to do unless this relay pre-copied (a successor's pre-copied
     * pairs carry their keys in {@link Pair#adoptKey}).
     */
    public void forgetCopy() {
        if (!tracking) {
            return;
        }
        tracking = false;
        for (Pair p : live) {
            p.copyKey = 0;
            p.pipesCopied = 0;
            p.listed = true;
            p.nextChanged = null;
        }
        changedHead = null;
        uncopiedUnlisted = 0;
        endedCopies.clear();
    }

    /** {@code p} joins the changed list (its first pump since tracking began). Loop thread, hot path's cold branch. */
    void changed(Pair p) {
        if (p.copyKey == 0) {
            uncopiedUnlisted--; // there when tracking began, not copied yet: sent whole unless copied later
        }
        link(p);
    }

    private void link(Pair p) {
        p.listed = true;
        p.nextChanged = changedHead;
        changedHead = p;
    }

    /** Pairs, ended keys and copies the last {@link #export} visited (the pause's work; for tests and logs). */
    public long pauseVisits() {
        return pauseVisits;
    }

    /** Pairs, ended keys and copies the last {@link #adopt} + {@link #adoptCopies} visited (successor). */
    public long adoptVisits() {
        return adoptVisits;
    }

    /**
     * Pre-copy, in the successor before its loop runs (the relay paused): builds the pairs of a
     * pre-copy chunk ({@code fds} taken as used), registers their sockets in the paused group (so
     * nothing of that is left for the pause; readiness reported meanwhile is held, and an idle
     * socket's EPOLLOUT costs nothing at the resume), keeps them by key without a call: the delta
     * ({@link #adopt}) then updates or ends them, {@link #adoptCopies} gives them their calls.
     * Nothing is taken from a chunk that fails its check. Main thread, loop not running.
     */
    public int preAdopt(warren.handoff.v1.RelayState state, java.util.List<Fd> fds) throws NativeIoException {
        if (!paused) {
            throw new IllegalStateException("pre-copied pairs go to a paused relay");
        }
        RelayStateCodec.check(state, fds, true);
        for (warren.handoff.v1.RelayPair rp : state.getPairsList()) {
            if (copies.containsKey(rp.getKey())) {
                throw new IllegalArgumentException("pair key " + rp.getKey() + " pre-copied twice");
            }
        }
        long now = System.nanoTime();
        for (warren.handoff.v1.RelayPair rp : state.getPairsList()) {
            Pair p = RelayStateCodec.read(this, pipes, rp, fds, ref -> null, now);
            p.adoptKey = rp.getKey();
            p.copyCallRef = rp.getCallRef();
            copies.put(p.adoptKey, p);
            if (journal != null) {
                journal.adopted(p);
            }
            active++;
            placed.increment();
            live.add(p); // from here abandon() closes it
            unattached.add(p);
            if (p.wantsToWrite(0) || p.wantsToWrite(1)) {
                moving.add(p); // armed (pumped) at the resume; the others were registered here and need nothing
            }
            register(p);
            armTimers(p); // held by the paused group; an idle check counts from the resume
        }
        // each socket just added reported EPOLLOUT: taken now, while the old process still serves,
        // instead of in the first cycle after the commit (a pair with bytes to write is in moving)
        group.dropWriteOnlyWhilePaused();
        preAdoptDrained += loop.drainWhileStopped(4 + 2 * state.getPairsCount() / 128);
        return state.getPairsCount();
    }

    private long preAdoptDrained;

    /** Readiness events the pre-copy took before the loop ran (successor; for tests and logs). */
    public long preAdoptDrained() {
        return preAdoptDrained;
    }

    /**
     * Pre-copy, successor, after {@link #preAdopt} (still before the pause): each pre-copied pair
     * whose call was pre-copied too ({@code calls} gives it, or null) gets it, its ending, and its
     * task ({@code attach}), so the pause touches only the pairs whose calls came later or changed.
     * Returns the pairs attached.
     */
    public int preAttach(java.util.function.LongFunction<Call> calls, Ending ending,
            java.util.function.BiConsumer<Call, warren.daemon.task.Task> attach) {
        int left = 0;
        int n = 0;
        for (int i = 0; i < unattached.size(); i++) {
            Pair p = unattached.get(i);
            Call c = p.retired ? null : calls.apply(p.copyCallRef);
            if (c == null) {
                unattached.set(left++, p);
                continue;
            }
            p.call = c;
            p.ending = ending;
            attach.accept(c, p);
            n++;
        }
        unattached.subList(left, unattached.size()).clear();
        return n;
    }

    /** Pre-copied pairs here still without their call (successor; for tests). */
    public int unattached() {
        return unattached.size();
    }

    /** True if the pre-copied pair {@code key} lives here (successor, until {@link #adoptCopies}). */
    public boolean hasCopy(long key) {
        return copies.containsKey(key);
    }

    /**
     * Successor, last step of adoption: every pre-copied pair left (not ended by a delta) gets its
     * call from {@code calls} and its ending; refused (IllegalArgumentException, the relay keeps
     * and {@link #abandon} closes them) if one has bytes in flight no update gave a pipe for.
     */
    public java.util.List<Pair> adoptCopies(java.util.function.LongFunction<Call> calls, Ending ending) {
        long visits = 0;
        for (Pair p : moving) { // only those with something to write: the rest is as its copy left it
            visits++;
            for (int d = 0; d < 2; d++) {
                if (p.read[d] != p.written[d] && p.pipe[d] == null) {
                    throw new IllegalArgumentException("pre-copied pair " + p.adoptKey + " has "
                            + (p.read[d] - p.written[d]) + " bytes in flight and no update brought their pipe");
                }
            }
        }
        java.util.List<Pair> adopted = new java.util.ArrayList<>(unattached.size());
        for (Pair p : unattached) { // those preAttach could not give a call (or all, without a preAttach)
            visits++;
            if (p.retired) {
                continue;
            }
            p.call = calls.apply(p.copyCallRef);
            p.ending = ending;
            adopted.add(p);
        }
        unattached.clear();
        unarmed.addAll(moving); // pumped at the resume
        moving = java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>());
        copies = new java.util.HashMap<>(); // dropped whole: no pass over the pairs
        adoptVisits += visits;
        return adopted;
    }

    /** A successor's pre-copied pair that ended before the pause: its copies closed, forgotten. */
    private void dropCopy(Pair p) {
        if (p.call != null && !p.call.isAnswered()) { // attached in the pre-copy: its call must be gone too
            throw new IllegalArgumentException("pre-copied pair " + p.adoptKey + " ended, but its request "
                    + p.call.id() + " is still pending in the state handed over");
        }
        moving.remove(p);
        p.retired = true; // resume skips it in unarmed, adoptCopies in unattached
        if (journal != null) {
            journal.copyDropped(p);
        }
        if (p.idleTimer != null) {
            p.idleTimer.cancel();
        }
        if (p.lifetimeTimer != null) {
            p.lifetimeTimer.cancel();
        }
        active--;
        placed.decrement();
        live.remove(p);
        for (int side = 0; side < 2; side++) {
            loop.unregister(p.slot[side]);
            p.slot[side] = -1;
            Native.close(p.fd[side]);
        }
        for (int d = 0; d < 2; d++) {
            if (p.pipe[d] != null) {
                pipes.discard(p.pipe[d]);
                p.pipe[d] = null;
            }
        }
    }

    /**
     * After a committed handoff: forgets every pair without touching its sockets (no shutdown, no
     * answer, no audit end line; the successor carries on), closing only this process's copies of
     * their fds and pipes. Loop thread only. Returns the number abandoned.
     */
    public int abandon() {
        int n = live.size();
        for (Pair p : live) {
            p.retired = true;
            for (int side = 0; side < 2; side++) {
                loop.unregister(p.slot[side]);
                Native.close(p.fd[side]);
            }
            for (int d = 0; d < 2; d++) {
                if (p.pipe[d] != null) {
                    pipes.forget(p.pipe[d]);
                    p.pipe[d] = null;
                }
            }
        }
        live.clear();
        placed.add(-active);
        active = 0;
        pipeWaiters.clear();
        ready.clear();
        unarmed.clear();
        copies.clear();
        unattached.clear();
        moving.clear();
        endedCopies.clear();
        tracking = false;
        changedHead = null;
        uncopiedUnlisted = 0;
        endedWhilePaused.clear(); // their ends (cancel, stop) did not happen here; the successor relays them on
        pipes.closeAll();
        paused = false;
        group.resume(); // nothing is registered any more: only dead timers come back, and fire as no-ops
        return n;
    }

    /**
     * Takes over pairs handed in by an upgrade: {@code fds} are the item's fds (taken: on return
     * the relay owns the ones its pairs use and has closed none), {@code calls} turns each
     * {@code call_ref} back into the control request to answer, {@code ending} says how a pair's
     * end is answered. The pairs resume at once. After a pre-copy ({@link #preAdopt}) the state is
     * the delta: its ended keys close their copies, its updates refresh theirs (the returned list
     * holds the pairs begun since only; {@link #adoptCopies} returns the pre-copied ones). Loop
     * thread only (or before the loop runs).
     */
    public java.util.List<Pair> adopt(warren.handoff.v1.RelayState state, java.util.List<Fd> fds,
            java.util.function.LongFunction<Call> calls, Ending ending) throws NativeIoException {
        RelayStateCodec.check(state, fds);
        warren.daemon.handoff.DeltaCheck delta = new warren.daemon.handoff.DeltaCheck(copies::containsKey,
                k -> "pair key " + k);
        for (long key : state.getEndedList()) {
            delta.ended(key);
        }
        for (warren.handoff.v1.RelayPair rp : state.getPairsList()) {
            if (rp.getUpdate()) {
                delta.updated(rp.getKey());
            }
        }
        for (long key : state.getEndedList()) {
            dropCopy(copies.remove(key));
        }
        adoptVisits += state.getEndedCount() + state.getPairsCount();
        java.util.List<Pair> adopted = new java.util.ArrayList<>(state.getPairsCount());
        long now = System.nanoTime();
        for (warren.handoff.v1.RelayPair rp : state.getPairsList()) {
            if (rp.getUpdate()) {
                Pair c = copies.get(rp.getKey());
                RelayStateCodec.applyUpdate(c, pipes, rp, fds);
                if (c.wantsToWrite(0) || c.wantsToWrite(1)) {
                    moving.add(c);
                } else {
                    moving.remove(c);
                }
                continue;
            }
            Pair p = RelayStateCodec.read(this, pipes, rp, fds, calls, now);
            p.ending = ending;
            if (journal != null) {
                journal.adopted(p);
            }
            active++;
            placed.increment();
            live.add(p);
            adopted.add(p);
        }
        for (Pair p : adopted) {
            if (paused) {
                unarmed.add(p); // armed by resume
                continue;
            }
            arm(p);
        }
        return adopted;
    }

    /** {@link RelayStateCodec#check}, for callers of before the codec. */
    public static void check(warren.handoff.v1.RelayState state, java.util.List<Fd> fds) {
        RelayStateCodec.check(state, fds);
    }

    /** True if every pair holds its pipes for its whole life (fd store: they are stored with it). */
    boolean pinsPipes() {
        return settings.pinPipes();
    }

    public boolean paused() {
        return paused;
    }

    /** Closes pooled pipes and leaves the loop (at exit). */
    public void close() {
        pipes.closeAll();
        loop.removeDuty(readyDuty);
    }
}
