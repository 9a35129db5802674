package warren.fdpass;

import jnr.ffi.Pointer;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * A non-blocking eventfd(2) used as a doorbell between threads: {@link #signal()} from any thread,
 * the owner registers {@link #fd()} for EPOLLIN in its loop and calls {@link #drain()} when it
 * fires. Both calls are a single read(2)/write(2) of 8 bytes from preallocated native memory, so
 * they allocate nothing. Close it once, from its owner.
 */
public final class EventFd implements AutoCloseable {
    private final Fd fd;
    private final Pointer one = Native.allocate(8);
    private final Pointer drained = Native.allocate(8);

    public EventFd() throws NativeIoException {
        this.fd = Fd.adopt(Native.eventfd(0, Native.EFD_CLOEXEC | Native.EFD_NONBLOCK));
        one.putLong(0, 1L);
    }

    /** The raw fd, to register with epoll (EPOLLIN while the counter is non-zero). */
    public int fd() {
        return fd.get();
    }

    /**
     * Adds 1 to the counter; any thread. True if written, false if the counter is saturated
     * (a wake-up is pending anyway) or the fd is closed.
     */
    public boolean signal() {
        try {
            return Native.write(fd.get(), one, 8) == 8;
        } catch (IllegalStateException closed) {
            return false;
        }
    }

    /** Resets the counter to 0; returns the value it had (0 if nothing was pending). Owner only. */
    public long drain() {
        long n = Native.read(fd.get(), drained, 8);
        return n == 8 ? drained.getLong(0) : 0;
    }

    @Override
    public void close() {
        fd.close();
    }
}
