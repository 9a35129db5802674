package warren.fish;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Egress;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.linux.net.Netns;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;

/**
 * Fish end to end: client namespace (TUN, one packet socket to Fish) -> Fish's egress namespace
 * -> veth -> an "internet" namespace with real servers, which must see the soft-unicast IP and a
 * port of the tenant's range.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class FishTest {
    static final String SOFT = "198.18.202.5";
    @TempDir
    Path dir;
    private final ExecutorService pool = Executors.newCachedThreadPool();

    @AfterEach
    void tearDown() {
        pool.shutdownNow();
    }

    /** The client side: a TUN as the default route, pumped to and from one packet socket. */
    static warren.netns.TunPump clientPump(String ns, Fd mine) throws Exception {
        return clientPump(ns, mine, false);
    }

    /** With {@code vnet}, the pump's TUN gives and takes super-packets behind a virtio_net_hdr (Egress.vnet_hdr). */
    static warren.netns.TunPump clientPump(String ns, Fd mine, boolean vnet) throws Exception {
        return new warren.netns.TunPump("/run/netns/" + ns, "cl0", 1500, List.of("198.18.60.1/24", "fd00:60::1/64"), mine,
                vnet);
    }

    @Test
    void tcpUdpAndPingReachTheInternetFromTheSoftUnicastIpAndARangePort(TestNetwork net) throws Exception {
        TestNetwork.Namespace client = net.namespace("client");
        TestNetwork.Namespace egress = net.namespace("egress");
        TestNetwork.Namespace internet = net.namespace("internet");
        TestNetwork.Link link = net.link(egress, internet);
        assertEquals(0, egress.exec("sysctl", "-w", "net.ipv4.ip_forward=1").status());
        assertEquals(0, egress.exec("ip", "route", "add", "default", "via", link.v4b()).status());
        assertEquals(0, internet.exec("ip", "route", "add", SOFT + "/32", "via", link.v4a()).status());
        assertEquals(0, egress.exec("nft", "add table inet t; add chain inet t forwarded { type filter hook forward priority 0; };"
                + " add rule inet t forwarded ct state established,new accept").status(), "conntrack active in the egress namespace");
        InetAddress server = InetAddress.getByName(link.v4b());
        ServerSocket http = Netns.call("/run/netns/" + internet.name, () -> new ServerSocket(80, 16, server));
        DatagramSocket udp = Netns.call("/run/netns/" + internet.name, () -> new DatagramSocket(7, server));
        pool.submit(() -> {
            while (true) {
                try (Socket s = http.accept(); InputStream in = s.getInputStream(); OutputStream out = s.getOutputStream()) {
                    in.read(new byte[4096]);
                    String body = "you are " + s.getInetAddress().getHostAddress() + ":" + s.getPort() + "\n";
                    out.write(("HTTP/1.1 200 OK\r\nContent-Length: " + body.length() + "\r\nConnection: close\r\n\r\n"
                            + body).getBytes(StandardCharsets.US_ASCII));
                }
            }
        });
        pool.submit(() -> {
            byte[] b = new byte[2048];
            while (true) {
                DatagramPacket p = new DatagramPacket(b, b.length);
                udp.receive(p);
                String echo = new String(p.getData(), 0, p.getLength(), StandardCharsets.US_ASCII) + " from "
                        + p.getAddress().getHostAddress() + ":" + p.getPort();
                byte[] out = echo.getBytes(StandardCharsets.US_ASCII);
                udp.send(new DatagramPacket(out, out.length, p.getAddress(), p.getPort()));
            }
        });
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("fish.sock"),
                "audit.path = " + dir.resolve("audit.jsonl") + "\nfish.netns = /run/netns/" + egress.name + "\n"
                        + "fish.soft_unicast_prefixes = 198.18.202.0/24\n");
                ControlClient c = ControlClient.connect(d.control)) {
            int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
            CompletableFuture<Response> accepted = new CompletableFuture<>();
            CompletableFuture<Reply> ended;
            try (Fd theirs = Fd.adopt(sv[1])) {
                ended = c.call(Request.newBuilder().setEgress(Egress.newBuilder().setFdPackets(0)
                        .setSoftUnicastIp(ByteString.copyFrom(InetAddress.getByName(SOFT).getAddress()))
                        .setPortFirst(20000).setPortLast(20009).setTenant("a")), List.of(theirs), accepted::complete);
            }
            accepted.get(10, TimeUnit.SECONDS);
            try (warren.netns.TunPump pump = clientPump(client.name, Fd.adopt(sv[0]))) {
                TestNetwork.Result res = client.exec("curl", "-sS", "--max-time", "10", "http://" + link.v4b() + "/");
                assertEquals(0, res.status(), res.output() + "\n" + net.dump());
                assertTrue(res.output().startsWith("you are " + SOFT + ":200"), res.output());
                int port = Integer.parseInt(res.output().strip().substring(res.output().lastIndexOf(':') + 1));
                assertTrue(port >= 20000 && port <= 20009, "port " + port + " inside the tenant's range");

                try (DatagramSocket s = Netns.call("/run/netns/" + client.name, () -> new DatagramSocket())) {
                    s.setSoTimeout(5000);
                    byte[] msg = "ping over udp".getBytes(StandardCharsets.US_ASCII);
                    s.send(new DatagramPacket(msg, msg.length, server, 7));
                    DatagramPacket got = new DatagramPacket(new byte[256], 256);
                    s.receive(got);
                    String text = new String(got.getData(), 0, got.getLength(), StandardCharsets.US_ASCII);
                    assertTrue(text.startsWith("ping over udp from " + SOFT + ":200"), text);
                }

                TestNetwork.Result ping = client.exec("ping", "-c", "2", "-W", "2", link.v4b());
                assertEquals(0, ping.status(), ping.output());

                // a live connection's reservation is in conntrack, with the soft-unicast IP and a range port
                Socket live = Netns.call("/run/netns/" + client.name, () -> {
                    Socket s = new Socket();
                    s.connect(new InetSocketAddress(server, 80), 5000);
                    return s;
                });
                String table = egress.exec("conntrack", "-L").output();
                assertTrue(table.matches("(?s).*src=" + SOFT.replace(".", "\\.") + " dst=" + link.v4b().replace(".", "\\.")
                        + " sport=200\\d\\d dport=80.*"), table);
                // List: the client's traffic each way and its live flows' tuples, as sent and as they left
                try (Reply r = c.call(Request.newBuilder().setList(warren.control.v1.List.getDefaultInstance()),
                        List.of()).get(5, TimeUnit.SECONDS)) {
                    warren.control.v1.TaskInfo t = r.response().getListing().getTasks(0);
                    assertEquals("egress", t.getKind(), t.toString());
                    assertTrue(t.getPacketsOut() > 5 && t.getPacketsIn() > 5 && t.getBytesOut() > 0 && t.getBytesIn() > 0,
                            t.toString());
                    ByteString soft = ByteString.copyFrom(InetAddress.getByName(SOFT).getAddress());
                    assertTrue(t.getTuplesList().stream().anyMatch(tu -> tu.getProtocol() == 6 && tu.getSrcIp().equals(soft)
                            && tu.getSrcPort() >= 20000 && tu.getSrcPort() <= 20009 && tu.getDstPort() == 80), t.toString());
                    assertTrue(t.getTuplesList().stream().anyMatch(tu -> tu.getProtocol() == 6 && !tu.getSrcIp().equals(soft)
                            && tu.getDstPort() == 80), t.toString());
                }
                live.close();
            }
            try (Reply r = ended.get(20, TimeUnit.SECONDS)) {
                assertEquals(Response.BodyCase.EGRESS_ENDED, r.response().getBodyCase(), r.toString());
                assertTrue(r.response().getEgressEnded().getPacketsOut() > 5, r.toString());
            }
            assertTrue(!egress.exec("conntrack", "-L").output().contains("src=" + SOFT), "reservations removed");
        } finally {
            http.close();
            udp.close();
        }
    }

    @Test
    void spoofedRangesAreRefused(TestNetwork net) throws Exception {
        TestNetwork.Namespace egress = net.namespace("egress");
        assertEquals(0, egress.exec("sysctl", "-w", "net.ipv4.ip_forward=1").status());
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("fish.sock"),
                "audit.path = /dev/null\nfish.netns = /run/netns/" + egress.name + "\nfish.soft_unicast_prefixes = "
                        + "198.18.202.0/24\n");
                ControlClient c = ControlClient.connect(d.control)) {
            int[][] ranges = {{100, 99}, {0, 10}, {1, 70000}, {30000, 30010}, {30005, 30020}};
            Error.Code[] want = {Error.Code.INVALID_ARGUMENT, Error.Code.INVALID_ARGUMENT, Error.Code.INVALID_ARGUMENT,
                null, Error.Code.INVALID_ARGUMENT};
            List<Fd> keep = new java.util.ArrayList<>(); // live clients stay live: the overlap is with a running tenant
            for (int i = 0; i < ranges.length; i++) {
                int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
                keep.add(Fd.adopt(sv[0]));
                try (Fd theirs = Fd.adopt(sv[1])) {
                    CompletableFuture<Response> accepted = new CompletableFuture<>();
                    CompletableFuture<Reply> r = c.call(Request.newBuilder().setEgress(Egress.newBuilder().setFdPackets(0)
                            .setSoftUnicastIp(ByteString.copyFrom(InetAddress.getByName(SOFT).getAddress()))
                            .setPortFirst(ranges[i][0]).setPortLast(ranges[i][1]).setTenant("t" + i)), List.of(theirs),
                            accepted::complete);
                    if (want[i] == null) {
                        accepted.get(10, TimeUnit.SECONDS); // a valid range: the task runs
                    } else {
                        try (Reply reply = r.get(10, TimeUnit.SECONDS)) {
                            assertEquals(want[i], reply.response().getError().getCode(), reply.toString());
                        }
                    }
                }
            }
            Fd.closeAll(keep);
        }
    }
}
