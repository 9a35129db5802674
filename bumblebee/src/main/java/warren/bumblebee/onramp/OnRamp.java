package warren.bumblebee.onramp;

import java.net.InetAddress;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;
import jnr.ffi.Pointer;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Upgrade;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.fdpass.Fd;
import warren.fdpass.epoll.Epoll;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.linux.net.Netns;
import warren.linux.net.Rtnetlink;
import warren.linux.net.Tun;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.Ip;
import warren.packet.PacketView;
import warren.packet.VnetHdr;

/**
 * The on-ramp simulator: a client namespace whose default routes (IPv4 and IPv6) go to a TUN
 * device; a pump reads every packet there and sends it, one per message, on a SOCK_SEQPACKET
 * socket per 5-tuple to Bumblebee (Upgrade), as a front proxy receiving raw IP would, and writes
 * what comes back into the TUN. Programs in the client namespace (curl, iperf3) thus produce real
 * packets. Each Upgraded TCP socket goes to {@code onSocket}.
 *
 * <p><b>vnet mode</b> ({@code vnetHdr} true; issue 15): {@code onramp0} is opened with
 * IFF_VNET_HDR, a little-endian 10-byte virtio_net_hdr and every offload the kernel has
 * ({@link Tun#OFFLOADS_ALL}), so the client kernel's TCP hands the pump TSO super-packets of up to
 * 64 KiB (and takes them). Each flow's Upgrade declares {@code vnet_hdr}, and messages are pumped
 * unchanged both ways, header included: what a front proxy that passes its own TUN's messages
 * through does. Both ends of each flow socket get 4 MiB buffers (SO_SNDBUFFORCE/SO_RCVBUFFORCE as
 * root) so that several 64 KiB messages fit; in plain mode too (a 64 KiB super-packet from bb0 cut
 * for a plain flow is a burst of ~45 messages, which the default buffer dropped in part).
 *
 * <p><b>Checksums</b> ({@link #verifyChecksums}): the pump can check the transport (and IPv4
 * header) checksum of every TCP and UDP packet Bumblebee sends it before it goes into the TUN,
 * counting those checked and those wrong; a partial one (NEEDS_CSUM, vnet mode) must hold the
 * pseudo-header sum. Off by default (it costs the pump a pass over every byte).
 *
 * <p>Client addresses: 198.18.50.1/24 and fd00:50::1/64 on {@code onramp0}.
 */
public final class OnRamp implements AutoCloseable {
    /** SO_SNDBUFFORCE / SO_RCVBUFFORCE (asm-generic/socket.h): past wmem_max/rmem_max, needs CAP_NET_ADMIN. */
    private static final int SO_SNDBUFFORCE = 32;
    private static final int SO_RCVBUFFORCE = 33;
    /** Both buffers of a vnet flow socket: room for dozens of 64 KiB messages. */
    public static final int SOCKET_BUFFER = 4 << 20;
    private static final int H = VnetHdr.SIZE;
    private static final int BUFFER = VnetHdr.MAX_MESSAGE + 64;

    /** The client namespace's name (under /run/netns). */
    public final String client;
    private final ControlClient bumblebee;
    private final Consumer<Reply> onUpgraded;
    private final boolean vnetHdr;
    private final int offloads;
    private final Fd tun;
    private final Epoll epoll = new Epoll(256);
    private final Map<FlowKey, Fd> flows = new java.util.concurrent.ConcurrentHashMap<>();
    private final Map<Long, Fd> byData = new java.util.concurrent.ConcurrentHashMap<>();
    private final Thread pump;
    private volatile boolean running = true;
    private volatile boolean verify;
    private final AtomicLong nextData = new AtomicLong(1);
    private final AtomicLong checked = new AtomicLong();
    private final AtomicLong badChecksums = new AtomicLong();
    private final AtomicLong superPacketsFromTun = new AtomicLong();
    private final AtomicLong superPacketsToTun = new AtomicLong();
    /** What went wrong on the pump thread (empty when all is well). */
    public final java.util.concurrent.ConcurrentLinkedQueue<Throwable> errors =
            new java.util.concurrent.ConcurrentLinkedQueue<>();

    /** An on-ramp in the existing namespace {@code clientNamespace} with a TUN of MTU 1500. */
    public OnRamp(String clientNamespace, ControlClient bumblebee, Consumer<Reply> onUpgraded) throws Exception {
        this(clientNamespace, 1500, bumblebee, onUpgraded);
    }

