package warren.fish;

import com.google.protobuf.ByteString;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import warren.control.v1.Egress;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.linux.net.Netns;
import warren.netns.testing.TestNetwork;

/**
 * Fish's test world: an egress namespace with a veth to an "internet" namespace (default route
 * there, forwarding on, by default an nftables forward rule of its own), servers in the internet namespace (HTTP on :80 answering "you are
 * IP:PORT", UDP echo on :7), Fish running with the egress namespace, and client namespaces
 * (TUN + pump, one Egress each).
 */
final class Topology implements AutoCloseable {
    static final String SOFT = "198.18.202.5";
    static final String SOFT6 = "fd00:202::5";
    static final String PREFIXES = "198.18.202.0/24, fd00:202::/64";
    /** In the extra config: replaced by the server's address (known once the link is made). */
    static final String SERVER = "${server}";
    final TestNetwork net;
    final TestNetwork.Namespace egress;
    final TestNetwork.Namespace internet;
    final TestNetwork.Link link;
    final InetAddress server;
    final AutoCloseable fish; // a RunningDaemon, or a DaemonProcess (upgrade tests)
    final warren.daemon.testing.DaemonProcess process; // null when in-process
    final ControlClient control;
    private final ServerSocket http;
    private final DatagramSocket udp;
    private final ExecutorService pool = Executors.newCachedThreadPool();
    private final List<AutoCloseable> clients = new ArrayList<>();

    Topology(TestNetwork net, Path dir, String extraConfig) throws Exception {
        this(net, dir, extraConfig, false);
    }

    /** With {@code asProcess}, Fish runs as a real process (it can then be upgraded in place). */
    Topology(TestNetwork net, Path dir, String extraConfig, boolean asProcess) throws Exception {
        this(net, dir, extraConfig, asProcess, true);
    }

    /**
     * With {@code forwardRule} false the egress namespace is made as an operator would make it
     * (addresses, routes, forwarding, no nftables rule of its own).
     */
    Topology(TestNetwork net, Path dir, String extraConfig, boolean asProcess, boolean forwardRule) throws Exception {
        this(net, dir, extraConfig, asProcess, forwardRule, Main.spec());
    }

    /** In-process, built from {@code spec} (e.g. one that keeps its handler for the test). */
    Topology(TestNetwork net, Path dir, String extraConfig, warren.daemon.DaemonSpec spec) throws Exception {
        this(net, dir, extraConfig, false, true, spec);
    }

