package warren.soak;

import com.google.protobuf.ByteString;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.ConnectException;
import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import warren.control.v1.Egress;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.linux.net.Netns;
import warren.netns.TunPump;
import warren.netns.testing.TestNetwork;

/**
 * TCP and UDP flows through Fish to an "internet" namespace (as fish/Topology: an egress
 * namespace with forwarding on and a conntrack-active forward rule, a veth to the internet
 * namespace, which routes the soft-unicast IP back): a client namespace (TUN + pump, one Egress,
 * tenant "soak", ports 20000-29999) streams to a TCP echo server and trades datagrams with a UDP
 * echo server there. A second client ("burst", 8 ports) is the one whose range a burst exhausts.
 */
final class FishLoad extends Load {
    static final int TCP = 3;
    static final int UDP = 2;
    static final String SOFT = "198.18.202.5";
    static final int BURST_PORTS = 8;
    private final TestNetwork.Namespace egress;
    private final TestNetwork.Namespace internet;
    private final TestNetwork.Namespace client;
    private final TestNetwork.Namespace burstClient;
    private final InetAddress server;
    private final ServerSocket tcpEcho;
    private final DatagramSocket udpEcho;
    private final List<TunPump> pumps = new ArrayList<>();
    private final List<CompletableFuture<Reply>> egresses = new ArrayList<>();
    private ControlClient control;
    private NetFlows flows;

    FishLoad(TestNetwork net, Ledger ledger, long seed) throws Exception {
        super("fish", ledger, seed);
        egress = net.namespace("egress");
        internet = net.namespace("internet");
        client = net.namespace("fishcl");
        burstClient = net.namespace("fishburst");
        TestNetwork.Link link = net.link(egress, internet);
        check(egress.exec("sysctl", "-w", "net.ipv4.ip_forward=1"));
        check(egress.exec("ip", "route", "add", "default", "via", link.v4b()));
        check(internet.exec("ip", "route", "add", SOFT + "/32", "via", link.v4a()));
        check(egress.exec("nft", "add table inet t; add chain inet t forwarded { type filter hook forward priority 0; };"
                + " add rule inet t forwarded ct state established,new accept"));
        server = InetAddress.getByName(link.v4b());
        tcpEcho = Netns.call("/run/netns/" + internet.name, () -> new ServerSocket(9000, 128, server));
        udpEcho = Netns.call("/run/netns/" + internet.name, () -> new DatagramSocket(7, server));
        io.submit(() -> {
            while (true) {
                Socket s = tcpEcho.accept();
                io.submit(() -> {
                    try (s; InputStream in = s.getInputStream(); OutputStream out = s.getOutputStream()) {
                        in.transferTo(out);
                        s.shutdownOutput();
                    }
                    return null;
                });
            }
        });
        io.submit(() -> {
            byte[] b = new byte[2048];
            while (true) {
                DatagramPacket p = new DatagramPacket(b, b.length);
                udpEcho.receive(p);
                udpEcho.send(new DatagramPacket(p.getData(), p.getLength(), p.getAddress(), p.getPort()));
            }
        });
    }

    private static void check(TestNetwork.Result r) {
        if (r.status() != 0) {
            throw new IllegalStateException(r.output());
        }
    }

    /** The name of the egress namespace (for fish.netns, as the booted system sees it). */
    String egressNamespace() {
        return egress.name;
    }

    /** Connects to Fish (socket activation) and starts both clients' Egress. */
    void begin(Path sock) throws Exception {
        control = ControlClient.connect(sock);
        control.onUnmatched(r -> ledger.fail("fish: an answer to no request in flight (answered twice?): " + r));
        egress(client, "soak", 20_000, 29_999);
        egress(burstClient, "burst", 30_000, 30_000 + BURST_PORTS - 1);
        flows = new NetFlows(daemon, client.name, "198.18.60.1", 40_000, ledger, io);
    }

