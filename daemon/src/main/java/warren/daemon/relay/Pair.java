package warren.daemon.relay;

import warren.control.v1.EndReason;
import warren.daemon.control.Call;
import warren.daemon.loop.EventLoop;
import warren.daemon.task.Task;
import warren.fdpass.libc.Native;

/**
 * One relayed pair of sockets, a and b, and its two directions (passt's tcp_splice_conn: per-side
 * arrays). Direction {@code d} reads from {@code fd[d]} and writes to {@code fd[1 - d]}:
 * {@link #A_TO_B} = 0, {@link #B_TO_A} = 1.
 *
 * <pre>
 * per direction:  OPEN --read 0 (EOF)--> EOF_SEEN --pipe drained, shutdown(dst, SHUT_WR)--> DONE
 * pair:           ACTIVE --both directions DONE--> ended BOTH_EOF
 *                 ACTIVE --splice error / idle / lifetime / byte limit / cancel / stop--> ended
 * </pre>
 * Invariants: {@code inPipe[d] = read[d] - written[d]}; a direction holds a pipe only while
 * {@code inPipe[d] > 0} or a read is under way; shutdown(SHUT_WR) only when read == written.
 * Handlers only mark ({@link #endReason}); {@link Relay#retire} tears down once.
 */
public final class Pair implements Task, warren.daemon.trace.Traceable {
    static final int A_TO_B = 0;
    static final int B_TO_A = 1;

    private static final int EOF = 1;           // per direction: read returned 0
    private static final int SHUT = 4;          // per direction: shutdown(dst, SHUT_WR) done
    private static final int WAITING_PIPE = 16; // per direction: queued for a pipe
    private static final int READY = 64;        // per direction: on the relay's ready list (budget used up)

    /**
     * Splice rounds (socket -> pipe -> socket) one pump may make per wakeup (Netty's
     * writeSpinCount, Aeron's fragment limit). At 256 KiB pipes that is up to 4 MiB; a direction
     * that still moves bytes then goes on the relay's ready list and gets its next slice after the
     * loop has served everyone else once.
     */
    static final int ROUNDS_PER_WAKEUP = 16;

    final Relay relay;
    /** The request this pair answers; a successor's pre-copied pair gets it with the delta. */
    Call call;
    /** Pre-copy, old side: the key this pair was copied under (0: not copied). */
    long copyKey;
    /** Pre-copy, old side: bit d set if direction d's (pinned) pipe was copied with the sockets. */
    int pipesCopied;
    /** The fd store journal's removal of this pair's entry rides on its answer (FdStoreJournal#ending). */
    boolean removalOnAnswer;
    /** systemd's fd store: the pair book's slot its entry is named by (PairBook), or -1 (p&lt;TASK&gt;, or none). */
    int storeSlot = -1;
    /** Pre-copy, successor: the key it was pre-copied under (0: not a pre-copied pair). */
    long adoptKey;
    /** Pre-copy, successor: the call ref it was copied with. */
    long copyCallRef;
    /**
     * Pre-copy, old side: on its relay's changed list (or not tracked: every pair outside a
     * pre-copy, and those begun during one, which are listed at once). False only for a tracked
     * pair not listed yet: its first pump links it ({@link Relay#changed}), one field check on the
     * hot path, no allocation.
     */
    boolean listed = true;
    /** Pre-copy, old side: the next pair on the relay's changed list (intrusive: no node allocated). */
    Pair nextChanged;
    Relay.Ending ending;
    /** Raw fds, owned by the pair from start to retire (detached from their Fd handles). */
    final int[] fd = new int[2];
    final int[] originalFlags = new int[2];
    /** SO_LINGER as handed in, restored at hand-back; {on, 0} while held (null: not changed yet). */
    final warren.fdpass.net.Linger[] originalLinger = new warren.fdpass.net.Linger[2];
    final int[] slot = {-1, -1};
    final PipePool.Pipe[] pipe = new PipePool.Pipe[2];
    final long[] read = new long[2];
    final long[] written = new long[2];
    private int flags;
    final long idleTimeoutNanos;
    final long lifetimeMillis;
    final long byteLimit;
    final long startUnixNanos;
    long startNanos = System.nanoTime();
    String aRemote; // peers, kept for the end line (a reset socket has none any more)
    String bRemote;
    long lastActiveNanos;
    EventLoop.Timer idleTimer;
    EventLoop.Timer lifetimeTimer;
    EndReason endReason;
    int endErrno;
    String endDetail = "";
    boolean retired;

    Pair(Relay relay, Call call, int a, int b, long idleTimeoutMillis, long lifetimeMillis, long byteLimit) {
        this(relay, call, a, b, idleTimeoutMillis, lifetimeMillis, byteLimit, 0);
    }