    private Topology(TestNetwork net, Path dir, String extraConfig, boolean asProcess, boolean forwardRule,
            warren.daemon.DaemonSpec spec) throws Exception {
        this.net = net;
        egress = net.namespace("egress");
        internet = net.namespace("internet");
        link = net.link(egress, internet);
        // as an operator would: forwarding on in the egress namespace (Fish checks it, never sets it)
        check(egress.exec("sysctl", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"));
        check(egress.exec("ip", "route", "add", "default", "via", link.v4b()));
        check(internet.exec("ip", "route", "add", SOFT + "/32", "via", link.v4a()));
        check(egress.exec("ip", "-6", "route", "add", "default", "via", link.v6b()));
        check(internet.exec("ip", "-6", "route", "add", SOFT6 + "/128", "via", link.v6a()));
        if (forwardRule) {
            check(egress.exec("nft", "add table inet t; add chain inet t forwarded { type filter hook forward priority 0; };"
                    + " add rule inet t forwarded ct state established,new accept"));
        }
        server = InetAddress.getByName(link.v4b());
        http = Netns.call("/run/netns/" + internet.name, () -> new ServerSocket(80, 64, server));
        udp = Netns.call("/run/netns/" + internet.name, () -> new DatagramSocket(7, server));
        pool.submit(() -> {
            while (true) {
                Socket s = http.accept();
                pool.submit(() -> {
                    try (s; InputStream in = s.getInputStream(); OutputStream out = s.getOutputStream()) {
                        in.read(new byte[4096]);
                        String body = "you are " + s.getInetAddress().getHostAddress() + ":" + s.getPort() + "\n";
                        out.write(("HTTP/1.1 200 OK\r\nContent-Length: " + body.length() + "\r\nConnection: close\r\n\r\n"
                                + body).getBytes(StandardCharsets.US_ASCII));
                        out.flush();
                        in.read(new byte[16]); // stay until the client closes (long-lived connections)
                    }
                    return null;
                });
            }
        });
        pool.submit(() -> {
            byte[] b = new byte[2048];
            while (true) {
                DatagramPacket p = new DatagramPacket(b, b.length);
                udp.receive(p);
                byte[] out = (new String(p.getData(), 0, p.getLength(), StandardCharsets.US_ASCII) + " from "
                        + p.getAddress().getHostAddress() + ":" + p.getPort()).getBytes(StandardCharsets.US_ASCII);
                udp.send(new DatagramPacket(out, out.length, p.getAddress(), p.getPort()));
            }
        });
        String conf = "audit.path = " + dir.resolve("audit.jsonl") + "\nfish.netns = /run/netns/" + egress.name + "\n"
                + (extraConfig.contains("fish.soft_unicast_prefixes") ? "" : "fish.soft_unicast_prefixes = " + PREFIXES + "\n")
                + extraConfig.replace(SERVER, link.v4b());
        Path ctl = dir.resolve("fish.sock");
        if (asProcess) {
            process = new warren.daemon.testing.DaemonProcess("fish", Main.class, ctl,
                    java.nio.file.Files.writeString(dir.resolve("fish.conf"), conf), dir.resolve("fish.log"));
            fish = process;
        } else {
            process = null;
            fish = new RunningDaemon(spec, ctl, conf);
        }
        control = ControlClient.connect(ctl);
    }

    private static void check(TestNetwork.Result r) {
        if (r.status() != 0) {
            throw new IllegalStateException(r.output());
        }
    }

    /** A client namespace with its own Egress (tenant, range); returns its namespace. */
    TestNetwork.Namespace client(String tenant, int first, int last, CompletableFuture<Reply> ended) throws Exception {
        return client(tenant, SOFT, first, last, ended);
    }

    TestNetwork.Namespace client(String tenant, String soft, int first, int last, CompletableFuture<Reply> ended)
            throws Exception {
        TestNetwork.Namespace ns = net.namespace("cl-" + tenant);
        Reply refused = egress(tenant, soft, first, last, ended, ns);
        if (refused != null) {
            throw new IllegalStateException("Egress refused: " + refused.response());
        }
        return ns;
    }

    /**
     * An Egress request; null once it is accepted (its client pumped from {@code ns}, or only held
     * open if that is null), else the refusal.
     */
    Reply egress(String tenant, String soft, int first, int last, CompletableFuture<Reply> ended, TestNetwork.Namespace ns)
            throws Exception {
        return egress(tenant, soft, first, last, ended, ns, false);
    }

    /** As above; with {@code vnet} the Egress declares vnet_hdr (its messages carry a virtio_net_hdr). */
    Reply egress(String tenant, String soft, int first, int last, CompletableFuture<Reply> ended, TestNetwork.Namespace ns,
            boolean vnet) throws Exception {
        return egress(tenant, soft, first, last, ended, ns, vnet, null);
    }

    /** As above; {@code queued} (may be null) writes to the client's end before Fish has the socket. */
    private Reply egress(String tenant, String soft, int first, int last, CompletableFuture<Reply> ended,
            TestNetwork.Namespace ns, boolean vnet, java.util.function.IntConsumer queued) throws Exception {
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
        CompletableFuture<Response> accepted = new CompletableFuture<>();
        if (queued != null) {
            queued.accept(sv[0]); // the client's end (borrowed)
        }
        try (Fd theirs = Fd.adopt(sv[1])) {
            CompletableFuture<Reply> r = control.call(Request.newBuilder().setEgress(Egress.newBuilder().setFdPackets(0)
                    .setSoftUnicastIp(ByteString.copyFrom(InetAddress.getByName(soft).getAddress()))
                    .setPortFirst(first).setPortLast(last).setTenant(tenant).setVnetHdr(vnet)), List.of(theirs),
                    accepted::complete);
            if (ended != null) {
                r.whenComplete((reply, e) -> ended.complete(reply));
            }
            CompletableFuture.anyOf(accepted, r).get(10, TimeUnit.SECONDS);
            if (!accepted.isDone()) {
                Native.close(sv[0]);
                return r.get();
            }
        }
        clients.add(ns == null ? Fd.adopt(sv[0]) : FishTest.clientPump(ns.name, Fd.adopt(sv[0]), vnet));
        return null;
    }

    /** An Egress on {@link #SOFT} with vnet_hdr whose packet socket (nonblocking) the test holds. */
    Fd rawVnetClient(String tenant, int first, int last) throws Exception {
        Reply refused = egress(tenant, SOFT, first, last, null, null, true);
        if (refused != null) {
            throw new IllegalStateException("Egress refused: " + refused.response());
        }
        return (Fd) clients.get(clients.size() - 1);
    }

    /**
     * As {@link #rawClient}, with the packets {@code queued} writes already in the socket when Fish
     * gets it: its first reads find them all (read batches of a known size).
     */
    Fd rawClientWithQueued(String tenant, int first, int last, java.util.function.IntConsumer queued) throws Exception {
        Reply refused = egress(tenant, SOFT, first, last, null, null, false, queued);
        if (refused != null) {
            throw new IllegalStateException("Egress refused: " + refused.response());
        }
        return (Fd) clients.get(clients.size() - 1);
    }

    /** An Egress on {@link #SOFT} whose packet socket (nonblocking) the test holds and writes raw packets to. */
    Fd rawClient(String tenant, int first, int last) throws Exception {
        Reply refused = egress(tenant, SOFT, first, last, null, null);
        if (refused != null) {
            throw new IllegalStateException("Egress refused: " + refused.response());
        }
        return (Fd) clients.get(clients.size() - 1);
    }

    Response status() throws Exception {
        try (Reply r = control.call(Request.newBuilder().setStatus(warren.control.v1.Status.getDefaultInstance()),
                List.of()).get(5, TimeUnit.SECONDS)) {
            return r.response();
        }
    }

    /** Stops every client's pump (Fish sees the packet sockets close and ends their Egress). */
    void endClients() throws Exception {
        for (AutoCloseable c : clients) {
            c.close();
        }
        clients.clear();
    }

    @Override
    public void close() throws Exception {
        endClients();
        control.close();
        fish.close();
        http.close();
        udp.close();
        pool.shutdownNow();
    }
}
