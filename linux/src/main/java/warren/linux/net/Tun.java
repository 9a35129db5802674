package warren.linux.net;

import jnr.ffi.Pointer;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * TUN devices (Documentation/networking/tuntap.rst): open /dev/net/tun and TUNSETIFF with
 * IFF_TUN | IFF_NO_PI, so each read(2) returns one raw IP packet and each write(2) injects one.
 * The device is created in the calling thread's network namespace (see {@link Netns#call}); it
 * lives as long as its fd, unless made persistent.
 *
 * <p><b>Multi-queue</b> ({@link #openQueues}): each fd opened with {@link #IFF_MULTI_QUEUE} and
 * the same name is one more queue of the same device. A queue's index is the order it was
 * attached; closing (detaching) queue k moves the <i>last</i> queue into index k, so queues are
 * only ever removed from the end ({@link #shrinkQueues}). Which queue the kernel's packets come
 * out of is chosen per packet by {@link TunSteering}'s program if one is attached, else by the
 * kernel's flow table (see docs/loops.md).
 *
 * <pre>
 * struct ifreq (40): 0 char ifr_name[16]   16 short ifr_flags
 * </pre>
 */
public final class Tun {
    private Tun() {}

    public static final long TUNSETIFF = 0x400454caL;
    public static final int IFF_TUN = 0x0001;
    public static final int IFF_NO_PI = 0x1000;
    public static final int IFF_MULTI_QUEUE = 0x0100;
    /** TUNSETQUEUE: attach ({@link #IFF_ATTACH_QUEUE}) or detach ({@link #IFF_DETACH_QUEUE}) a queue fd. */
    public static final long TUNSETQUEUE = 0x400454d9L;
    public static final int IFF_ATTACH_QUEUE = 0x0200;
    public static final int IFF_DETACH_QUEUE = 0x0400;
    /** Most queues one TUN device can have (MAX_TAP_QUEUES). */
    public static final int MAX_QUEUES = 256;
    private static final int IFREQ_SIZE = 40;
    private static final int IFNAMSIZ = 16;
    private static final int O_RDWR = 2;

    /** Creates (or attaches to) TUN device {@code name}; the fd is non-blocking if asked. */
    public static Fd open(String name, boolean nonBlocking) throws NativeIoException {
        return open(name, IFF_TUN | IFF_NO_PI, nonBlocking);
    }

    /**
     * Attaches one more queue to multi-queue TUN device {@code name} (creating the device if
     * there is none): the returned fd is queue number {@code numqueues} of the device.
     */
    public static Fd openQueue(String name, boolean nonBlocking) throws NativeIoException {
        return open(name, IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE, nonBlocking);
    }

    /**
     * {@code n} queues of multi-queue TUN device {@code name}, index i at position i, created in
     * index order (the device too if it does not exist). On failure none stays open.
     */
    public static Fd[] openQueues(String name, int n, boolean nonBlocking) throws NativeIoException {
        return growQueues(name, new Fd[0], n, nonBlocking);
    }

    /**
     * The queues of {@code name} grown to {@code n}: {@code queues} (indices 0..len-1, e.g. the fds
     * a predecessor handed over, in index order) followed by {@code n - len} newly attached queues.
     * Like every {@code open*} here it must run in the device's network namespace ({@link Netns#call}):
     * TUNSETIFF looks the name up in the opening thread's namespace and would otherwise create a
     * new device of that name there. On failure the new ones are closed again and {@code queues} is left as it was.
     */
    public static Fd[] growQueues(String name, Fd[] queues, int n, boolean nonBlocking) throws NativeIoException {
        if (n < queues.length || n > MAX_QUEUES) {
            throw new IllegalArgumentException("cannot grow " + queues.length + " queues to " + n);
        }
        Fd[] all = java.util.Arrays.copyOf(queues, n);
        int i = queues.length;
        try {
            for (; i < n; i++) {
                all[i] = openQueue(name, nonBlocking);
            }
            return all;
        } catch (NativeIoException | RuntimeException e) {
            closeQueues(all, queues.length, i);
            throw e;
        }
    }

    /**
     * Keeps the first {@code n} queues and closes the others, last first, so that no remaining
     * queue changes its index (the kernel moves the last queue into a detached one's index).
     * Returns the first {@code n}. Detaching drops a queue's unread packets ({@code __tun_detach}
     * purges its ring), so read each one until EAGAIN right before; packets the kernel sends
     * meanwhile are lost like any packet (TCP retransmits).
     */
    public static Fd[] shrinkQueues(Fd[] queues, int n) {
        if (n < 0 || n > queues.length) {
            throw new IllegalArgumentException("cannot shrink " + queues.length + " queues to " + n);
        }
        closeQueues(queues, n, queues.length);
        return java.util.Arrays.copyOf(queues, n);
    }

    /** Closes queues[from..to-1], last first. */
    private static void closeQueues(Fd[] queues, int from, int to) {
        for (int i = to - 1; i >= from; i--) {
            if (queues[i] != null) {
                queues[i].close();
            }
        }
    }

    /**
     * Detaches ({@code attach} false) or re-attaches a queue fd without closing it (TUNSETQUEUE).
     * A detached fd gets no packets (its unread ones are dropped) but stays open and keeps the
     * device alive, e.g. to be handed to a successor that re-attaches it. Detaching queue k moves
     * the last queue into index k, so detach only the last one; re-attaching makes it the last
     * queue.
     */
    public static void setQueueAttached(Fd queue, boolean attach) throws NativeIoException {
        Pointer ifr = Native.allocate(IFREQ_SIZE);
        ifr.putShort(IFNAMSIZ, (short) (attach ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE));
        Native.ioctl(queue.get(), TUNSETQUEUE, ifr, attach ? "TUNSETQUEUE attach" : "TUNSETQUEUE detach");
    }

    private static Fd open(String name, int flags, boolean nonBlocking) throws NativeIoException {
        byte[] n = name.getBytes(java.nio.charset.StandardCharsets.US_ASCII);
        if (n.length >= IFNAMSIZ) {
            throw new IllegalArgumentException("interface name too long: " + name);
        }
        Fd fd = Fd.adopt(Native.open("/dev/net/tun", O_RDWR | (nonBlocking ? Native.O_NONBLOCK : 0)));
        try {
            Pointer ifr = Native.allocate(IFREQ_SIZE);
            ifr.put(0, n, 0, n.length);
            ifr.putShort(IFNAMSIZ, (short) flags);
            Native.ioctl(fd.get(), TUNSETIFF, ifr, "TUNSETIFF " + name);
            return fd;
        } catch (NativeIoException | RuntimeException e) {
            fd.close();
            throw e;
        }
    }

    /** if_nametoindex(3) in the calling thread's namespace; 0 if there is no such interface. */
    public static int index(String name) {
        return Native.if_nametoindex(name);
    }
}