    private void egress(TestNetwork.Namespace ns, String tenant, int first, int last) throws Exception {
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
        Fd mine = Fd.adopt(sv[0]);
        CompletableFuture<Response> accepted = new CompletableFuture<>();
        try (Fd theirs = Fd.adopt(sv[1])) {
            egresses.add(control.call(Request.newBuilder().setEgress(Egress.newBuilder().setFdPackets(0)
                    .setSoftUnicastIp(ByteString.copyFrom(InetAddress.getByName(SOFT).getAddress()))
                    .setPortFirst(first).setPortLast(last).setTenant(tenant)), List.of(theirs), accepted::complete));
            accepted.get(60, TimeUnit.SECONDS);
            pumps.add(new TunPump("/run/netns/" + ns.name, "cl0", 1500, List.of("198.18.60.1/24", "fd00:60::1/64"), mine));
        } catch (Exception e) {
            mine.close();
            throw e;
        }
    }

    @Override
    void warmUp() throws Exception {
        for (String out : List.of(flows.tcp(new InetSocketAddress(server, 9000), data(0)),
                flows.udp(new InetSocketAddress(server, 7), data(1)))) {
            if (!out.equals("ok")) {
                throw new IllegalStateException("the warm-up flows: " + out);
            }
        }
    }

    @Override
    void start() {
        workers("tcp", TCP, n -> flows.tcp(new InetSocketAddress(server, 9000), data(n)));
        workers("udp", UDP, n -> flows.udp(new InetSocketAddress(server, 7), data(n)));
    }

    /**
     * TCP connections from the burst client (8 ports) held open until one is refused: Fish answers
     * the SYN of a flow with no free port with a RST, connect(2) fails with ECONNREFUSED. Ports of
     * the previous burst may still be held (fish.tcp_close_timeout), so fewer than 8 may connect.
     */
    @Override
    String burst() throws Exception {
        long h = ledger.openBurst(daemon);
        List<Socket> held = new ArrayList<>();
        String refusal = null;
        try {
            for (int i = 0; i < 4 * BURST_PORTS && refusal == null; i++) {
                Socket s = Netns.call("/run/netns/" + burstClient.name, () -> {
                    Socket x = new Socket();
                    x.bind(new InetSocketAddress(InetAddress.getByName("198.18.60.1"), 0));
                    return x;
                });
                try {
                    s.connect(new InetSocketAddress(server, 9000), 10_000);
                    held.add(s);
                } catch (ConnectException e) {
                    refusal = "connect(2): " + e.getMessage();
                    s.close();
                } catch (IOException e) {
                    s.close();
                    ledger.fail("fish burst: connection " + (i + 1) + ": " + e);
                    refusal = e.toString();
                }
            }
        } finally {
            for (Socket s : held) {
                s.close();
            }
            ledger.closeBurst(h);
        }
        if (refusal == null) {
            ledger.fail("fish burst: " + held.size() + " connections on " + BURST_PORTS + " ports, never refused");
            return "never refused";
        }
        return held.size() + " connections on a range of " + BURST_PORTS + " ports, then " + refusal;
    }

    @Override
    void finish() throws Exception {
        stop();
        for (TunPump p : pumps) {
            p.close(); // the client goes: Fish answers its Egress, once
        }
        for (CompletableFuture<Reply> e : egresses) {
            try (Reply r = e.get(60, TimeUnit.SECONDS)) {
                if (!r.response().hasEgressEnded()) {
                    ledger.fail("fish: an Egress ended with " + r.response());
                }
            } catch (java.util.concurrent.TimeoutException t) {
                ledger.fail("fish: an Egress was not answered 60 s after its client went");
            }
        }
        if (control.inFlight() != 0) {
            ledger.fail("fish: " + control.inFlight() + " requests without an answer");
        }
        control.close();
        tcpEcho.close();
        udpEcho.close();
    }
}
