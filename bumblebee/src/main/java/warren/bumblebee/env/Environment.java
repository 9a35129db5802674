package warren.bumblebee.env;

import static warren.bumblebee.nat.AddressPlan.LISTEN4;
import static warren.bumblebee.nat.AddressPlan.LISTEN6;
import static warren.bumblebee.nat.AddressPlan.LISTEN_PORT;
import static warren.bumblebee.nat.AddressPlan.POOL4;
import static warren.bumblebee.nat.AddressPlan.POOL4_PREFIX;
import static warren.bumblebee.nat.AddressPlan.POOL6;
import static warren.bumblebee.nat.AddressPlan.POOL6_PREFIX;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.fdpass.net.TcpSockets;
import warren.linux.net.Rtnetlink;
import warren.linux.net.Tun;

/**
 * Bumblebee's private world: an anonymous network namespace (no name, no route out), a TUN device
 * {@code bb0} in it, the kernel TCP listeners that accept upgraded flows, and the NAT pool routed
 * to the TUN.
 *
 * The addresses and routes are the NAT's {@link warren.bumblebee.nat.AddressPlan}.
 * The namespace is made by a fresh thread that unshare(2)s CLONE_NEWNET (allowed per thread in a
 * multi-threaded process, unlike a user namespace), keeps an fd of it (/proc/thread-self/ns/net)
 * and creates everything inside with rtnetlink and TUNSETIFF from Java; the thread then ends and
 * the namespace lives as long as its fds. That needs CAP_SYS_ADMIN and CAP_NET_ADMIN (root).
 * Without root, a {@link warren.netns.HelperMain} process started by
 * {@code unshare --user --map-root-user --net} builds the same inside its own namespaces and passes
 * every fd back over SCM_RIGHTS; it also makes the downgrade's connections (a process outside the
 * user namespace could not setns into it). A JVM cannot unshare a user namespace itself: it
 * always has threads.
 *
 * <p><b>Offloads</b> ({@code bumblebee.tun_offload}, issue 15): made in-process, bb0 is opened
 * with IFF_VNET_HDR, a 10-byte little-endian virtio_net_hdr and every offload the kernel has
 * (TUNSETOFFLOAD: checksum, TSO4/TSO6/TSO_ECN, USO where Linux 6.2+ has it), so a read gives the
 * kernel's TSO super-packets and a write takes a client's. The format belongs to the device: a
 * bb0 made by a predecessor (upgrade in place, fd store) keeps it, and this process asks it with
 * TUNGETIFF ({@link #vnetHdr}); queues it attaches later get the same. The helper's bb0 is plain.
 */
public final class Environment implements AutoCloseable {
    /** The TUN device's name in the namespace. */
    public static final String TUN = "bb0";
    /** Why the TUN has no steering program although it has several queues: {@code bumblebee.tun_steering = off}. */
    public static final String STEERING_OFF = "bumblebee.tun_steering = off";
    public final Fd netns;
    /**
     * The TUN's queues in the kernel's index order (IFF_MULTI_QUEUE; queue k is read and written
     * by event loop k). One queue with {@code threads = 1} or when the helper made the namespace.
     */
    private Fd[] queues;
    public final Fd listen4;
    public final Fd listen6;
    public final int mtu;
    public final int slots;
    private final warren.netns.Helper helper; // null when built in-process
    /** Why the TUN has one queue although more loops were asked for (null: as asked). */
    private String oneQueueWhy;
    /**
     * Why the device has no steering program this process attached, with several loops (null:
     * attached, or one loop): the kernel then picks a queue by its own flow table (or the TUN has
     * one queue: the helper's), and the loops hand packets over to the owner of their slot
     * (docs/bumblebee.md, Threads).
     */
    private String unsteeredWhy;
    /**
     * bb0 has IFF_VNET_HDR: every read and write of a queue carries a virtio_net_hdr
     * ({@code warren.packet.VnetHdr}) and may be a GSO super-packet. A property of the device:
     * set when Bumblebee makes bb0 with {@code bumblebee.tun_offload}, read with TUNGETIFF from a
     * bb0 made by anyone else (a predecessor, the fd store, the helper).
     */
    private boolean vnetHdr;
    /** The TUN_F_* offloads set on bb0 when this process made it (0: none, or not made here). */
    private int offloads;

