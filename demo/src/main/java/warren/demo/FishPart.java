package warren.demo;

import com.google.protobuf.ByteString;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import warren.control.v1.Egress;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.daemon.client.ControlClient;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.linux.net.Netns;
import warren.netns.TunPump;
import warren.netns.ip.IpNetns;

/**
 * Fish's part: an egress namespace joined by a veth to an "internet" namespace (an HTTP server
 * answering "you are IP:PORT", an echo on port 9000); Fish as its own process, serving the egress
 * namespace; a tenant namespace whose default route is a TUN pumped to one packet socket handed
 * to Fish in an Egress request (soft-unicast IP {@value #SOFT}, ports {@value #FIRST}-{@value #LAST}).
 * The tenant's curl and ping must leave from the soft-unicast IP and a port of the range, and
 * {@code conntrack -L} in the egress namespace shows the reservation.
 */
final class FishPart extends Part {
    static final String SOFT = "198.18.202.5";
    static final int FIRST = 20000;
    static final int LAST = 20099;
    private static final String EGRESS_IP = "198.18.203.1";
    private static final String SERVER = "198.18.203.2";
    private DaemonRun fish;
    private String egress;
    private String internet;
    private String tenant;
    private ControlClient control;
    private TunPump pump;
    private HttpServer http;
    private ServerSocket echo;

    FishPart(PrintStream out, Path dir, IpNetns netns) {
        super("fish", out, dir, netns);
    }

    @Override
    String cannotRun() {
        return Demo.missing("ip", "curl", "ping", "conntrack", "nft");
    }