    public OnRamp(String clientNamespace, int mtu, ControlClient bumblebee, Consumer<Reply> onUpgraded) throws Exception {
        this(clientNamespace, mtu, false, bumblebee, onUpgraded);
    }

    /**
     * An on-ramp in plain or ({@code vnetHdr} true) vnet mode (see the class comment): the client
     * kernel's super-packets cross to Bumblebee whole, each flow upgraded with {@code vnet_hdr}.
     */
    public OnRamp(String clientNamespace, int mtu, boolean vnetHdr, ControlClient bumblebee,
            Consumer<Reply> onUpgraded) throws Exception {
        this.client = clientNamespace;
        this.bumblebee = bumblebee;
        this.onUpgraded = onUpgraded;
        this.vnetHdr = vnetHdr;
        int[] set = new int[1];
        this.tun = Netns.call("/run/netns/" + client, () -> {
            Fd fd = Tun.open("onramp0", true, vnetHdr);
            try {
                if (vnetHdr) {
                    Tun.enableVnetHdr(fd);
                    set[0] = Tun.setOffload(fd, Tun.OFFLOADS_ALL);
                }
                int idx = Tun.index("onramp0");
                try (Rtnetlink rt = new Rtnetlink()) {
                    rt.linkUp(idx, mtu, 10_000);
                    rt.addAddress(idx, InetAddress.getByName("198.18.50.1"), 24);
                    rt.addAddress(idx, InetAddress.getByName("fd00:50::1"), 64);
                    rt.addRoute(InetAddress.getByName("0.0.0.0"), 0, idx);
                    rt.addRoute(InetAddress.getByName("::"), 0, idx);
                }
                return fd;
            } catch (Exception | Error e) {
                fd.close();
                throw e;
            }
        });
        this.offloads = set[0];
        epoll.add(tun.get(), Native.EPOLLIN, 0);
        pump = new Thread(this::run, "onramp-pump");
        pump.setDaemon(true);
        pump.start();
    }

    /** True in vnet mode: every message carries a virtio_net_hdr and flows are upgraded with {@code vnet_hdr}. */
    public boolean vnetHdr() {
        return vnetHdr;
    }

    /** The TUN_F_* offloads onramp0 got (vnet mode), 0 in plain mode. */
    public int offloads() {
        return offloads;
    }

    /** From now on, checks the checksums of every TCP and UDP packet from Bumblebee ({@link #checked}, {@link #badChecksums}). */
    public OnRamp verifyChecksums() {
        verify = true;
        return this;
    }

    /** Packets from Bumblebee whose checksums were checked. */
    public long checked() {
        return checked.get();
    }

    /** Packets from Bumblebee with a wrong transport or IPv4 header checksum (or a partial one that is not the pseudo-header sum). */
    public long badChecksums() {
        return badChecksums.get();
    }

    /** Super-packets (gso_type not NONE) read from onramp0 and sent to Bumblebee (vnet mode). */
    public long superPacketsFromTun() {
        return superPacketsFromTun.get();
    }

    /** Flow sockets the pump still watches: a flow Bumblebee closed is no longer watched. */
    public int watched() {
        return byData.size();
    }

    /** Super-packets from Bumblebee written into onramp0 (vnet mode). */
    public long superPacketsToTun() {
        return superPacketsToTun.get();
    }

    private void run() {
        ByteBuffer buf = ByteBuffer.allocateDirect(BUFFER);
        Pointer p = Pointer.wrap(Native.RUNTIME, buf);
        int h = vnetHdr ? H : 0; // where the packet starts in a message
        PacketView view = new PacketView();
        FlowKey key = new FlowKey();
        try {
            while (running) {
                int n = epoll.await(100);
                for (int i = 0; i < n; i++) {
                    long data = epoll.data(i);
                    if (data == Epoll.WAKEUP) {
                        epoll.drainWakeup();
                    } else if (data == 0) {
                        long len;
                        while ((len = Native.read(tun.get(), p, BUFFER)) > 0) {
                            if (len < h || view.parse(buf, h, (int) len - h, key) != DropReason.NONE
                                    || (key.protocol != 6 && key.protocol != 17)) {
                                continue; // the simulator hands over TCP and UDP flows
                            }
                            Fd flow = flows.get(key);
                            if (flow == null) {
                                flow = open(new FlowKey().copyFrom(key));
                            }
                            if (vnetHdr && VnetHdr.isGso(buf, 0)) {
                                superPacketsFromTun.incrementAndGet();
                            }
                            Native.send(flow.get(), p, len, Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL);
                        }
                    } else {
                        Fd flow = byData.get(data);
                        long len = Native.WOULD_BLOCK;
                        while (flow != null && (len = Native.recv(flow.get(), p, BUFFER, Native.MSG_DONTWAIT)) > 0) {
                            if (verify && len > h) {
                                check(buf, h, (int) len - h, view, key);
                            }
                            if (Native.write(tun.get(), p, len) == len && vnetHdr && VnetHdr.isGso(buf, 0)) {
                                superPacketsToTun.incrementAndGet();
                            }
                        }
                        if (flow != null && len != Native.WOULD_BLOCK) {
                            // Bumblebee closed the flow (0: end of file) or it failed: stop watching it, or
                            // epoll reports it readable forever and this thread spins (~0.7 CPU per second
                            // once a flow had ended, measured by the pasta-baseline work). The fd stays in
                            // flows (a late packet of its 5-tuple is lost, as before) and closes with the ramp.
                            epoll.remove(flow.get());
                            byData.remove(data);
                        }
                    }
                }
            }
        } catch (Throwable t) {
            errors.add(t);
        }
    }