    private Environment(Fd netns, Fd[] queues, Fd listen4, Fd listen6, int mtu, int slots, warren.netns.Helper helper) {
        this.helper = helper;
        this.netns = netns;
        this.queues = queues;
        this.listen4 = listen4;
        this.listen6 = listen6;
        this.mtu = mtu;
        this.slots = slots;
    }

    /** True if bb0 reads and writes a virtio_net_hdr before every packet ({@link #vnetHdr}). */
    public boolean vnetHdr() {
        return vnetHdr;
    }

    /** The TUN_F_* offloads this process set on bb0 (0 if it did not make bb0 or made it without). */
    public int offloads() {
        return offloads;
    }

    /** The TUN's queue {@code k} (k < {@link #queues()}). */
    public Fd queue(int k) {
        return queues[k];
    }

    /** The number of TUN queues: the loops Bumblebee runs on. */
    public int queues() {
        return queues.length;
    }

    /** Why there are fewer queues than loops were asked for, or null. */
    public String oneQueueWhy() {
        return oneQueueWhy;
    }

    /** Why several queues have no steering program (then packets are handed over between loops), or null. */
    public String unsteeredWhy() {
        return unsteeredWhy;
    }

    /**
     * A successor with several queues: attaches the steering program again ({@code load}; the
     * device keeps the predecessor's, if any, and this replaces it with the same), or not
     * ({@code bumblebee.tun_steering = off}). Sets {@link #unsteeredWhy}: this process hands
     * packets over between loops unless it attached the program itself (a predecessor's program,
     * if it is still there, only makes hand-overs rare).
     */
    public void steer(boolean load) {
        steer(load, queues.length);
    }

    /**
     * As {@link #steer(boolean)} for a device about to have {@code queuesSoon} queues: a successor
     * with more loops than its predecessor attaches the program before {@link #resize} adds the
     * queues. Attached after, the kernel's own choice put a few packets on a new queue between the
     * two (its loop does not own their slots, and a steered successor has no rings to hand them
     * over: `drops.tun_other_loop`, seen 1-4 times in twenty upgrades by BumblebeeUpgradeTest at the
     * 1 -> 2 loops step); before, the program (queue = low 16 bits % queues) steers the first packet
     * on the grown device too, and on one queue it can only pick that one.
     */
    public void steer(boolean load, int queuesSoon) {
        unsteeredWhy = Math.max(queues.length, queuesSoon) < 2 ? null : load ? attachSteering(queues[0]) : STEERING_OFF;
    }

    /**
     * Loads the steering program ({@link warren.linux.net.TunSteering#low16}: queue = low 16 bits
     * of the destination = slot + 1, modulo the queues) and attaches it to the device of
     * {@code queue}. Null when done, else why not (EPERM in a user namespace, no CAP_BPF or
     * CAP_SYS_ADMIN, a system call filter).
     */
    private static String attachSteering(Fd queue) {
        try (Fd prog = warren.linux.net.TunSteering.load("bb_low16", warren.linux.net.TunSteering.low16())) {
            warren.linux.net.TunSteering.attach(queue, prog);
            return null;
        } catch (warren.linux.net.SteeringException e) {
            return e.getMessage();
        }
    }