    @Override
    void start() throws Exception {
        egress = netns.add("fish-egress");
        internet = netns.add("internet");
        tenant = netns.add("tenant");
        IpNetns.veth(egress, "eg0", EGRESS_IP + "/24", internet, "in0", SERVER + "/24");
        IpNetns.sh("ip", "-n", egress, "route", "add", "default", "via", SERVER);
        IpNetns.sh("ip", "-n", internet, "route", "add", SOFT + "/32", "via", EGRESS_IP);
        // what an operator sets up in the egress namespace: forwarding (a sysctl of that namespace only) and
        // forwarding is the operator's to turn on in the egress namespace (Fish checks it); Fish makes
        // connection tracking active there itself (its own nftables table), so no rule is added here
        IpNetns.sh("ip", "netns", "exec", egress, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1");
        String config = "fish.netns = /run/netns/" + egress + "\n"
                + "fish.soft_unicast_prefixes = 198.18.202.0/24\n" // the soft-unicast IPs this Fish may serve
                + "fish.tcp_timeout = 3s\nfish.tcp_close_timeout = 1s\n"; // a closed flow's end shows within seconds
        fish = new DaemonRun(name(), "warren.fish.Main", dir, config);
    }

    @Override
    void job(Checks checks) throws Exception {
        out.println("\n== Fish: a tenant's curl and ping egress from a soft-unicast IP");
        http = Netns.call("/run/netns/" + internet, () -> HttpServer.create(new InetSocketAddress(SERVER, 80), 16));
        http.createContext("/", ex -> {
            InetSocketAddress peer = ex.getRemoteAddress();
            byte[] body = ("you are " + peer.getAddress().getHostAddress() + ":" + peer.getPort() + "\n")
                    .getBytes(StandardCharsets.US_ASCII);
            ex.sendResponseHeaders(200, body.length);
            try (OutputStream o = ex.getResponseBody()) {
                o.write(body);
            }
        });
        http.setExecutor(pool);
        http.start();
        fish.awaitReady(30);
        control = ControlClient.connect(fish.control);
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
        CompletableFuture<Response> accepted = new CompletableFuture<>();
        try (Fd theirs = Fd.adopt(sv[1])) {
            control.call(Request.newBuilder().setEgress(Egress.newBuilder().setFdPackets(0)
                    .setSoftUnicastIp(ByteString.copyFrom(InetAddress.getByName(SOFT).getAddress()))
                    .setPortFirst(FIRST).setPortLast(LAST).setTenant("acme")), List.of(theirs), accepted::complete);
        }
        accepted.get(10, TimeUnit.SECONDS);
        pump = new TunPump("/run/netns/" + tenant, "cl0", 1500, List.of("198.18.60.1/24"), Fd.adopt(sv[0]));
        out.println("fish      pid " + fish.pid() + ", egress namespace " + egress + " (" + EGRESS_IP
                + " on eg0, default route to the internet namespace), control socket " + fish.control);
        out.println("internet  namespace " + internet + ": " + SERVER + ", HTTP :80 answers \"you are IP:PORT\","
                + " a route back to " + SOFT + " only");
        out.println("tenant    namespace " + tenant + ": 198.18.60.1/24 on the TUN cl0 (default route), its packets"
                + " on one socket handed to Fish: tenant acme, soft-unicast IP " + SOFT + ", ports " + FIRST + "-" + LAST);
        out.println("-- clients (in the tenant namespace)");
        IpNetns.Result curl = IpNetns.run(tenant, "curl", "-sS", "--max-time", "10", "http://" + SERVER + "/");
        out.printf("curl http://%s/   %s%n", SERVER, curl.output().strip());
        IpNetns.Result ping = IpNetns.run(tenant, "ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER);
        List<String> pl = ping.output().strip().lines().toList();
        out.printf("ping -c 2 %s  %s%n", SERVER, pl.isEmpty() ? "" : pl.get(pl.size() > 1 ? pl.size() - 2 : 0));
        String table;
        try (Socket live = connectIn(tenant, new InetSocketAddress(SERVER, 80))) {
            table = IpNetns.exec(egress, "sh", "-c", "conntrack -L 2>/dev/null");
            out.println("-- conntrack -L in the egress namespace (a live connection from the tenant open; shortened)");
            table.lines().filter(l -> l.contains(SOFT)).map(l -> l.replaceAll("\\s+", " ").replaceAll(" mark=\\S+ use=\\S+", ""))
                    .forEach(out::println);
        }
        List<String> lines = Audit.await(fish.audit, l -> Audit.count(l, "flow_start") >= 3, 10);
        out.println("-- Fish's audit lines (shortened; in full: " + fish.audit.getFileName() + ")");
        lines.forEach(l -> out.println(Audit.shorten(l)));
        out.println("-- checks");
        int port = port(curl.output(), "you are " + Pattern.quote(SOFT) + ":(\\d+)");
        checks.check(curl.status() == 0 && port >= FIRST && port <= LAST,
                "the server saw the soft-unicast IP " + SOFT + " and port " + port + " of the tenant's range");
        checks.check(ping.status() == 0, "ping answered through Fish (" + (ping.status() == 0 ? "2 of 2" : "failed") + ")");
        int reserved = port(table, "tcp .*ESTABLISHED src=" + Pattern.quote(SOFT) + " dst=" + Pattern.quote(SERVER) + " sport=(\\d+) dport=80 ");
        checks.check(reserved >= FIRST && reserved <= LAST, "conntrack holds the live connection's reservation: "
                + SOFT + ":" + reserved + " -> " + SERVER + ":80");
        checks.check(Audit.count(lines, "start") == 1 && Audit.count(lines, "flow_start") >= 3,
                "the tenant's Egress task and each of its flows audited");
    }

    @Override
    void upgrade(Checks checks) throws Exception {
        out.println("\n== Fish upgraded in place while a transfer runs through it");
        echo = Netns.call("/run/netns/" + internet, () -> new ServerSocket(9000, 16, InetAddress.getByName(SERVER)));
        Transfer.echo(echo, pool);
        Socket s = connectIn(tenant, new InetSocketAddress(SERVER, 9000));
        out.println("client " + s.getLocalAddress().getHostAddress() + ":" + s.getLocalPort() + " (tenant) -> Fish -> "
                + SERVER + ":9000 (echo, internet namespace)");
        Transfer t = new Transfer(s, 3);
        int before = reservation9000();
        int[] after = new int[1];
        Upgrades.run(out, checks, fish, t, () -> after[0] = reservation9000());
        out.println("conntrack " + SOFT + ":" + before + " -> " + SERVER + ":9000 before the upgrade, " + SOFT + ":"
                + after[0] + " after");
        checks.check(before >= FIRST && before <= LAST && before == after[0],
                "the same conntrack reservation before and after: the egress 5-tuple did not change");
        String flow = SERVER + ":9000";
        List<String> lines = Audit.await(fish.audit, l -> l.stream().anyMatch(x -> x.contains(flow)
                && x.contains("\"event\":\"flow_end\"")), 10);
        out.println("-- the flow's audit lines: reserved by the old process, ended by the new one");
        lines.stream().filter(x -> x.contains(flow)).forEach(x -> out.println(Audit.shorten(x)));
        checks.check(lines.stream().filter(x -> x.contains(flow) && x.contains("\"event\":\"flow_start\"")).count() == 1
                && lines.stream().filter(x -> x.contains(flow) && x.contains("\"event\":\"flow_end\"")).count() == 1,
                "the flow was reserved once (not again by the new process), and its end audited by the new process");
    }

    /**
     * The egress port of the tenant's connection to :9000 in conntrack, or -1 if none shows within
     * 3 s. A refresh replaces the entry (a delete, then a create: ctnetlink refuses a new timeout on
     * a fixed-timeout entry), and a new process refreshes what it adopted right after its resume,
     * so one listing may fall between the two (a demo run read -1 right after an upgrade).
     */
    private int reservation9000() throws Exception {
        long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(3);
        while (true) {
            // either orientation: a server's packet in a refresh's gap makes the kernel track the same
            // 5-tuple from the reply side (src=server) until Fish takes the entry back
            String table = IpNetns.exec(egress, "sh", "-c", "conntrack -L -p tcp 2>/dev/null");
            int p = port(table, "src=" + Pattern.quote(SOFT) + " dst=" + Pattern.quote(SERVER) + " sport=(\\d+) dport=9000 ");
            if (p < 0) {
                p = port(table, "src=" + Pattern.quote(SERVER) + " dst=" + Pattern.quote(SOFT) + " sport=9000 dport=(\\d+) ");
            }
            if (p >= 0 || System.nanoTime() > deadline) {
                return p;
            }
            Thread.sleep(20);
        }
    }

    private static int port(String text, String regex) {
        Matcher m = Pattern.compile(regex).matcher(text);
        return m.find() ? Integer.parseInt(m.group(1)) : -1;
    }

    @Override
    public void close() {
        if (pump != null) {
            try {
                pump.close();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            pump = null;
        }
        if (control != null) {
            control.close();
            control = null;
        }
        if (fish != null) {
            fish.stop();
        }
        if (http != null) {
            http.stop(0);
            http = null;
        }
        try {
            if (echo != null) {
                echo.close();
            }
        } catch (IOException ignored) {
            // closing
        }
        pool.shutdownNow();
    }
}
