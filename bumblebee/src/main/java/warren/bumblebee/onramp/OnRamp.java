package warren.bumblebee.onramp;

import java.net.InetAddress;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
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
import warren.linux.net.Netns;
import warren.linux.net.Rtnetlink;
import warren.linux.net.Tun;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.PacketView;

/**
 * The on-ramp simulator: a client namespace whose default routes (IPv4 and IPv6) go to a TUN
 * device; a pump reads every packet there and sends it, one per message, on a SOCK_SEQPACKET
 * socket per 5-tuple to Bumblebee (Upgrade), as a front proxy receiving raw IP would, and writes
 * what comes back into the TUN. Programs in the client namespace (curl, iperf3) thus produce real
 * packets. Each Upgraded TCP socket goes to {@code onSocket}.
 *
 * <p>Client addresses: 198.18.50.1/24 and fd00:50::1/64 on {@code onramp0}.
 */
public final class OnRamp implements AutoCloseable {
    /** The client namespace's name (under /run/netns). */
    public final String client;
    private final ControlClient bumblebee;
    private final Consumer<Reply> onUpgraded;
    private final Fd tun;
    private final Epoll epoll = new Epoll(256);
    private final Map<FlowKey, Fd> flows = new java.util.concurrent.ConcurrentHashMap<>();
    private final Map<Long, Fd> byData = new java.util.concurrent.ConcurrentHashMap<>();
    private final Thread pump;
    private volatile boolean running = true;
    private final java.util.concurrent.atomic.AtomicLong nextData = new java.util.concurrent.atomic.AtomicLong(1);
    /** What went wrong on the pump thread (empty when all is well). */
    public final java.util.concurrent.ConcurrentLinkedQueue<Throwable> errors =
            new java.util.concurrent.ConcurrentLinkedQueue<>();

    /** An on-ramp in the existing namespace {@code clientNamespace} with a TUN of MTU 1500. */
    public OnRamp(String clientNamespace, ControlClient bumblebee, Consumer<Reply> onUpgraded) throws Exception {
        this(clientNamespace, 1500, bumblebee, onUpgraded);
    }

    public OnRamp(String clientNamespace, int mtu, ControlClient bumblebee, Consumer<Reply> onUpgraded) throws Exception {
        this.client = clientNamespace;
        this.bumblebee = bumblebee;
        this.onUpgraded = onUpgraded;
        this.tun = Netns.call("/run/netns/" + client, () -> {
            Fd fd = Tun.open("onramp0", true);
            int idx = Tun.index("onramp0");
            try (Rtnetlink rt = new Rtnetlink()) {
                rt.linkUp(idx, mtu, 10_000);
                rt.addAddress(idx, InetAddress.getByName("198.18.50.1"), 24);
                rt.addAddress(idx, InetAddress.getByName("fd00:50::1"), 64);
                rt.addRoute(InetAddress.getByName("0.0.0.0"), 0, idx);
                rt.addRoute(InetAddress.getByName("::"), 0, idx);
            }
            return fd;
        });
        epoll.add(tun.get(), Native.EPOLLIN, 0);
        pump = new Thread(this::run, "onramp-pump");
        pump.setDaemon(true);
        pump.start();
    }

    private void run() {
        ByteBuffer buf = ByteBuffer.allocateDirect(65600 + 64);
        Pointer p = Pointer.wrap(Native.RUNTIME, buf);
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
                        while ((len = Native.read(tun.get(), p, 65600)) > 0) {
                            if (view.parse(buf, 0, (int) len, key) != DropReason.NONE
                                    || (key.protocol != 6 && key.protocol != 17)) {
                                continue; // the simulator hands over TCP and UDP flows
                            }
                            Fd flow = flows.get(key);
                            if (flow == null) {
                                flow = open(new FlowKey().copyFrom(key));
                            }
                            Native.send(flow.get(), p, len, Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL);
                        }
                    } else {
                        Fd flow = byData.get(data);
                        long len;
                        while (flow != null && (len = Native.recv(flow.get(), p, 65600, Native.MSG_DONTWAIT)) > 0) {
                            Native.write(tun.get(), p, len);
                        }
                    }
                }
            }
        } catch (Throwable t) {
            errors.add(t);
        }
    }

    private Fd open(FlowKey key) throws Exception {
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
        Fd mine = Fd.adopt(sv[0]);
        try (Fd theirs = Fd.adopt(sv[1])) {
            long data = nextData.getAndIncrement();
            epoll.add(mine.get(), Native.EPOLLIN, data);
            flows.put(key, mine);
            byData.put(data, mine);
            CompletableFuture<Reply> f = bumblebee.call(Request.newBuilder().setUpgrade(Upgrade.newBuilder().setFdFlow(0)),
                    List.of(theirs));
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

    /**
     * Connects an existing flow socket (e.g. one handed to Bumblebee in a Downgrade) to the TUN:
     * packets the client kernel sends with 5-tuple {@code kernelSide} go to it, and what arrives
     * on it goes into the TUN.
     */
    public void attach(FlowKey kernelSide, Fd mine) throws Exception {
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
