package warren.daemon.metrics;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.StandardProtocolFamily;
import java.net.URI;
import java.net.UnixDomainSocketAddress;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Limits;
import warren.control.v1.Metrics;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.daemon.audit.AuditLog;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.loop.EventLoop;
import warren.daemon.task.TaskRegistry;
import warren.daemon.testing.HoldingSpliceHandler;
import warren.daemon.testing.LoopThread;
import warren.daemon.testing.Prometheus;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;

@Timeout(value = 60, unit = TimeUnit.SECONDS)
class MetricsTest {
    @TempDir
    Path dir;
    private final List<AutoCloseable> cleanup = new ArrayList<>();

    @AfterEach
    void tearDown() throws Exception {
        for (int i = cleanup.size() - 1; i >= 0; i--) {
            cleanup.get(i).close();
        }
    }

    private static final Pattern NAME = Pattern.compile("(?:increment|counter)\\(\"([a-z0-9_]+(?:\\.[a-z0-9_]+)*\\.?)\"");

    /** Every counter name (or name prefix) that main code bumps maps to a family of its own. */
    @Test
    void everyCounterNameInTheTreeHasAFamily() throws IOException {
        Path root = Path.of("").toAbsolutePath().getParent();
        TreeSet<String> names = new TreeSet<>();
        try (Stream<Path> files = Files.walk(root)) {
            for (Path p : files.filter(f -> f.toString().endsWith(".java") && f.toString().contains("/src/main/java/")
                    && !f.toString().contains("/benchmarks/")).toList()) {
                Matcher m = NAME.matcher(Files.readString(p));
                while (m.find()) {
                    names.add(m.group(1));
                }
            }
        }
        assertTrue(names.size() > 40, "found the tree's counter names: " + names);
        List<String> unmapped = new ArrayList<>();
        for (String n : names) {
            Families.Mapped m = Families.counter(n.endsWith(".") ? n + "x" : n);
            if (m.family() == Families.OTHER) {
                unmapped.add(n);
            }
        }
        assertEquals(List.of(), unmapped, "counter names without a family in Families");
    }

    @Test
    void namesMapToFamiliesWithTheirLabelAndUnknownOnesAreKept() {
        assertEquals(new Families.Mapped(Families.counter("drops.x").family(), "bad_ihl"), Families.counter("drops.bad_ihl"));
        assertEquals("warren_drops", Families.counter("drops.bad_ihl").family().name());
        assertEquals("warren_tun_drops", Families.counter("tun.drops.bad_ihl").family().name(), "the longest prefix wins");
        assertEquals("out", Families.counter("packets.flow_to_kernel").labelValue());
        assertEquals("upgrade", Families.counter("upgrades.refused_no_slot").labelValue(), "an exact name before a prefix");
        Families.Mapped other = Families.counter("something.new");
        assertEquals(Families.OTHER, other.family());
        assertEquals("something.new", other.labelValue());
        for (Families.CounterFamily f : Families.counterFamilies()) {
            assertTrue(f.name().matches("[a-z_]+") && !f.name().endsWith("_total"), f.name());
        }
    }

    @Test
    void histogramsCountPerBucketAndTravelInTheHandoffEncoding() {
        Counters a = new Counters();
        Histogram h = a.histogram("task_duration.splice");
        h.observe(0.0005);
        h.observe(0.001); // le="0.001"
        h.observe(5);
        h.observe(1e9);   // +Inf
        long[] c = h.counts();
        assertEquals(2, c[0]);
        assertEquals(1, c[c.length - 1]);
        assertEquals(4, java.util.Arrays.stream(c).sum());
        Counters b = new Counters();
        b.histogram("task_duration.splice").observe(0.0001);
        assertEquals(0, b.adoptHistograms(a.histogramStates()));
        assertEquals(5, java.util.Arrays.stream(b.histogram("task_duration.splice").counts()).sum());
        assertEquals(h.sum() + 0.0001, b.histogram("task_duration.splice").sum(), 1e-6);
        Map<String, warren.handoff.v1.HistogramState> changed = Map.of("task_duration.splice",
                a.histogramStates().get("task_duration.splice").toBuilder().setUpperBounds(0, 0.002).build(),
                "no_such_histogram", warren.handoff.v1.HistogramState.getDefaultInstance());
        assertEquals(2, b.adoptHistograms(changed), "other buckets or an unknown key: left out");
    }

