package warren.bumblebee;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.util.concurrent.Future;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Status;
import warren.control.v1.Upgraded;
import warren.bumblebee.onramp.OnRamp;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;
import warren.linux.net.Netns;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;

/** Bumblebee with real clients: curl in the on-ramp namespace, served through upgraded sockets. */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class BumblebeeTest {
    @TempDir
    Path dir;
    private final ExecutorService servers = Executors.newCachedThreadPool();

    @AfterEach
    void tearDown() {
        servers.shutdownNow();
    }

    /** Serves one HTTP response on an upgraded socket and closes it. */
    private void serveHttp(Reply r, String body) {
        Upgraded up = r.response().getUpgraded();
        Fd s = r.takeFd(up.getFdSocket());
        r.close();
        servers.submit(() -> {
            try (s) {
                Pointer p = Native.allocate(65536);
                byte[] in = new byte[65536];
                int n = TcpSockets.read(s, p, in, 0, in.length);
                String req = new String(in, 0, Math.max(n, 0), StandardCharsets.US_ASCII);
                String resp = "HTTP/1.1 200 OK\r\nContent-Length: " + body.length() + "\r\nConnection: close\r\n\r\n"
                        + body;
                byte[] out = resp.getBytes(StandardCharsets.US_ASCII);
                TcpSockets.writeFully(s, p, out, 0, out.length);
                System.out.println("served " + req.lines().findFirst().orElse("?") + " for "
                        + InetAddress.getByAddress(up.getOriginal().getSrcIp().toByteArray()).getHostAddress() + ":"
                        + up.getOriginal().getSrcPort());
            }
            return null;
        });
    }

    /** Echoes datagrams on an upgraded UDP socket (payloads only: Bumblebee adds the headers). */
    private void echoDatagrams(Reply r) {
        echoDatagrams(r, servers);
    }

    /** As {@link #echoDatagrams(Reply)}, on a thread of {@code servers} (BumblebeeOffloadTest's too). */
    static void echoDatagrams(Reply r, ExecutorService servers) {
        Fd s = r.takeFd(r.response().getUpgraded().getFdSocket());
        r.close();
        servers.submit(() -> {
            try (s) {
                Pointer p = Native.allocate(65536);
                while (true) {
                    long n = Native.recv(s.get(), p, 65536, 0);
                    if (n <= 0) {
                        return null;
                    }
                    Native.send(s.get(), p, n, Native.MSG_NOSIGNAL);
                }
            }
        });
    }

    @Test
    void aUdpEchoRoundTripsThroughTheUserspaceUdpUpgrade(TestNetwork net) throws Exception {
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("bb.sock"), "audit.path = /dev/null\n");
                ControlClient c = ControlClient.connect(d.control);
                OnRamp ramp = new OnRamp(net.namespace("onramp").name, c, this::echoDatagrams)) {
            for (String server : List.of("198.18.99.9", "fd00:99::9")) {
                try (java.net.DatagramSocket s = warren.linux.net.Netns.call("/run/netns/" + ramp.client,
                        () -> new java.net.DatagramSocket())) {
                    s.setSoTimeout(5000);
                    for (int i = 0; i < 3; i++) {
                        byte[] msg = ("datagram " + i + " to " + server).getBytes(StandardCharsets.US_ASCII);
                        s.send(new java.net.DatagramPacket(msg, msg.length, InetAddress.getByName(server), 5353));
                        java.net.DatagramPacket got = new java.net.DatagramPacket(new byte[256], 256);
                        s.receive(got);
                        assertEquals(new String(msg, StandardCharsets.US_ASCII),
                                new String(got.getData(), 0, got.getLength(), StandardCharsets.US_ASCII));
                        assertEquals(InetAddress.getByName(server), got.getAddress(), "the reply comes from the server");
                        assertEquals(5353, got.getPort());
                    }
                }
            }
            try (Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                    .get(5, TimeUnit.SECONDS)) {
                assertEquals(2, r.response().getStatus().getCountersOrDefault("upgrades.udp", 0), r.toString());
            }
        }
    }

    /** Relays an upgraded socket to a new connection made inside {@code ns} to {@code to}. */
    private void relayTo(Reply r, String ns, InetSocketAddress to) {
        Fd s = r.takeFd(r.response().getUpgraded().getFdSocket());
        r.close();
        servers.submit(() -> {
            Fd up = Netns.call("/run/netns/" + ns, () -> TcpSockets.connect(to));
            Future<?> one = servers.submit(() -> copy(s, up));
            copy(up, s);
            one.get(60, TimeUnit.SECONDS);
            s.close();
            up.close();
            return null;
        });
    }

    private static Void copy(Fd from, Fd to) throws Exception {
        Pointer p = Native.allocate(1 << 16);
        byte[] b = new byte[1 << 16];
        int n;
        while ((n = TcpSockets.read(from, p, b, 0, b.length)) > 0) {
            TcpSockets.writeFully(to, p, b, 0, n);
        }
        TcpSockets.shutdownOutput(to);
        return null;
    }

    /** With {@code steering = off} (threads = 2) the loops hand packets over: the ring path allocates nothing either. */
    @ParameterizedTest(name = "threads = {0}, bumblebee.tun_steering = {1}")
    @CsvSource({"1, auto", "2, auto", "2, off"})
    void anIperf3RunCompletesThroughBumblebee(int threads, String steering, TestNetwork net) throws Exception {
        assumeTrue(Files.isExecutable(Path.of("/usr/bin/iperf3")), "iperf3 not installed");
        TestNetwork.Namespace srv = net.namespace("iperf");
        Process server = srv.start("iperf3", "-s", "-B", "127.0.0.1", "-p", "5201", "-1");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (srv.exec("ss", "-Hltn", "sport = :5201").output().isBlank() && System.nanoTime() < deadline) {
            Thread.sleep(50);
        }
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("bb.sock"), "audit.path = /dev/null\nthreads = "
                        + threads + "\nbumblebee.tun_steering = " + steering + "\n");
                ControlClient c = ControlClient.connect(d.control);
                OnRamp ramp = new OnRamp(net.namespace("onramp").name, c, r -> relayTo(r, srv.name,
                        new InetSocketAddress(InetAddress.getLoopbackAddress(), 5201)))) {
            com.sun.management.ThreadMXBean mx =
                    (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory.getThreadMXBean();
            // every loop thread: bumblebee-loop (loop 0) and bumblebee-loop-1...
            long[] loopTids = Thread.getAllStackTraces().keySet().stream()
                    .filter(t -> t.getName().startsWith("bumblebee-loop")).mapToLong(Thread::getId).toArray();
            assertEquals(threads, loopTids.length, "one thread per loop");
            long alloc0 = 0;
            for (long tid : loopTids) {
                alloc0 += mx.getThreadAllocatedBytes(tid);
            }
            TestNetwork.Result res = ns(net, ramp).exec("iperf3", "-c", "198.18.99.9", "-p", "5201", "-t", "5", "-J");
            long allocated = -alloc0;
            for (long tid : loopTids) {
                allocated += mx.getThreadAllocatedBytes(tid);
            }
            long packets;
            long handed;
            try (Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                    .get(5, TimeUnit.SECONDS)) {
                packets = r.response().getStatus().getCountersOrDefault("packets.flow_to_kernel", 0)
                        + r.response().getStatus().getCountersOrDefault("packets.kernel_to_flow", 0);
                handed = r.response().getStatus().getCountersOrDefault("handover.packets", 0);
                assertEquals(0, r.response().getStatus().getCountersOrDefault("drops.tun_other_loop", 0));
            }
            System.out.printf("threads = %d, tun_steering = %s: loop threads allocated %d bytes for %d packets (%.3f"
                    + " B/packet), %d handed over%n", threads, steering, allocated, packets, (double) allocated / packets,
                    handed);
            // the per-packet path allocates nothing; what is left is per flow (2 upgrades, their answers)
            assertTrue(allocated < 256 * 1024, allocated + " bytes allocated on the loop thread");
            assertEquals(0, res.status(), res.output());
            String json = res.output();
            int at = json.indexOf("\"sum_received\"");
            assertTrue(at > 0, json);
            int bps = json.indexOf("\"bits_per_second\":", at);
            String num = json.substring(bps + 18).trim().split("[,\\s}]")[0];
            double gbps = Double.parseDouble(num) / 1e9;
            System.out.printf("iperf3 through Bumblebee (MTU 1500, 5 s, threads = %d): %.2f Gbit/s%n", threads, gbps);
            assertTrue(gbps > 0, "bytes arrived");
        } finally {
            server.destroy();
        }
    }

    /**
     * At threads = 2 the helper's TUN has one queue and no steering program: loop 0 reads it and
     * hands loop 1's packets over (the two requests get one slot of each loop).
     */
    @Test
    void theHelperProcessBuildsTheSameEnvironmentAndPassesItsFdsBack(TestNetwork net) throws Exception {
        int namespacesBefore = netnsFds();
        long helpersBefore = helpers();
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("bb.sock"),
                "audit.path = /dev/null\nbumblebee.environment = helper\nbumblebee.close_linger = 100ms\nthreads = 2\n");
                ControlClient c = ControlClient.connect(d.control);
                OnRamp ramp = new OnRamp(net.namespace("onramp").name, c, r -> serveHttp(r, "made by the helper\n"))) {
            assertEquals(helpersBefore + 1, helpers(), "one helper process");
            assertEquals(namespacesBefore + 1, netnsFds(), "its namespace fd came back over SCM_RIGHTS");
            for (String url : List.of("http://198.18.99.9/", "http://[fd00:99::9]/")) {
                TestNetwork.Result res = ns(net, ramp).exec("curl", "-sS", "--max-time", "20", url);
                assertEquals(0, res.status(), url + ": " + res.output());
                assertEquals("made by the helper\n", res.output());
            }
            try (Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                    .get(5, TimeUnit.SECONDS)) {
                java.util.Map<String, Long> counters = r.response().getStatus().getCountersMap();
                assertTrue(counters.getOrDefault("handover.packets", 0L) > 0, counters.toString());
                assertEquals(0, counters.getOrDefault("drops.tun_other_loop", 0L), counters.toString());
                assertEquals(1, counters.getOrDefault("errors.tun_steering_unavailable", 0L), counters.toString());
            }
        }
        assertEquals(namespacesBefore, netnsFds(), "namespace gone");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (helpers() > helpersBefore && System.nanoTime() < deadline) {
            Thread.sleep(50);
        }
        assertEquals(helpersBefore, helpers(), "the helper exits with its daemon");
    }

    private static long helpers() {
        return ProcessHandle.current().descendants()
                .filter(ph -> ph.info().commandLine().orElse("").contains("warren.netns.HelperMain")).count();
    }

    @Test
    void curlOverIpv4AndIpv6ReachesTheServerThroughUpgradedSockets(TestNetwork net) throws Exception {
        int namespacesBefore = netnsFds();
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("bb.sock"),
                "audit.path = " + dir.resolve("audit.jsonl") + "\nbumblebee.close_linger = 200ms\n");
                ControlClient c = ControlClient.connect(d.control);
                OnRamp ramp = new OnRamp(net.namespace("onramp").name, c, r -> serveHttp(r, "hello from bumblebee\n"))) {
            for (String url : List.of("http://198.18.99.9/v4", "http://[fd00:99::9]/v6")) {
                TestNetwork.Result res = ns(net, ramp).exec("curl", "-sS", "--max-time", "20", url);
                assertEquals(0, res.status(), url + ": " + res.output() + "\n" + net.dump());
                assertEquals("hello from bumblebee\n", res.output());
            }
            assertTrue(ramp.errors.isEmpty(), ramp.errors.toString());
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            Response st;
            do {
                try (Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                        .get(5, TimeUnit.SECONDS)) {
                    st = r.response();
                }
                Thread.sleep(50);
            } while (st.getStatus().getTasksActive() > 0 && System.nanoTime() < deadline);
            assertEquals(0, st.getStatus().getTasksActive(), "both flows ended: " + st);
            assertEquals(2, st.getStatus().getCountersOrDefault("upgrades.tcp", 0));
            d.daemon.audit().flush(5000); // lines are written by the audit's writer thread
            List<String> audit = Files.readAllLines(dir.resolve("audit.jsonl"));
            assertEquals(2, audit.stream().filter(l -> l.contains("\"event\":\"end\"") && l.contains("FLOW_ENDED")).count(),
                    String.join("\n", audit));
            assertEquals(namespacesBefore + 1, netnsFds(), "Bumblebee's namespace is held by one fd while it runs");
            // the ended flows' sockets (closed by Bumblebee: end of file) are no longer watched by the
            // on-ramp's pump, which spun on them before (~0.7 CPU per second in every benchmark run)
            long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (ramp.watched() > 0 && System.nanoTime() < until) {
                Thread.sleep(20);
            }
            assertEquals(0, ramp.watched(), "flow sockets still watched after both flows ended");
        }
        assertEquals(namespacesBefore, netnsFds(), "Bumblebee's namespace (and its TUN) is gone once it stopped");
    }

    /**
     * With bb0's offloads (bumblebee.tun_offload, the default) a capture on bb0 shows what the
     * kernel sends there with a partial checksum (the pseudo-header sum: the device takes checksum
     * offload), as on any NIC with TX checksum offload; Bumblebee completes it (or cuts the
     * super-packet) for the client, whose onramp0 capture must show every checksum right. So with
     * the offloads the kernel's packets on bb0 (from the listener, port 8080) are not checked there;
     * without them every packet on both TUNs is.
     */
    @ParameterizedTest(name = "bumblebee.tun_offload = {0}")
    @CsvSource({"true", "false"})
    void captureOfBothTunsShowsNoBadChecksum(boolean offload, TestNetwork net) throws Exception {
        assumeTrue(Files.isExecutable(Path.of("/usr/bin/tcpdump")), "tcpdump not installed");
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("bb.sock"), "audit.path = /dev/null\n"
                        + "bumblebee.tun_offload = " + offload + "\n");
                ControlClient c = ControlClient.connect(d.control);
                OnRamp ramp = new OnRamp(net.namespace("onramp").name, c, r -> {
                    if (r.response().getUpgraded().hasTranslated()) {
                        serveHttp(r, "x".repeat(100_000));
                    } else {
                        echoDatagrams(r);
                    }
                })) {
            String bbNs = "/proc/" + ProcessHandle.current().pid() + "/fd/" + netnsFd();
            Path onrampCap = dir.resolve("onramp.pcap");
            Path bbCap = dir.resolve("bb0.pcap");
            Process cap1 = ns(net, ramp).start(new ProcessBuilder("tcpdump", "--immediate-mode", "-Z", "root", "-n", "-U", "-i", "onramp0", "-w",
                    onrampCap.toString()).redirectErrorStream(true).redirectOutput(dir.resolve("cap1.log").toFile()));
            Process cap2 = new ProcessBuilder("nsenter", "--net=" + bbNs, "tcpdump", "--immediate-mode", "-Z", "root", "-n", "-U", "-i", "bb0", "-w",
                    bbCap.toString()).redirectErrorStream(true).redirectOutput(dir.resolve("cap2.log").toFile()).start();
            try {
                Thread.sleep(1000); // both capturing
                for (String url : List.of("http://198.18.99.9/", "http://[fd00:99::9]/")) {
                    TestNetwork.Result res = ns(net, ramp).exec("curl", "-sS", "-o", "/dev/null", "--max-time", "20", url);
                    assertEquals(0, res.status(), res.output());
                }
                try (java.net.DatagramSocket s = Netns.call("/run/netns/" + ramp.client,
                        () -> new java.net.DatagramSocket())) {
                    s.setSoTimeout(5000);
                    byte[] msg = "checksum me".getBytes(StandardCharsets.US_ASCII);
                    s.send(new java.net.DatagramPacket(msg, msg.length, InetAddress.getByName("198.18.99.9"), 7));
                    s.receive(new java.net.DatagramPacket(new byte[64], 64));
                }
                Thread.sleep(500);
            } finally {
                cap1.destroy();
                cap2.destroy();
                cap1.waitFor(10, TimeUnit.SECONDS);
                cap2.waitFor(10, TimeUnit.SECONDS);
                System.out.println("tcpdump onramp0: " + Files.readString(dir.resolve("cap1.log")).strip());
                System.out.println("tcpdump bb0: " + Files.readString(dir.resolve("cap2.log")).strip());
            }
            for (Path cap : List.of(onrampCap, bbCap)) {
                Process read = new ProcessBuilder("tcpdump", "-n", "-vv", "-r", cap.toString()).redirectErrorStream(true)
                        .start();
                String out = new String(read.getInputStream().readAllBytes(), StandardCharsets.US_ASCII);
                read.waitFor(30, TimeUnit.SECONDS);
                long packets = out.lines().filter(l -> l.contains(" IP ") || l.contains(" IP6 ")).count();
                System.out.println(cap.getFileName() + ": " + packets + " packets, checksums checked by tcpdump -vv");
                assertTrue(packets > 20, cap + " captured traffic:\n" + out);
                assertTrue(out.contains("(correct)"), "tcpdump verified checksums:\n" + out);
                boolean partialAllowed = offload && cap.equals(bbCap);
                List<String> bad = out.lines().filter(l -> l.contains("incorrect") || l.contains("bad cksum"))
                        .filter(l -> !(partialAllowed && (l.contains("198.19.255.254.8080 >") || l.contains("fd00:b::1.8080 >"))))
                        .toList();
                assertTrue(bad.isEmpty(), "bad checksum in " + cap + ":\n" + String.join("\n", bad.subList(0,
                        Math.min(5, bad.size()))));
            }
        }
    }

    /** The fd number of Bumblebee's namespace in this process. */
    static int netnsFd() throws Exception {
        for (String f : new java.io.File("/proc/self/fd").list()) {
            try {
                if (Files.readSymbolicLink(Path.of("/proc/self/fd", f)).toString().startsWith("net:[")) {
                    return Integer.parseInt(f);
                }
            } catch (java.io.IOException e) {
                // closed meanwhile
            }
        }
        throw new IllegalStateException("no namespace fd");
    }

    /** Network namespace fds open in this process (Bumblebee's anonymous namespace). */
    static int netnsFds() throws Exception {
        int n = 0;
        for (String f : new java.io.File("/proc/self/fd").list()) {
            try {
                if (Files.readSymbolicLink(Path.of("/proc/self/fd", f)).toString().startsWith("net:[")) {
                    n++;
                }
            } catch (java.io.IOException e) {
                // closed meanwhile
            }
        }
        return n;
    }

    /** The harness's handle of the on-ramp's client namespace. */
    static TestNetwork.Namespace ns(TestNetwork net, OnRamp ramp) {
        return net.namespaces().stream().filter(n -> n.name.equals(ramp.client)).findFirst().orElseThrow();
    }
}