    /** With the start time of a pair handed in by an upgrade ({@code startUnixNanos} != 0). */
    Pair(Relay relay, Call call, int a, int b, long idleTimeoutMillis, long lifetimeMillis, long byteLimit,
            long startUnixNanos) {
        this.relay = relay;
        this.call = call;
        this.fd[0] = a;
        this.fd[1] = b;
        this.idleTimeoutNanos = idleTimeoutMillis * 1_000_000L;
        this.lifetimeMillis = lifetimeMillis;
        this.byteLimit = byteLimit;
        java.time.Instant now = java.time.Instant.now();
        this.startUnixNanos = startUnixNanos != 0 ? startUnixNanos : now.getEpochSecond() * 1_000_000_000L + now.getNano();
        this.lastActiveNanos = System.nanoTime();
    }

    /** The loop this pair lives on (its relay's). */
    @Override
    public EventLoop loop() {
        return relay.loop();
    }

    /** The control request this pair answers when it ends. */
    public Call call() {
        return call;
    }

    boolean eof(int d) {
        return (flags & (EOF << d)) != 0;
    }

    boolean shut(int d) {
        return (flags & (SHUT << d)) != 0;
    }

    /** Direction d has something to write (bytes in its pipe, or an end of stream not passed on). */
    boolean wantsToWrite(int d) {
        return read[d] != written[d] || (eof(d) && !shut(d));
    }

    boolean waitingForPipe(int d) {
        return (flags & (WAITING_PIPE << d)) != 0;
    }

    int flags() {
        return flags;
    }

    /** Recovered after a crash: its counts start at the restart. */
    boolean countsPartial;

    /**
     * List: bytes delivered each way (out = a to b) and the two connections as 5-tuples (a: its
     * peer -> its local address, b: local -> peer; none for AF_UNIX). Loop thread, where the
     * counts are written; getsockname/getpeername are control-path syscalls.
     */
    @Override
    public void traffic(warren.control.v1.TaskInfo.Builder info) {
        info.setBytesOut(written[A_TO_B]).setBytesIn(written[B_TO_A]);
        if (retired) {
            return;
        }
        try {
            java.net.InetSocketAddress aLocal = Native.getsockname(fd[0]);
            java.net.InetSocketAddress aPeer = Native.getpeername(fd[0]);
            java.net.InetSocketAddress bLocal = Native.getsockname(fd[1]);
            java.net.InetSocketAddress bPeer = Native.getpeername(fd[1]);
            if (aLocal != null && aPeer != null) {
                info.addTuples(tcpTuple(aPeer, aLocal));
            }
            if (bLocal != null && bPeer != null) {
                info.addTuples(tcpTuple(bLocal, bPeer));
            }
        } catch (warren.fdpass.libc.NativeIoException e) {
            // a socket reset under us has no peer any more: the counts are all List gets
        }
    }

    private static warren.control.v1.FiveTuple tcpTuple(java.net.InetSocketAddress src, java.net.InetSocketAddress dst) {
        return warren.control.v1.FiveTuple.newBuilder().setProtocol(6)
                .setSrcIp(com.google.protobuf.ByteString.copyFrom(src.getAddress().getAddress())).setSrcPort(src.getPort())
                .setDstIp(com.google.protobuf.ByteString.copyFrom(dst.getAddress().getAddress())).setDstPort(dst.getPort())
                .build();
    }

    /** The pair's task number (0 before its task exists). */
    public long taskNumber() {
        return call.task() == null ? 0 : call.task().number();
    }

    void restoreFlags(int f) {
        flags = f & (EOF | EOF << 1 | SHUT | SHUT << 1); // never WAITING_PIPE or READY: the new relay re-queues
    }

    void setShut(int d) {
        flags |= SHUT << d;
    }

    /**
     * Marks direction d ready (its pump used up its budget, or its pipe came). Returns true if the
     * pair had no direction marked, i.e. it is not on the relay's ready list yet.
     */
    boolean markReady(int d) {
        boolean wasListed = (flags & (READY | READY << 1)) != 0;
        flags |= READY << d;
        return !wasListed;
    }

    /** The directions marked ready (bit d), clearing the marks. */
    int takeReady() {
        int r = (flags >> 6) & 3;
        flags &= ~(READY | READY << 1);
        return r;
    }

    void setWaitingForPipe(int d, boolean on) {
        flags = on ? flags | (WAITING_PIPE << d) : flags & ~(WAITING_PIPE << d);
    }

    long total() {
        return read[0] + read[1];
    }

    boolean ended() {
        return endReason != null;
    }