    private DaemonMetrics metricsWithValues() throws Exception {
        LoopThread lt = new LoopThread("metrics-test-loop", 16);
        cleanup.add(lt);
        EventLoop loop = lt.loop;
        AuditLog audit = AuditLog.open("testd", dir.resolve("audit.jsonl").toString());
        cleanup.add(audit);
        Counters counters = new Counters();
        TaskRegistry tasks = new TaskRegistry(audit);
        DaemonMetrics m = new DaemonMetrics("testd", "1.2.3", loop, counters, tasks);
        tasks.onEnd(m.taskEnds());
        counters.counter("drops.bad_ihl").add(3);
        counters.increment("tun.drops.bad_ihl");
        counters.increment("errors.RESOURCE_EXHAUSTED");
        counters.increment("requests.splice");
        counters.increment("packets.flow_to_kernel");
        counters.increment("something.new");
        TaskRegistry.Record r = tasks.register("splice", 1, com.google.protobuf.ByteString.EMPTY,
                new warren.fdpass.PeerCredentials(1, 0, 0), 1, new warren.daemon.task.Task() {
                    @Override
                    public void cancel() {}

                    @Override
                    public void stop() {}
                }, null);
        tasks.end(r, "BOTH_EOF", null);
        counters.histogram("upgrade_pause").observe(0.02);
        m.probe(s -> {
            s.addCounter("ip.packets.out", 7);
            s.gauge(Families.PORTS_FREE, 10, "ten\"ant\\x\ny", "tcp");
            s.gauge(Families.PORTS_FREE, 5, "ten\"ant\\x\ny", "tcp"); // a second client of the tenant adds up
            s.gauge(Families.NAT_SLOTS, 3, "free");
        });
        return m;
    }

    @Test
    void bothTextFormatsCarryEveryFamilyAndPromtoolAcceptsThem() throws Exception {
        DaemonMetrics m = metricsWithValues();
        String om = new String(m.text(true), StandardCharsets.UTF_8);
        String prom = new String(m.text(false), StandardCharsets.UTF_8);
        assertTrue(om.endsWith("# EOF\n"), om);
        for (String want : List.of("warren_drops_total{daemon=\"testd\",reason=\"bad_ihl\"} 3",
                "warren_tun_drops_total{daemon=\"testd\",reason=\"bad_ihl\"} 1",
                "warren_errors_total{code=\"RESOURCE_EXHAUSTED\",daemon=\"testd\"} 1",
                "warren_ip_packets_total{daemon=\"testd\",direction=\"out\"} 8",
                "warren_other_events_total{daemon=\"testd\",name=\"something.new\"} 1",
                "warren_tasks_ended_total{daemon=\"testd\",reason=\"BOTH_EOF\"} 1",
                "warren_tasks_started_total{daemon=\"testd\"} 1",
                "warren_tasks_active{daemon=\"testd\"} 0",
                "warren_task_duration_seconds_count{daemon=\"testd\",kind=\"splice\"} 1",
                "warren_upgrade_pause_seconds_bucket{daemon=\"testd\",le=\"0.025\"} 1",
                "warren_ports_free{daemon=\"testd\",protocol=\"tcp\",tenant=\"ten\\\"ant\\\\x\\ny\"} 15",
                "warren_nat_slots{daemon=\"testd\",state=\"free\"} 3",
                "warren_build_info{daemon=\"testd\",version=\"1.2.3\"} 1",
                "process_max_fds{daemon=\"testd\"} ")) {
            assertTrue(om.contains(want), "OpenMetrics has " + want + ":\n" + om);
            assertTrue(prom.contains(want), "Prometheus text has " + want + ":\n" + prom);
        }
        Matcher fds = Pattern.compile("process_open_fds\\{daemon=\"testd\"\\} ([0-9.]+)").matcher(om);
        assertTrue(fds.find(), om);
        assertTrue(Double.parseDouble(fds.group(1)) > 3, "fds in use counted: " + fds.group(1));
        assumeTrue(Prometheus.available(), "promtool not installed (./warren test installs prometheus)");
        // promtool 2.42 parses the Prometheus text format only (what /metrics serves without an
        // OpenMetrics Accept header); the OpenMetrics text is checked by a real Prometheus scraping it
        Prometheus.Checked c = Prometheus.checkMetrics(prom);
        assertEquals(0, c.status(), "promtool check metrics:\n" + c.output() + "\n" + prom);
    }

