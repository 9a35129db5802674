package warren.fdpass;

import java.util.Collection;
import java.util.concurrent.atomic.AtomicIntegerFieldUpdater;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * One owned file descriptor. Exactly one owner holds an {@code Fd}; the owner closes it exactly
 * once ({@link #close()} is idempotent) or hands it away explicitly:
 * <ul>
 *   <li>{@link #transfer()} moves ownership to a new {@code Fd} object (the old one becomes a
 *       no-op shell), e.g. from a received message into a task's per-side slot;</li>
 *   <li>{@link #detach()} gives up ownership of the raw number (to the kernel, another library
 *       or a child process).</li>
 * </ul>
 * States: OPEN -> CLOSED (close) | MOVED (transfer, detach). Only an OPEN fd can be used.
 */
public final class Fd implements AutoCloseable {
    private static final int OPEN = 0;
    private static final int CLOSED = 1;
    private static final int MOVED = 2;
    private static final AtomicIntegerFieldUpdater<Fd> STATE =
            AtomicIntegerFieldUpdater.newUpdater(Fd.class, "state");

    private final int fd;
    private volatile int state;

    private Fd(int fd) {
        if (fd < 0) {
            throw new IllegalArgumentException("not an fd: " + fd);
        }
        this.fd = fd;
    }

    /** Takes ownership of a raw fd number (from a syscall or a received message). */
    public static Fd adopt(int fd) {
        return new Fd(fd);
    }

    /** The raw number, for syscalls. Fails if this handle no longer owns it. */
    public int get() {
        if (state != OPEN) {
            throw new IllegalStateException(this + " is " + stateName());
        }
        return fd;
    }

    /** The raw number even after close/move, for logs only. */
    public int number() {
        return fd;
    }

    public boolean isOpen() {
        return state == OPEN;
    }

    /** Moves ownership into a new handle; this one becomes inert. */
    public Fd transfer() {
        if (!STATE.compareAndSet(this, OPEN, MOVED)) {
            throw new IllegalStateException(this + " is " + stateName() + ", cannot transfer");
        }
        return new Fd(fd);
    }

    /** Gives up ownership of the raw number; {@link #close()} becomes a no-op. */
    public int detach() {
        if (!STATE.compareAndSet(this, OPEN, MOVED)) {
            throw new IllegalStateException(this + " is " + stateName() + ", cannot detach");
        }
        return fd;
    }

    /** A new fd (F_DUPFD_CLOEXEC) for the same open file description, owned by the caller. */
    public Fd dup() throws NativeIoException {
        return new Fd(Native.fcntl(get(), Native.F_DUPFD_CLOEXEC, 0));
    }

    /** Closes the fd if this handle owns it; safe to call any number of times. */
    @Override
    public void close() {
        if (STATE.compareAndSet(this, OPEN, CLOSED)) {
            Native.close(fd);
        }
    }

    /** Closes every fd of the collection (null elements ignored). */
    public static void closeAll(Collection<Fd> fds) {
        if (fds == null) {
            return;
        }
        for (Fd f : fds) {
            if (f != null) {
                f.close();
            }
        }
    }

    private String stateName() {
        switch (state) {
            case OPEN: return "open";
            case CLOSED: return "closed";
            default: return "moved";
        }
    }

    @Override
    public String toString() {
        return "fd " + fd;
    }
}