    /**
     * A successor's queues made {@code n} (its loops): more queues attached in the namespace
     * (steered or not: {@link #steer}), or the last ones detached and closed ({@code detachExtra};
     * only after the commit, the predecessor may still read them before). Returns the number of
     * queues now; fewer than asked (and {@link #oneQueueWhy} set) when the device has no
     * IFF_MULTI_QUEUE (made by an older version).
     */
    public int resize(int n, boolean detachExtra) throws Exception {
        if (n > queues.length) {
            try {
                Fd[] have = queues;
                boolean vnet = vnetHdr; // the device's format: a new queue cannot change it
                queues = warren.linux.net.Netns.call("/proc/self/fd/" + netns.get(),
                        () -> Tun.growQueues(TUN, have, n, true, vnet));
            } catch (NativeIoException e) {
                oneQueueWhy = "cannot attach more queues to " + TUN + " (" + e.getMessage() + "; made without"
                        + " IFF_MULTI_QUEUE by an older version?)";
            }
        } else if (n < queues.length && detachExtra) {
            for (int k = queues.length - 1; k >= n; k--) {
                try {
                    Tun.setQueueAttached(queues[k], false); // now, whoever else holds the fd (the fd store)
                } catch (NativeIoException e) {
                    // closing it below detaches it once nobody else holds it
                }
            }
            queues = Tun.shrinkQueues(queues, n);
        }
        return queues.length;
    }

    /** Every queue fd, in index order (handoff, fd store). */
    public List<Fd> queueFds() {
        return List.of(queues);
    }

    /**
     * How the namespace is made: "in-process" (root: a thread unshares it), "helper" (a
     * {@link warren.netns.HelperMain} process started in it with unshare(1), inside a user namespace
     * too when not root) or "auto" (in-process as root, helper otherwise).
     */
    public static Environment create(String mode, int mtu, int slots) throws Exception {
        return create(mode, mtu, slots, 1);
    }

    /** As {@link #create(String, int, int, int, boolean)}, loading the steering program. */
    public static Environment create(String mode, int mtu, int slots, int loops) throws Exception {
        return create(mode, mtu, slots, loops, true);
    }

    /** As {@link #create(String, int, int, int, boolean, boolean)} with the offloads ({@code bumblebee.tun_offload}). */
    public static Environment create(String mode, int mtu, int slots, int loops, boolean steer) throws Exception {
        return create(mode, mtu, slots, loops, steer, true);
    }

    /**
     * As {@link #create(String, int, int)} with a TUN of {@code loops} queues and, with
     * {@code steer}, the steering program ({@link #unsteeredWhy} says why not); one queue (and
     * {@link #unsteeredWhy}: loop 0 reads it and hands packets over) when the helper makes the
     * namespace. With {@code offload} ({@code bumblebee.tun_offload}) an in-process bb0 is made
     * with IFF_VNET_HDR and every offload the kernel has ({@link #vnetHdr}); the helper's bb0 is
     * plain whatever it says (the helper opens no vnet header), which {@link #vnetHdr} reports.
     */
    public static Environment create(String mode, int mtu, int slots, int loops, boolean steer, boolean offload)
            throws Exception {
        boolean root = Native.getuid() == 0 || hasNamespaceCapabilities();
        Environment e;
        switch (mode) {
            case "in-process":
                return create(mtu, slots, loops, steer, offload);
            case "helper":
                e = withHelper(mtu, slots, !root);
                break;
            case "auto":
                if (root) {
                    return create(mtu, slots, loops, steer, offload);
                }
                e = withHelper(mtu, slots, true);
                break;
            default:
                throw new IllegalArgumentException("bumblebee.environment must be auto, in-process or helper");
        }
        if (loops > 1) { // N loops all the same: loop 0 reads the one queue and hands packets over
            e.unsteeredWhy = "the helper process made the namespace (bumblebee.environment = " + mode
                    + "): its TUN has one queue, read by loop 0";
        }
        return e;
    }

    private static Environment withHelper(int mtu, int slots, boolean userNamespace) throws Exception {
        warren.netns.Helper h = warren.netns.Helper.start(userNamespace);
        try {
            List<Fd> fds = h.setup("bb0", mtu,
                    List.of(InetAddress.getByAddress(LISTEN4), InetAddress.getByAddress(LISTEN6)),
                    List.of(InetAddress.getByAddress(POOL4), InetAddress.getByAddress(POOL6)),
                    List.of(POOL4_PREFIX, POOL6_PREFIX),
                    List.of(InetAddress.getByAddress(LISTEN4), InetAddress.getByAddress(LISTEN6)), LISTEN_PORT);
            Environment e = new Environment(fds.get(0), new Fd[] {fds.get(1)}, fds.get(2), fds.get(3), mtu, slots, h);
            try {
                e.vnetHdr = Tun.hasVnetHdr(fds.get(1)); // TUNGETIFF works on a passed fd: false, the helper's is plain
            } catch (NativeIoException | RuntimeException x) {
                e.close();
                throw x;
            }
            return e;
        } catch (Exception e) {
            h.close();
            throw e;
        }
    }

