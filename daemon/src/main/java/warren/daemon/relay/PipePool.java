package warren.daemon.relay;

import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * Pipes for splice(2), lent to a pair's direction only while it has bytes in flight and taken
 * back as soon as the pipe is empty (HAProxy's pipe pool). An idle pair holds no pipe, so
 * 10,000 idle pairs cost 20,000 socket fds and no pipes. Up to {@code keep} empty pipes stay
 * open for reuse; at most {@code max} are open at once. Loop thread only (but {@link #openShared}); no allocation
 * once a pipe exists.
 */
final class PipePool {
    /** One pipe: its read and write ends, and the size the kernel gave it. */
    static final class Pipe {
        final int r;
        final int w;
        final int size;

        Pipe(int r, int w, int size) {
            this.r = r;
            this.w = w;
            this.size = size;
        }
    }

    private final Pipe[] free;
    private int freeCount;
    private int open;
    /** {@code open} for other loops (the control loop's fd accounting); changes only with a pipe's life. */
    private final java.util.concurrent.atomic.LongAdder openShared = new java.util.concurrent.atomic.LongAdder();
    private final int max;
    private final int wantSize;
    private long failures;

    PipePool(int keep, int max, int size) {
        this.free = new Pipe[Math.max(1, keep)];
        this.max = max;
        this.wantSize = size;
    }

    /** A pipe, or null if none can be had now (max reached, or the fd limit). */
    Pipe acquire() {
        if (freeCount > 0) {
            Pipe p = free[--freeCount];
            free[freeCount] = null;
            return p;
        }
        if (open >= max) {
            return null;
        }
        int[] fds;
        try {
            fds = Native.pipe2(Native.O_NONBLOCK | Native.O_CLOEXEC);
        } catch (NativeIoException e) {
            failures++;
            return null;
        }
        int size;
        if (Native.tryFcntl(fds[1], Native.F_SETPIPE_SZ, wantSize) >= 0) {
            size = Native.tryFcntl(fds[1], Native.F_GETPIPE_SZ, 0);
        } else {
            // EPERM above pipe-max-size or the per-user page budget: keep the default
            int e = Native.errno();
            size = Native.tryFcntl(fds[1], Native.F_GETPIPE_SZ, 0);
            if (e != Errno.EPERM && e != Errno.EINVAL) {
                failures++;
            }
        }
        open++;
        openShared.increment();
        return new Pipe(fds[0], fds[1], size);
    }

    /** Takes over a pipe handed in by an upgrade (it may hold bytes); counts as open. */
    Pipe adopt(int r, int w, int size) {
        open++;
        openShared.increment();
        return new Pipe(r, w, size);
    }

    /** Forgets a pipe whose fds were handed to a successor (closes only our copies). */
    void forget(Pipe p) {
        close(p);
    }

    /** Takes back an empty pipe. */
    void release(Pipe p) {
        if (freeCount < free.length) {
            free[freeCount++] = p;
        } else {
            close(p);
        }
    }

    /** Closes a pipe that may still hold bytes (a pair ending abnormally). */
    void discard(Pipe p) {
        close(p);
    }

    private void close(Pipe p) {
        Native.close(p.r);
        Native.close(p.w);
        open--;
        openShared.decrement();
    }

    int open() {
        return open;
    }

    /** Open pipes, from any thread (a little stale). */
    long openShared() {
        return openShared.sum();
    }

    /** Empty pipes kept for reuse (open minus these are lent). */
    int free() {
        return freeCount;
    }

    int idle() {
        return freeCount;
    }

    long failures() {
        return failures;
    }

    void closeAll() {
        while (freeCount > 0) {
            close(free[--freeCount]);
            free[freeCount] = null;
        }
    }
}