    void end(EndReason reason, int errno, String detail) {
        if (endReason == null) {
            endReason = reason;
            endErrno = errno;
            endDetail = detail;
        }
    }

    /**
     * Moves bytes in direction {@code d} until the source is empty, the destination is full, the
     * pair must end, or {@link #ROUNDS_PER_WAKEUP} rounds have moved bytes: then the direction is
     * handed to the relay's ready list (edge-triggered epoll will not report the bytes still
     * waiting) and pumped again in the next loop cycle. The hot path: two splice(2) calls per
     * chunk, no allocation.
     */
    void pump(int d) {
        if (!listed) {
            relay.changed(this); // the first pump since its copy: joins the changed list, once
        }
        final int src = fd[d];
        final int dst = fd[1 - d];
        int rounds = 0;
        while (endReason == null) {
            boolean progressed = false;
            PipePool.Pipe p = pipe[d];
            if (!eof(d)) {
                if (p == null) {
                    p = relay.lendPipe(this, d);
                    if (p == null) {
                        return; // queued: Relay pumps us again when a pipe comes back
                    }
                }
                long room = p.size - (read[d] - written[d]);
                if (byteLimit > 0) {
                    room = Math.min(room, byteLimit - total());
                }
                if (room > 0) {
                    long n = Native.splice(src, p.w, room, Native.SPLICE_F_MOVE | Native.SPLICE_F_NONBLOCK);
                    if (n > 0) {
                        read[d] += n;
                        progressed = true;
                    } else if (n == 0) {
                        flags |= EOF << d;
                        progressed = true;
                    } else if (n != Native.WOULD_BLOCK) {
                        end(EndReasons.forErrno((int) -n), (int) -n, (d == A_TO_B ? "a" : "b") + ": read");
                        return;
                    }
                } else if (byteLimit > 0 && total() >= byteLimit && read[d] == written[d]) {
                    end(EndReason.BYTE_LIMIT, 0, "byte limit " + byteLimit + " reached");
                    return;
                }
            }
            long inPipe = read[d] - written[d];
            if (inPipe > 0) {
                int flags = Native.SPLICE_F_MOVE | Native.SPLICE_F_NONBLOCK
                        | (!eof(d) && inPipe >= p.size ? Native.SPLICE_F_MORE : 0);
                long m = Native.splice(p.r, dst, inPipe, flags);
                if (m > 0) {
                    written[d] += m;
                    progressed = true;
                } else if (m != Native.WOULD_BLOCK) {
                    end(EndReasons.forErrno((int) -m), (int) -m, (d == A_TO_B ? "b" : "a") + ": write");
                    return;
                }
            }
            if (read[d] == written[d]) {
                if (p != null) {
                    relay.returnPipe(this, d);
                }
                if (eof(d) && !shut(d)) {
                    relay.shutdownWrite(this, d);
                    if (shut(0) && shut(1)) {
                        end(EndReason.BOTH_EOF, 0, "");
                        return;
                    }
                }
                if (byteLimit > 0 && total() >= byteLimit) {
                    end(EndReason.BYTE_LIMIT, 0, "byte limit " + byteLimit + " reached");
                    return;
                }
            }
            if (!progressed) {
                return;
            }
            lastActiveNanos = System.nanoTime();
            if (++rounds == ROUNDS_PER_WAKEUP) {
                relay.ready(this, d);
                return;
            }
        }
    }

    /** Ends the pair from outside (any thread), e.g. when the task that owns it is cancelled. */
    public void end(EndReason reason, String detail) {
        relay.loop().execute(() -> relay.finish(this, reason, 0, detail));
    }

    @Override
    public void cancel() {
        relay.loop().execute(() -> relay.finish(this, EndReason.CANCELLED, 0, "cancelled by request"));
    }

    @Override
    public void stop() {
        relay.loop().execute(() -> relay.finish(this, EndReason.SHUTDOWN, 0, "daemon stopping"));
    }

    /** A trace of a pair streams its byte counts (the bytes themselves stay in the kernel's pipes). */
    @Override
    public boolean tracesPackets() {
        return false;
    }

    @Override
    public String startTrace(warren.daemon.trace.TraceRing ring) {
        return null;
    }

    @Override
    public void stopTrace(warren.daemon.trace.TraceRing ring) {
    }

    /** Bytes written to the other side so far, as {@code Spliced} reports them at the end. */
    @Override
    public void byteCounts(long[] out) {
        out[0] = written[A_TO_B];
        out[1] = written[B_TO_A];
    }

    @Override
    public String state() {
        if (eof(0) && eof(1)) {
            return "closing";
        }
        if (eof(0) || eof(1)) {
            return "half-closed";
        }
        return pipe[0] != null || pipe[1] != null ? "moving" : "idle";
    }
}
