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
 * <p><b>Offloads</b> (issue #15). Opened with {@link #IFF_VNET_HDR} ({@code vnetHdr} true), every
 * read(2) returns, and every write(2) must start with, a 10-byte {@code struct virtio_net_hdr}
 * ({@code warren.packet.VnetHdr}) before the IP packet. {@link #enableVnetHdr} then fixes its size
 * and byte order, and {@link #setOffload} tells the kernel what the reader takes: with
 * {@link #TUN_F_CSUM} packets may come with a partial checksum (NEEDS_CSUM), with
 * {@link #TUN_F_TSO4}/{@link #TUN_F_TSO6}/{@link #TUN_F_USO4}|{@link #TUN_F_USO6} as TCP or UDP
 * super-packets of up to 64 KiB (one read instead of up to 45), which the kernel's NAT and
 * forwarding pass along whole. Writes may carry super-packets whatever the offloads: the kernel
 * segments them if it must. A read buffer smaller than the biggest super-packet truncates it:
 * read with {@code VnetHdr.MAX_MESSAGE} bytes.
 *
 * <p><b>The flags belong to the device, not to the fd.</b> IFF_VNET_HDR, IFF_NO_PI,
 * IFF_MULTI_QUEUE, the vnet header size and byte order and the offloads are kept in the device
 * ({@code struct tun_struct}); every queue reads and writes in the device's format. The kernel
 * ({@code tun_set_iff}) sets the TUN_FEATURES flags (IFF_VNET_HDR among them) from the TUNSETIFF
 * that creates the device and from a later one that attaches to it when no other queue is
 * attached or disabled (a single-queue device reopened, a multi-queue device whose other queues
 * are all gone), and then for all queues, including fds other processes hold. When other queues
 * exist, Linux 6.18 keeps the device's flags and the new fd silently gets the device's format,
 * whatever it asked for (TunOffloadTest shows both; older kernels overwrote the flags on every
 * attach). An IFF_MULTI_QUEUE mismatch is refused (EINVAL). So a daemon that inherits queues of
 * fish0 in an upgrade asks the device with {@link #flags}/{@link #hasVnetHdr} and opens its new
 * queues with the same {@code vnetHdr}; the {@code vnetHdr} overloads here check after attaching
 * and fail (closing the fd) rather than hand back a queue whose format is not the one asked for.
 * Switching an existing device between formats means recreating it (or reattaching every queue),
 * not attaching one queue differently. The offloads set by TUNSETOFFLOAD stay with the device as
 * well: never leave TSO/USO on for a reader without IFF_VNET_HDR, which would get super-packets
 * with nothing to say so.
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
    /** Packets carry a struct virtio_net_hdr before the IP header (include/uapi/linux/if_tun.h). */
    public static final int IFF_VNET_HDR = 0x4000;
    /** TUNSETOFFLOAD: _IOW('T', 208, unsigned int); the argument is the TUN_F_* bits by value. */
    public static final long TUNSETOFFLOAD = 0x400454d0L;
    /** TUNGETIFF: _IOR('T', 210, unsigned int); fills an ifreq with the device's name and flags. */
    public static final long TUNGETIFF = 0x800454d2L;
    /** TUNSETVNETHDRSZ: _IOW('T', 216, int); at least 10 (sizeof(struct virtio_net_hdr)). */
    public static final long TUNSETVNETHDRSZ = 0x400454d8L;
    /** TUNSETVNETLE: _IOW('T', 220, int); nonzero = the header's u16 fields are little-endian on any host. */
    public static final long TUNSETVNETLE = 0x400454dcL;
    /** The reader takes partial checksums (NEEDS_CSUM). Every other offload needs it. */
    public static final int TUN_F_CSUM = 0x01;
    /** The reader takes TCP/IPv4 super-packets (needs CSUM). */
    public static final int TUN_F_TSO4 = 0x02;
    /** The reader takes TCP/IPv6 super-packets (needs CSUM). */
    public static final int TUN_F_TSO6 = 0x04;
    /** The reader takes TCP super-packets with CWR set (the ECN bit of gso_type; needs TSO4 or TSO6). */
    public static final int TUN_F_TSO_ECN = 0x08;
    /** The reader takes UDP/IPv4 super-packets (UDP_L4; Linux 6.2+, only together with USO6). */
    public static final int TUN_F_USO4 = 0x20;
    /** The reader takes UDP/IPv6 super-packets (only together with USO4). */
    public static final int TUN_F_USO6 = 0x40;
    /** Every offload warren's readers take: checksums, TSO over both families with ECN, USO. */
    public static final int OFFLOADS_ALL = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6;
    /** sizeof(struct virtio_net_hdr): the header {@link #enableVnetHdr} sets. */
    public static final int VNET_HDR_SIZE = 10;
    private static final int EINVAL = 22;
    /** Most queues one TUN device can have (MAX_TAP_QUEUES). */
    public static final int MAX_QUEUES = 256;
    private static final int IFREQ_SIZE = 40;
    private static final int IFNAMSIZ = 16;
    private static final int O_RDWR = 2;

    /** Creates (or attaches to) TUN device {@code name}; the fd is non-blocking if asked. */
    public static Fd open(String name, boolean nonBlocking) throws NativeIoException {
        return open(name, IFF_TUN | IFF_NO_PI, nonBlocking, false);
    }

    /**
     * {@link #open(String, boolean)} with ({@code vnetHdr} true) or without {@link #IFF_VNET_HDR}.
     * Fails (IllegalStateException, the fd closed) if the device ends up in the other format: it
     * existed with other flags (see the class comment).
     */
    public static Fd open(String name, boolean nonBlocking, boolean vnetHdr) throws NativeIoException {
        return open(name, IFF_TUN | IFF_NO_PI | (vnetHdr ? IFF_VNET_HDR : 0), nonBlocking, true);
    }

    /**
     * Attaches one more queue to multi-queue TUN device {@code name} (creating the device if
     * there is none): the returned fd is queue number {@code numqueues} of the device.
     */
    public static Fd openQueue(String name, boolean nonBlocking) throws NativeIoException {
        return open(name, IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE, nonBlocking, false);
    }

    /**
     * {@link #openQueue(String, boolean)} with or without {@link #IFF_VNET_HDR}, checked like
     * {@link #open(String, boolean, boolean)}: a queue attached to a device of the other format
     * fails (a multi-queue device keeps the flags of its first queue while any other is attached).
     */
    public static Fd openQueue(String name, boolean nonBlocking, boolean vnetHdr) throws NativeIoException {
        return open(name, IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | (vnetHdr ? IFF_VNET_HDR : 0), nonBlocking, true);
    }

    /**
     * {@code n} queues of multi-queue TUN device {@code name}, index i at position i, created in
     * index order (the device too if it does not exist). On failure none stays open.
     */
    public static Fd[] openQueues(String name, int n, boolean nonBlocking) throws NativeIoException {
        return growQueues(name, new Fd[0], n, nonBlocking);
    }

    /** {@link #openQueues(String, int, boolean)} through {@link #openQueue(String, boolean, boolean)}. */
    public static Fd[] openQueues(String name, int n, boolean nonBlocking, boolean vnetHdr) throws NativeIoException {
        return growQueues(name, new Fd[0], n, nonBlocking, vnetHdr);
    }

    /**
     * The queues of {@code name} grown to {@code n}: {@code queues} (indices 0..len-1, e.g. the fds
     * a predecessor handed over, in index order) followed by {@code n - len} newly attached queues.
     * Like every {@code open*} here it must run in the device's network namespace ({@link Netns#call}):
     * TUNSETIFF looks the name up in the opening thread's namespace and would otherwise create a
     * new device of that name there. On failure the new ones are closed again and {@code queues} is left as it was.
     */
    public static Fd[] growQueues(String name, Fd[] queues, int n, boolean nonBlocking) throws NativeIoException {
        return grow(name, queues, n, nonBlocking, IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE, false);
    }

    /**
     * {@link #growQueues(String, Fd[], int, boolean)} with or without {@link #IFF_VNET_HDR}, each
     * new queue checked like {@link #openQueue(String, boolean, boolean)}. For inherited queues
     * pass {@code hasVnetHdr(queues[0])}: the device's format, which new queues cannot change.
     */
    public static Fd[] growQueues(String name, Fd[] queues, int n, boolean nonBlocking, boolean vnetHdr)
            throws NativeIoException {
        return grow(name, queues, n, nonBlocking, IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | (vnetHdr ? IFF_VNET_HDR : 0),
                true);
    }

    private static Fd[] grow(String name, Fd[] queues, int n, boolean nonBlocking, int flags, boolean verify)
            throws NativeIoException {
        if (n < queues.length || n > MAX_QUEUES) {
            throw new IllegalArgumentException("cannot grow " + queues.length + " queues to " + n);
        }
        Fd[] all = java.util.Arrays.copyOf(queues, n);
        int i = queues.length;
        try {
            for (; i < n; i++) {
                all[i] = open(name, flags, nonBlocking, verify);
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

    /**
     * The device's flags (TUNGETIFF: IFF_TUN, IFF_NO_PI, IFF_MULTI_QUEUE, IFF_VNET_HDR, IFF_PERSIST,
     * ...), asked through any attached queue fd, e.g. one inherited from a predecessor. A detached
     * queue ({@link #setQueueAttached}) has no device to ask: EBADFD.
     */
    public static int flags(Fd queue) throws NativeIoException {
        Pointer ifr = Native.allocate(IFREQ_SIZE);
        Native.ioctl(queue.get(), TUNGETIFF, ifr, "TUNGETIFF");
        return ifr.getShort(IFNAMSIZ) & 0xFFFF;
    }

    /** True if the device of {@code queue} has {@link #IFF_VNET_HDR}: every queue reads and writes headers. */
    public static boolean hasVnetHdr(Fd queue) throws NativeIoException {
        return (flags(queue) & IFF_VNET_HDR) != 0;
    }

    /**
     * Fixes the device's virtio_net_hdr at {@link #VNET_HDR_SIZE} bytes (TUNSETVNETHDRSZ; a
     * predecessor could have set more) with little-endian fields on any host (TUNSETVNETLE), the
     * layout {@code warren.packet.VnetHdr} reads. Both are per device. For a device opened with
     * {@link #IFF_VNET_HDR}.
     */
    public static void enableVnetHdr(Fd queue) throws NativeIoException {
        Pointer v = Native.allocate(4);
        v.putInt(0, VNET_HDR_SIZE);
        Native.ioctl(queue.get(), TUNSETVNETHDRSZ, v, "TUNSETVNETHDRSZ");
        v.putInt(0, 1);
        Native.ioctl(queue.get(), TUNSETVNETLE, v, "TUNSETVNETLE");
    }

    /**
     * TUNSETOFFLOAD: tells the kernel which {@code TUN_F_*} offloads the device's readers take
     * (per device; 0 turns them all off). The kernel refuses unknown bits with EINVAL; a kernel
     * without USO (before 6.2) is retried without {@link #TUN_F_USO4}|{@link #TUN_F_USO6}, and
     * UDP super-packets are then segmented by the kernel before the TUN. Returns the offloads
     * set. USO4 and USO6 only work together; TSO and USO need CSUM, TSO_ECN needs TSO (the
     * kernel's {@code set_offload} ignores them otherwise). Turning any on needs a device with
     * {@link #IFF_VNET_HDR} (IllegalStateException otherwise: its readers could not tell a
     * super-packet or a partial checksum from a packet); 0 is always allowed. Super-packets stay
     * within 64 KiB as long as the device's gso_max_size is the default (65536): raising it
     * ("BIG TCP") would bring IPv4 total length 0 and IPv6 jumbo payload options, which
     * {@code warren.packet.PacketView} drops.
     */
    public static int setOffload(Fd queue, int offloads) throws NativeIoException {
        if (offloads != 0 && !hasVnetHdr(queue)) {
            throw new IllegalStateException("TUNSETOFFLOAD 0x" + Integer.toHexString(offloads)
                    + " on a device without IFF_VNET_HDR");
        }
        int rc = Native.tryIoctlValue(queue.get(), TUNSETOFFLOAD, offloads);
        int uso = TUN_F_USO4 | TUN_F_USO6;
        if (rc == -EINVAL && (offloads & uso) != 0) {
            offloads &= ~uso;
            rc = Native.tryIoctlValue(queue.get(), TUNSETOFFLOAD, offloads);
        }
        if (rc < 0) {
            throw new NativeIoException("ioctl", -rc, "TUNSETOFFLOAD " + Integer.toHexString(offloads));
        }
        return offloads;
    }

    private static Fd open(String name, int flags, boolean nonBlocking, boolean verify) throws NativeIoException {
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
            if (verify) {
                int have = flags(fd);
                if ((have & IFF_VNET_HDR) != (flags & IFF_VNET_HDR)) {
                    throw new IllegalStateException("TUN " + name + " is " + ((have & IFF_VNET_HDR) != 0 ? "" : "not ")
                            + "in IFF_VNET_HDR format (flags 0x" + Integer.toHexString(have)
                            + "): a queue cannot change the format of a device that has other queues");
                }
            }
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
