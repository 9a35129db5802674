package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Metrics;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.DaemonProcess;
import warren.daemon.testing.Prometheus;
import warren.daemon.testing.Streams;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;

/**
 * A real Prometheus server scrapes a real Splicer process (metrics.listen on loopback) through an
 * in-place upgrade: the counters the test moves (rejected requests, bytes of a live pair) are
 * read back from Prometheus's query API before and after, and never go down; Prometheus sees no
 * counter reset at all; the successor reports the upgrade pause. promtool accepts the endpoint's
 * text, and Metrics on the control socket answers the same families in OpenMetrics.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class SplicerMetricsTest {
    private static final String ERRORS = "warren_errors_total{daemon=\"splicer\",code=\"BAD_FD_TYPE\"}";
    private static final String BYTES_OUT = "warren_relay_bytes_total{daemon=\"splicer\",direction=\"out\"}";

    @TempDir
    Path dir;

    @Test
    void prometheusSeesCountersMoveAndNeverResetAcrossAnUpgrade() throws Exception {
        assumeTrue(Prometheus.available(), "prometheus/promtool not installed (./warren test installs them)");
        int port = Prometheus.freePort();
        Path conf = Files.writeString(dir.resolve("s.conf"), "audit.path = " + dir.resolve("audit.jsonl")
                + "\nmetrics.listen = 127.0.0.1:" + port + "\n");
        Fd[] listeners = Relayed.listeners();
        try (DaemonProcess splicer = new DaemonProcess("splicer", Main.class, dir.resolve("s.sock"), conf,
                        dir.resolve("s.log"));
                Prometheus prom = new Prometheus(List.of("127.0.0.1:" + port));
                ControlClient c = ControlClient.connect(splicer.control);
                Relayed pair = Relayed.open(listeners)) {
            // a pair that lives through the upgrade, with bytes relayed before it
            CompletableFuture<Response> accepted = new CompletableFuture<>();
            CompletableFuture<Reply> spliced = c.call(Request.newBuilder().setId(1).setSplice(Splice.newBuilder()
                    .setFdA(0).setFdB(1)), List.of(pair.a, pair.b), accepted::complete);
            accepted.get(10, TimeUnit.SECONDS);
            pair.closeHandedOver();
            byte[] data = new byte[1 << 20];
            new java.util.Random(3).nextBytes(data);
            CompletableFuture<byte[]> far = CompletableFuture.supplyAsync(() -> Streams.readAllSha256(pair.u.get()));
            Streams.writeAll(pair.c.get(), data);
            // three requests rejected (a pipe is not a socket)
            for (int i = 0; i < 3; i++) {
                badSplice(c, 10 + i);
            }
            assertEquals(3, prom.await(ERRORS, v -> v == 3, 30_000), "rejected requests counted");
            double bytesBefore = prom.await(BYTES_OUT, v -> v >= data.length, 30_000);

            String text = http(port);
            Prometheus.Checked checked = Prometheus.checkMetrics(text);
            assertEquals(0, checked.status(), "promtool check metrics:\n" + checked.output() + "\n" + text);
            String om = metricsRequest(c);
            assertTrue(om.endsWith("# EOF\n"), om);
            for (String family : List.of("warren_errors_total", "warren_relay_bytes_total", "warren_tasks_active",
                    "warren_relay_pipes_lent", "process_open_fds", "process_max_fds", "warren_build_info")) {
                assertTrue(text.contains(family) && om.contains(family), family);
            }

            long oldPid = splicer.pid();
            assertEquals(0, splicer.upgrade(), "upgrade in place");
            assertNotEquals(oldPid, splicer.pid());
            badSplice(c, 20);
            assertEquals(4, prom.await(ERRORS, v -> v >= 4, 30_000), "the successor counts on from 3, not from 0");
            assertTrue(prom.await(BYTES_OUT, v -> v >= bytesBefore, 30_000) >= bytesBefore);
            prom.await("warren_upgrade_pause_seconds_count{daemon=\"splicer\"}", v -> v == 1, 30_000);
            prom.await("warren_tasks_active{daemon=\"splicer\"}", v -> v == 1, 30_000);
            // no counter of Splicer went down between any two scrapes
            // (the name is kept in a label: resets() drops it, and families share label sets)
            assertEquals(0, prom.await("sum(resets(label_replace({__name__=~\"warren_.+_total\",daemon=\"splicer\"},"
                    + " \"family\", \"$1\", \"__name__\", \"(.+)\")[5m:500ms]))", v -> true, 10_000),
                    "counter resets seen by Prometheus");
            checked = Prometheus.checkMetrics(http(port));
            assertEquals(0, checked.status(), "promtool after the upgrade:\n" + checked.output());

            Native.shutdown(pair.c.get(), Native.SHUT_WR);
            Native.shutdown(pair.u.get(), Native.SHUT_WR);
            try (Reply r = spliced.get(30, TimeUnit.SECONDS)) {
                assertEquals(data.length, r.response().getSpliced().getBytesAToB());
            }
            assertTrue(java.util.Arrays.equals(Streams.sha256(data), far.get(30, TimeUnit.SECONDS)));
            prom.await("warren_tasks_ended_total{daemon=\"splicer\",reason=\"BOTH_EOF\"}", v -> v == 1, 30_000);
            prom.await("warren_task_duration_seconds_count{daemon=\"splicer\",kind=\"splice\"}", v -> v == 1, 30_000);
            assertEquals((double) data.length, prom.await(BYTES_OUT, v -> v == data.length, 30_000),
                    "an ended pair's bytes counted once");
        } finally {
            Fd.closeAll(List.of(listeners));
        }
    }

    private static void badSplice(ControlClient c, long id) throws Exception {
        int[] p = Native.pipe2(Native.O_CLOEXEC);
        try (Fd r = Fd.adopt(p[0]); Fd w = Fd.adopt(p[1]);
                Reply reply = c.call(Request.newBuilder().setId(id).setSplice(Splice.newBuilder().setFdA(0).setFdB(1)),
                        List.of(r, w)).get(10, TimeUnit.SECONDS)) {
            assertEquals(warren.control.v1.Error.Code.BAD_FD_TYPE, reply.response().getError().getCode());
        }
    }

    private static String http(int port) throws Exception {
        HttpResponse<String> r = HttpClient.newHttpClient().send(HttpRequest.newBuilder(
                URI.create("http://127.0.0.1:" + port + "/metrics")).build(), HttpResponse.BodyHandlers.ofString());
        assertEquals(200, r.statusCode(), r.body());
        return r.body();
    }

    private static String metricsRequest(ControlClient c) throws Exception {
        try (Reply r = c.call(Request.newBuilder().setMetrics(Metrics.getDefaultInstance()), List.of())
                .get(10, TimeUnit.SECONDS)) {
            assertTrue(r.response().hasMetrics(), r.response().toString());
            return r.response().getMetrics().getText();
        }
    }
}