    @Test
    void httpEndpointNegotiatesTheFormatOnTcpAndOnAUnixSocket() throws Exception {
        DaemonMetrics m = metricsWithValues();
        assertEquals(null, MetricsEndpoint.check(""));
        assertEquals(null, MetricsEndpoint.check("[::1]:9464"));
        assertNotEquals(null, MetricsEndpoint.check("example.com:9464"));
        assertNotEquals(null, MetricsEndpoint.check("::1:9464"));
        assertNotEquals(null, MetricsEndpoint.check("127.0.0.1:99999"));
        try (MetricsEndpoint tcp = MetricsEndpoint.open("127.0.0.1:0", m)) {
            int port = ((InetSocketAddress) tcp.address()).getPort();
            IOException inUse = assertThrows(IOException.class,
                    () -> MetricsEndpoint.open("127.0.0.1:" + port, m));
            assertTrue(inUse.getMessage().contains("in use"), inUse.getMessage());
            HttpClient http = HttpClient.newHttpClient();
            URI uri = URI.create("http://127.0.0.1:" + port + "/metrics");
            HttpResponse<String> plain = http.send(HttpRequest.newBuilder(uri).build(), HttpResponse.BodyHandlers.ofString());
            assertEquals(200, plain.statusCode());
            assertEquals(DaemonMetrics.PROMETHEUS_TEXT, plain.headers().firstValue("content-type").orElse(""));
            assertTrue(plain.body().contains("warren_drops_total{daemon=\"testd\",reason=\"bad_ihl\"} 3"), plain.body());
            HttpResponse<String> om = http.send(HttpRequest.newBuilder(uri).header("Accept",
                    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5").build(),
                    HttpResponse.BodyHandlers.ofString());
            assertEquals(DaemonMetrics.OPENMETRICS, om.headers().firstValue("content-type").orElse(""));
            assertTrue(om.body().endsWith("# EOF\n"));
            assertEquals(404, http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/")).build(),
                    HttpResponse.BodyHandlers.ofString()).statusCode());
            m.handedOver();
            assertEquals(503, http.send(HttpRequest.newBuilder(uri).build(), HttpResponse.BodyHandlers.ofString())
                    .statusCode(), "a process that handed over serves no numbers");
        }
        DaemonMetrics m2 = metricsWithValues();
        Path sock = dir.resolve("metrics.sock");
        MetricsEndpoint unix = MetricsEndpoint.open(sock.toString(), m2);
        try {
            String answer = unixGet(sock, "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\n\r\n");
            assertTrue(answer.startsWith("HTTP/1.1 200 OK\r\n"), answer);
            assertTrue(answer.contains("Content-Type: " + DaemonMetrics.OPENMETRICS), answer);
            assertTrue(answer.contains("warren_nat_slots{daemon=\"testd\",state=\"free\"} 3"), answer);
            assertTrue(unixGet(sock, "POST /metrics HTTP/1.1\r\n\r\n").startsWith("HTTP/1.1 405"));
            assertTrue(unixGet(sock, "nonsense\r\n\r\n").startsWith("HTTP/1.1 400"));
            // a successor binds the same path while this one still listens: the path is then its
            assertThrows(IOException.class, () -> MetricsEndpoint.open(sock.toString(), m2), "a live socket's path");
            MetricsEndpoint successor = MetricsEndpoint.open(sock.toString(), m2, true);
            unix.close(true);
            assertTrue(Files.exists(sock), "the old process leaves the successor's socket alone");
            assertTrue(unixGet(sock, "GET /metrics HTTP/1.0\r\n\r\n").startsWith("HTTP/1.1 200 OK"));
            unix = successor;
        } finally {
            unix.close(true);
        }
        assertFalse(Files.exists(sock), "removed at a normal stop");
    }

    private static String unixGet(Path sock, String request) throws IOException {
        try (SocketChannel c = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            c.connect(UnixDomainSocketAddress.of(sock));
            c.write(ByteBuffer.wrap(request.getBytes(StandardCharsets.US_ASCII)));
            ByteBuffer b = ByteBuffer.allocate(1 << 20);
            while (c.read(b) >= 0) {
                if (!b.hasRemaining()) {
                    break;
                }
            }
            return new String(b.array(), 0, b.position(), StandardCharsets.UTF_8);
        }
    }

    /** {@code Metrics} on the control socket: OpenMetrics text of the same registry, tasks and histograms included. */
    @Test
    void metricsRequestIsAnsweredOnTheControlSocket() throws Exception {
        RunningDaemon d = new RunningDaemon(HoldingSpliceHandler.spec(), dir.resolve("ctl.sock"),
                "audit.path = " + dir.resolve("audit.jsonl") + "\n");
        cleanup.add(d);
        ControlClient c = ControlClient.connect(d.control);
        cleanup.add(c);
        int[] x = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
        int[] y = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
        try (Fd a = Fd.adopt(x[0]); Fd b = Fd.adopt(y[0]); Fd pa = Fd.adopt(x[1]); Fd pb = Fd.adopt(y[1]);
                Reply r = c.call(Request.newBuilder().setSplice(Splice.newBuilder().setFdA(0).setFdB(1)
                        .setLimits(Limits.newBuilder().setLifetimeMs(1))), List.of(a, b)).get(10, TimeUnit.SECONDS)) {
            assertTrue(r.response().hasSpliced(), r.response().toString());
        }
        Response resp;
        try (Reply r = c.call(Request.newBuilder().setMetrics(Metrics.getDefaultInstance()), List.of())
                .get(10, TimeUnit.SECONDS)) {
            resp = r.response();
        }
        assertTrue(resp.hasMetrics(), resp.toString());
        assertEquals(DaemonMetrics.OPENMETRICS, resp.getMetrics().getContentType());
        String text = resp.getMetrics().getText();
        for (String want : List.of("warren_requests_total{daemon=\"testd\",kind=\"metrics\"} 1",
                "warren_requests_total{daemon=\"testd\",kind=\"splice\"} 1",
                "warren_tasks_started_total{daemon=\"testd\"} 1",
                "warren_task_duration_seconds_count{daemon=\"testd\",kind=\"splice\"} 1",
                "warren_control_clients{daemon=\"testd\"} 1")) {
            assertTrue(text.contains(want), want + " in:\n" + text);
        }
        assertTrue(text.contains("warren_tasks_ended_total{daemon=\"testd\",reason="), text);
    }
}