    /**
     * A TCP socket made inside the namespace, connecting (non-blocking) from {@code from} to
     * {@code to}:{@code toPort}; returns {fd, local port}.
     */
    public int[] connectInside(int version, byte[] from, byte[] to, int toPort) throws Exception {
        if (helper != null) {
            int[] port = new int[1];
            Fd fd = helper.connect(InetAddress.getByAddress(from), InetAddress.getByAddress(to), toPort, port);
            return new int[] {fd.detach(), port[0]};
        }
        return warren.linux.net.Netns.call("/proc/self/fd/" + netns.get(), () -> {
            int fd = Native.socket(version == 4 ? Native.AF_INET : Native.AF_INET6,
                    Native.SOCK_STREAM | Native.SOCK_NONBLOCK | Native.SOCK_CLOEXEC, 0);
            try {
                Native.bind(fd, Native.sockaddr(new InetSocketAddress(InetAddress.getByAddress(from), 0)), "inner");
                byte[] sa = Native.sockaddr(new InetSocketAddress(InetAddress.getByAddress(to), toPort));
                int rc = Native.tryConnect(fd, sa);
                if (rc < 0 && rc != -warren.fdpass.libc.Errno.EINPROGRESS) {
                    throw new NativeIoException("connect", -rc, "inside the namespace");
                }
                return new int[] {fd, Native.getsockname(fd).getPort()};
            } catch (Exception e) {
                Native.close(fd);
                throw e;
            }
        });
    }

    /** CAP_SYS_ADMIN and CAP_NET_ADMIN effective (e.g. a unit's AmbientCapabilities= for a non-root user). */
    static boolean hasNamespaceCapabilities() {
        try {
            for (String line : java.nio.file.Files.readAllLines(java.nio.file.Path.of("/proc/self/status"))) {
                if (line.startsWith("CapEff:")) {
                    long eff = Long.parseUnsignedLong(line.substring(7).strip(), 16);
                    return (eff & (1L << 21)) != 0 && (eff & (1L << 12)) != 0; // CAP_SYS_ADMIN, CAP_NET_ADMIN
                }
            }
        } catch (java.io.IOException | NumberFormatException e) {
            return false;
        }
        return false;
    }

    public static Environment create(int mtu, int slots) throws Exception {
        return create(mtu, slots, 1, true, true);
    }