    /** The checksums of the packet at {@code h} (its virtio_net_hdr at 0 in vnet mode), counted. */
    private void check(ByteBuffer buf, int h, int len, PacketView view, FlowKey key) {
        if (view.parse(buf, h, len, key) != DropReason.NONE || (key.protocol != Ip.TCP && key.protocol != Ip.UDP)) {
            return;
        }
        boolean partial = h > 0 && VnetHdr.needsCsum(buf, 0);
        boolean ok = view.ipChecksumOk() && (partial ? view.storedL4Checksum() == view.pseudoHeaderChecksum()
                : view.storedL4Checksum() == view.computeL4Checksum());
        checked.incrementAndGet();
        if (!ok) {
            badChecksums.incrementAndGet();
        }
    }

    private Fd open(FlowKey key) throws Exception {
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
        Fd mine = Fd.adopt(sv[0]);
        try (Fd theirs = Fd.adopt(sv[1])) {
            buffers(mine); // both modes: a front proxy sizes them for bursts (TunPump does the same)
            buffers(theirs);
            long data = nextData.getAndIncrement();
            epoll.add(mine.get(), Native.EPOLLIN, data);
            flows.put(key, mine);
            byData.put(data, mine);
            CompletableFuture<Reply> f = bumblebee.call(Request.newBuilder().setUpgrade(Upgrade.newBuilder().setFdFlow(0)
                    .setVnetHdr(vnetHdr)), List.of(theirs));
            f.whenComplete((r, e) -> {
                if (r != null && r.response().getBodyCase() == Response.BodyCase.UPGRADED) {
                    onUpgraded.accept(r);
                } else if (r != null) {
                    r.close();
                }
            });
        }
        return mine;
    }

    /** Both buffers of a flow socket to {@link #SOCKET_BUFFER}: FORCE as root, else capped. */
    private static void buffers(Fd s) throws NativeIoException {
        for (int[] opt : new int[][] {{SO_SNDBUFFORCE, Native.SO_SNDBUF}, {SO_RCVBUFFORCE, Native.SO_RCVBUF}}) {
            try {
                Native.setsockoptInt(s.get(), Native.SOL_SOCKET, opt[0], SOCKET_BUFFER);
            } catch (NativeIoException e) { // EPERM: not root
                Native.setsockoptInt(s.get(), Native.SOL_SOCKET, opt[1], SOCKET_BUFFER);
            }
        }
    }

    /**
     * Connects an existing flow socket (e.g. one handed to Bumblebee in a Downgrade) to the TUN:
     * packets the client kernel sends with 5-tuple {@code kernelSide} go to it, and what arrives
     * on it goes into the TUN. Plain mode only (a downgraded flow carries no virtio_net_hdr).
     */
    public void attach(FlowKey kernelSide, Fd mine) throws Exception {
        if (vnetHdr) {
            throw new IllegalStateException("a downgraded flow is plain: attach it to a plain on-ramp");
        }
        long data = nextData.getAndIncrement();
        flows.put(kernelSide, mine);
        byData.put(data, mine);
        epoll.add(mine.get(), Native.EPOLLIN, data);
    }

    public int flowCount() {
        return flows.size();
    }

    @Override
    public void close() throws Exception {
        running = false;
        epoll.wakeup();
        pump.join(5000);
        flows.values().forEach(Fd::close);
        tun.close();
        epoll.close();
    }
}
