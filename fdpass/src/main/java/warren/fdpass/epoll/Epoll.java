package warren.fdpass.epoll;

import jnr.ffi.Pointer;
import warren.fdpass.Fd;
import warren.fdpass.libc.Layout;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * An epoll(7) instance with a preallocated event array. Each registration carries a 64-bit data
 * word chosen by the caller (e.g. a table index and a type tag), so dispatch needs no map lookup.
 * Not thread-safe: one loop thread owns it; {@link #wakeup()} may be called from any thread.
 */
public final class Epoll implements AutoCloseable {
    /** Data word reported for the wakeup eventfd. */
    public static final long WAKEUP = -1L;

    private final Fd epfd;
    private final Fd wakeFd;
    private final Pointer events;
    private final Pointer ctl = Native.allocate(Layout.EPOLL_EVENT_SIZE);
    private final Pointer eightBytes = Native.allocate(8);
    private final Pointer wakeBytes = Native.allocate(8);
    private final int capacity;
    private int ready;

    public Epoll(int capacity) throws NativeIoException {
        this.capacity = capacity;
        this.events = Native.allocate(capacity * Layout.EPOLL_EVENT_SIZE);
        this.epfd = Fd.adopt(Native.epoll_create1(Native.EPOLL_CLOEXEC));
        Fd w = null;
        try {
            w = Fd.adopt(Native.eventfd(0, Native.EFD_CLOEXEC | Native.EFD_NONBLOCK));
            wakeBytes.putLong(0, 1L);
            add(w.get(), Native.EPOLLIN, WAKEUP);
        } catch (NativeIoException | RuntimeException e) {
            if (w != null) {
                w.close();
            }
            epfd.close();
            throw e;
        }
        this.wakeFd = w;
    }

    public void add(int fd, int eventMask, long data) throws NativeIoException {
        ctl(Native.EPOLL_CTL_ADD, fd, eventMask, data);
    }

    public void modify(int fd, int eventMask, long data) throws NativeIoException {
        ctl(Native.EPOLL_CTL_MOD, fd, eventMask, data);
    }

    /** Removes fd; harmless if the fd was already closed (closing removes it from epoll). */
    public void remove(int fd) {
        try {
            ctl(Native.EPOLL_CTL_DEL, fd, 0, 0);
        } catch (NativeIoException ignored) {
            // EBADF / ENOENT: already gone
        }
    }

    private void ctl(int op, int fd, int eventMask, long data) throws NativeIoException {
        ctl.putInt(Layout.EPOLL_EVENTS, eventMask);
        ctl.putLong(Layout.EPOLL_DATA, data);
        Native.epoll_ctl(epfd.get(), op, fd, ctl);
    }

    /** Waits up to {@code timeoutMs} (-1 = forever, 0 = poll); returns the number of ready events. */
    public int await(int timeoutMs) throws NativeIoException {
        ready = Native.epoll_wait(epfd.get(), events, capacity, timeoutMs);
        return ready;
    }

    public int events(int i) {
        return events.getInt((long) i * Layout.EPOLL_EVENT_SIZE + Layout.EPOLL_EVENTS);
    }

    public long data(int i) {
        return events.getLong((long) i * Layout.EPOLL_EVENT_SIZE + Layout.EPOLL_DATA);
    }

    /** Makes a concurrent or next {@link #await} return. Any thread. */
    public void wakeup() {
        try {
            Native.write(wakeFd.get(), wakeBytes, 8); // -EAGAIN: counter saturated, a wakeup is pending
        } catch (IllegalStateException ignored) {
            // closed during shutdown
        }
    }

    /** Clears the wakeup counter; the loop calls this when it sees {@link #WAKEUP}. */
    public void drainWakeup() {
        Native.read(wakeFd.get(), eightBytes, 8); // -EAGAIN: nothing pending
    }

    @Override
    public void close() {
        wakeFd.close();
        epfd.close();
    }
}