    private static Environment create(int mtu, int slots, int loops, boolean steer, boolean offload) throws Exception {
        if (Native.getuid() != 0 && !hasNamespaceCapabilities()) {
            throw new IllegalStateException("an in-process environment needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN);"
                    + " use bumblebee.environment = helper (or auto)");
        }
        CompletableFuture<Environment> result = new CompletableFuture<>();
        Thread t = new Thread(() -> {
            Fd ns = null;
            Fd[] tun = null;
            Fd l4 = null;
            Fd l6 = null;
            try {
                Native.unshare(Native.CLONE_NEWNET);
                ns = Fd.adopt(Native.open("/proc/thread-self/ns/net", Native.O_RDONLY));
                // multi-queue even with one loop, so that a successor with more loops can attach more
                tun = Tun.openQueues(TUN, 1, true, offload);
                int set = 0;
                if (offload) { // per device: every queue, attached now or later, reads and writes the header
                    Tun.enableVnetHdr(tun[0]);
                    set = Tun.setOffload(tun[0], Tun.OFFLOADS_ALL);
                }
                String why = null;
                if (loops > 1) { // without the program too: the loops then hand packets over
                    why = steer ? attachSteering(tun[0]) : STEERING_OFF;
                    tun = Tun.growQueues(TUN, tun, loops, true, offload);
                }
                int idx = Tun.index(TUN);
                try (Rtnetlink rt = new Rtnetlink()) {
                    rt.linkUp(Tun.index("lo"), 0);
                    rt.linkUp(idx, mtu, 10_000);
                    rt.addAddress(idx, InetAddress.getByAddress(LISTEN4), 32);
                    rt.addAddress(idx, InetAddress.getByAddress(LISTEN6), 128);
                    rt.addRoute(InetAddress.getByAddress(POOL4), POOL4_PREFIX, idx);
                    rt.addRoute(InetAddress.getByAddress(POOL6), POOL6_PREFIX, idx);
                }
                l4 = TcpSockets.listen(new InetSocketAddress(InetAddress.getByAddress(LISTEN4), LISTEN_PORT), 4096);
                l6 = TcpSockets.listen(new InetSocketAddress(InetAddress.getByAddress(LISTEN6), LISTEN_PORT), 4096);
                TcpSockets.setBlocking(l4, false);
                TcpSockets.setBlocking(l6, false);
                Environment env = new Environment(ns, tun, l4, l6, mtu, slots, null);
                env.unsteeredWhy = why;
                env.vnetHdr = offload;
                env.offloads = set;
                result.complete(env);
            } catch (Throwable e) {
                for (Fd f : new Fd[] {ns, l4, l6}) {
                    if (f != null) {
                        f.close();
                    }
                }
                if (tun != null) {
                    Fd.closeAll(List.of(tun));
                }
                result.completeExceptionally(e);
            }
        }, "bumblebee-netns");
        t.start();
        try {
            return result.get(30, TimeUnit.SECONDS);
        } catch (ExecutionException e) {
            throw e.getCause() instanceof Exception ? (Exception) e.getCause() : e;
        }
    }

    /**
     * The predecessor's namespace, TUN and listeners (upgrade in place); they are as it left them,
     * bb0 in whatever format it has ({@link #vnetHdr}, asked with TUNGETIFF). On failure the fds
     * are closed.
     */
    public static Environment adopt(Fd netns, Fd tun, Fd listen4, Fd listen6, int mtu, int slots)
            throws NativeIoException {
        return adopt(netns, List.of(tun), listen4, listen6, mtu, slots);
    }

    /** The same with every TUN queue, in index order. */
    public static Environment adopt(Fd netns, List<Fd> queues, Fd listen4, Fd listen6, int mtu, int slots)
            throws NativeIoException {
        Environment e = new Environment(netns, queues.toArray(new Fd[0]), listen4, listen6, mtu, slots, null);
        try {
            e.vnetHdr = Tun.hasVnetHdr(queues.get(0));
        } catch (NativeIoException | RuntimeException x) {
            e.close();
            throw x;
        }
        return e;
    }

    /**
     * The warm-up's stand-in ({@code warren.daemon.Upgrade#warmUp}: a throwaway daemon rehearses a
     * successor's adoption, pause, export and abandon on tables of its own): no namespace, no TUN,
     * no listener. Its four fds are the ends of two AF_UNIX socket pairs in place of the namespace,
     * TUN queue 0 and the two listeners, so a {@code Nat} can be built, registered, paused, exported
     * and abandoned without touching the host or any namespace; nothing is read from or written to
     * them (the warm-up's loops never run). {@link #inProcess}: no helper. {@link #close} closes them.
     */
    public static Environment detached(int mtu, int slots) throws NativeIoException {
        int[] a = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
        int[] b;
        try {
            b = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
        } catch (NativeIoException | RuntimeException e) {
            Native.close(a[0]);
            Native.close(a[1]);
            throw e;
        }
        return new Environment(Fd.adopt(a[0]), new Fd[] {Fd.adopt(a[1])}, Fd.adopt(b[0]), Fd.adopt(b[1]), mtu, slots,
                null);
    }

    /** False when a helper process holds the namespace (that one cannot be handed over). */
    public boolean inProcess() {
        return helper == null;
    }

    @Override
    public void close() {
        listen4.close();
        listen6.close();
        for (int k = queues.length - 1; k >= 0; k--) {
            queues[k].close();
        }
        netns.close();
        if (helper != null) {
            helper.close();
        }
    }
}
