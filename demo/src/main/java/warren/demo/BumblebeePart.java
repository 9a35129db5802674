package warren.demo;

import java.io.PrintStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentLinkedQueue;
import jnr.ffi.Pointer;
import warren.bumblebee.onramp.OnRamp;
import warren.cli.Text;
import warren.control.v1.Upgraded;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;
import warren.netns.ip.IpNetns;

/**
 * Bumblebee's part: Bumblebee as its own process (it makes its private namespace and TUN); a
 * client namespace whose default routes go to the on-ramp's TUN ({@link OnRamp}, Bumblebee's own
 * simulator of a front proxy receiving raw IP): every new 5-tuple's packets go to Bumblebee in an
 * Upgrade request, and the kernel TCP socket Bumblebee answers with is served here, as by a proxy:
 * HTTP on port 80, an echo on port 9000 (the upgrade's transfer).
 */
final class BumblebeePart extends Part {
    private static final String SERVER4 = "198.18.99.9";
    private static final String SERVER6 = "fd00:99::9";
    private final ConcurrentLinkedQueue<String> upgraded = new ConcurrentLinkedQueue<>();
    private DaemonRun bumblebee;
    private ControlClient control;
    private OnRamp ramp;
    private String client;

    BumblebeePart(PrintStream out, Path dir, IpNetns netns) {
        super("bumblebee", out, dir, netns);
    }

    @Override
    String cannotRun() {
        return Demo.missing("ip", "curl");
    }

    @Override
    void start() throws Exception {
        bumblebee = new DaemonRun(name(), "warren.bumblebee.Main", dir, "bumblebee.close_linger = 200ms\n");
        client = netns.add("bb-client");
    }

    @Override
    void job(Checks checks) throws Exception {
        out.println("\n== Bumblebee: curl's raw IP packets become kernel TCP sockets a proxy serves");
        bumblebee.awaitReady(30);
        control = ControlClient.connect(bumblebee.control);
        ramp = new OnRamp(client, control, this::serve);
        out.println("bumblebee pid " + bumblebee.pid() + " (its own namespace and TUN bb0), control socket " + bumblebee.control);
        out.println("client    namespace " + client + ": 198.18.50.1/24, fd00:50::1/64, default routes to the TUN onramp0");
        out.println("on-ramp   reads onramp0, hands each new 5-tuple's packets to Bumblebee (Upgrade, one SOCK_SEQPACKET per flow)");
        out.println("proxy     serves each upgraded socket: HTTP for port 80, an echo for port 9000");
        out.println("-- clients (curl in the client namespace)");
        boolean answered = true;
        for (String url : List.of("http://" + SERVER4 + "/", "http://[" + SERVER6 + "]/")) {
            IpNetns.Result r = IpNetns.run(client, "curl", "-sS", "--max-time", "10", url);
            out.printf("GET %-22s %s%n", url, r.output().strip().replace("\n", "\n" + " ".repeat(27)));
            answered &= r.status() == 0 && r.output().startsWith("hello from the proxy");
        }
        out.println("-- what Bumblebee answered (original 5-tuple, then the kernel socket's)");
        upgraded.forEach(out::println);
        List<String> lines = Audit.await(bumblebee.audit, l -> Audit.count(l, "end") >= 2, 10);
        out.println("-- Bumblebee's audit lines (shortened; in full: " + bumblebee.audit.getFileName() + ")");
        lines.forEach(l -> out.println(Audit.shorten(l)));
        Map<String, Long> counters = bumblebee.counters();
        out.println("-- checks");
        checks.check(answered, "curl over IPv4 and IPv6 got the proxy's answer");
        checks.check(counters.getOrDefault("upgrades.tcp", 0L) == 2 && upgraded.size() == 2,
                "2 TCP flows upgraded to kernel sockets (counter upgrades.tcp = " + counters.get("upgrades.tcp") + ")");
        checks.check(Audit.count(lines, "start") == 2 && Audit.count(lines, "end") == 2 && ramp.errors.isEmpty(),
                "one audit start and one end line per flow; the on-ramp saw no error");
    }

    @Override
    void upgrade(Checks checks) throws Exception {
        out.println("\n== Bumblebee upgraded in place while a transfer runs through it");
        int before = upgraded.size();
        Socket s = connectIn(client, new InetSocketAddress(InetAddress.getByName(SERVER4), 9000));
        out.println("client " + s.getLocalAddress().getHostAddress() + ":" + s.getLocalPort() + " -> " + SERVER4
                + ":9000 (raw packets via the on-ramp) -> Bumblebee -> kernel socket -> echo");
        Transfer t = new Transfer(s, 2);
        Upgrades.run(out, checks, bumblebee, t);
        String tuple = SERVER4 + ":9000\"";
        List<String> lines = Audit.await(bumblebee.audit, l -> l.stream().anyMatch(x -> x.contains(tuple)), 10);
        String task = lines.stream().filter(x -> x.contains(tuple)).findFirst().map(x -> Audit.field(x, "task")).orElse("?");
        out.println("-- the flow's audit lines: start by the old process, end by the new one");
        Audit.ofTask(lines, task).forEach(x -> out.println(Audit.shorten(x)));
        checks.check(upgraded.size() == before + 1 && Audit.ofTask(lines, task).size() == 2,
                "the flow was upgraded once (never again by the new process); its start and end audited");
    }

    /** The proxy's side of an upgraded socket: HTTP on port 80, an echo otherwise. */
    private void serve(Reply r) {
        Upgraded up = r.response().getUpgraded();
        Fd s = r.takeFd(up.getFdSocket());
        r.close();
        upgraded.add(Text.tuple(up.getOriginal()) + "  =>  kernel socket " + Text.tuple(up.getTranslated()));
        pool.submit(() -> {
            try (s) {
                TcpSockets.setBlocking(s, true);
                Pointer p = Native.allocate(65536);
                if (up.getOriginal().getDstPort() == 80) {
                    byte[] in = new byte[4096];
                    int n = TcpSockets.read(s, p, in, 0, in.length);
                    String req = new String(in, 0, Math.max(n, 0), StandardCharsets.US_ASCII);
                    String body = "hello from the proxy: you are " + Text.address(up.getOriginal().getSrcIp()) + " port "
                            + up.getOriginal().getSrcPort() + ", you asked '" + req.lines().findFirst().orElse("") + "'\n";
                    byte[] resp = ("HTTP/1.1 200 OK\r\nContent-Length: " + body.length()
                            + "\r\nConnection: close\r\n\r\n" + body).getBytes(StandardCharsets.US_ASCII);
                    TcpSockets.writeFully(s, p, resp, 0, resp.length);
                    return null;
                }
                long n;
                while ((n = Native.recv(s.get(), p, 65536, 0)) > 0) {
                    for (long off = 0; off < n; ) {
                        long w = Native.send(s.get(), p.slice(off), n - off, Native.MSG_NOSIGNAL);
                        if (w < 0) {
                            return null;
                        }
                        off += w;
                    }
                }
                if (n == 0) {
                    TcpSockets.shutdownOutput(s);
                }
            }
            return null;
        });
    }

    @Override
    public void close() {
        if (ramp != null) {
            try {
                ramp.close();
            } catch (Exception ignored) {
                // closing
            }
            ramp = null;
        }
        if (control != null) {
            control.close();
            control = null;
        }
        if (bumblebee != null) {
            bumblebee.stop();
        }
        pool.shutdownNow();
    }
}
