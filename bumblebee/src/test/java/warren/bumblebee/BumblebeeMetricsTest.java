package warren.bumblebee;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.bumblebee.onramp.OnRamp;
import warren.control.v1.Request;
import warren.control.v1.Upgrade;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.DaemonProcess;
import warren.daemon.testing.Prometheus;
import warren.daemon.testing.Streams;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;
import warren.linux.net.Netns;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;

/**
 * A real Prometheus server scrapes a real Bumblebee process through an in-place upgrade while one
 * on-ramp TCP flow lives on: rejected requests, the flow's packets and bytes are read back from
 * Prometheus before and after and never go down (no counter reset at all), the NAT slot gauges and
 * the Upgrade latency histogram are there, and promtool accepts the endpoint's text.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class BumblebeeMetricsTest {
    private static final String ERRORS = "warren_errors_total{daemon=\"bumblebee\",code=\"BAD_FD_TYPE\"}";
    private static final String PACKETS_OUT = "warren_ip_packets_total{daemon=\"bumblebee\",direction=\"out\"}";
    private static final String BYTES_OUT = "warren_ip_bytes_total{daemon=\"bumblebee\",direction=\"out\"}";

    @TempDir
    Path dir;

    @Test
    void prometheusSeesCountersMoveAndNeverResetAcrossAnUpgrade(TestNetwork net) throws Exception {
        assumeTrue(Prometheus.available(), "prometheus/promtool not installed (./warren test installs them)");
        int port = Prometheus.freePort();
        Path conf = Files.writeString(dir.resolve("bb.conf"), "audit.path = " + dir.resolve("audit.jsonl")
                + "\nbumblebee.slots = 64\nmetrics.listen = 127.0.0.1:" + port + "\n");
        ExecutorService io = Executors.newCachedThreadPool();
        List<Fd> conns = new ArrayList<>();
        try (DaemonProcess bb = new DaemonProcess("bumblebee", Main.class, dir.resolve("bb.sock"), conf,
                        dir.resolve("bb.log"));
                Prometheus prom = new Prometheus(List.of("127.0.0.1:" + port));
                ControlClient c = ControlClient.connect(bb.control);
                OnRamp ramp = new OnRamp(net.namespace("onramp").name, c, r -> BumblebeeUpgradeTest.serve(r, io))) {
            Fd s = Netns.call("/run/netns/" + ramp.client, () -> TcpSockets.connect(
                    new InetSocketAddress(InetAddress.getByName("198.18.99.9"), 9000)));
            conns.add(s);
            io.submit(() -> Streams.readAllSha256(s.get())); // the echo comes back; keep reading it
            byte[] hello = new byte[100_000];
            Streams.writeAll(s.get(), hello);
            for (int i = 0; i < 2; i++) {
                badUpgrade(c, 100 + i);
            }
            assertEquals(2, prom.await(ERRORS, v -> v == 2, 30_000));
            double packets = prom.await(PACKETS_OUT, v -> v > 10, 30_000);
            double bytes = prom.await(BYTES_OUT, v -> v >= hello.length, 30_000); // a live flow's bytes count
            prom.await("warren_nat_slots{daemon=\"bumblebee\",state=\"in_use\"}", v -> v == 1, 30_000);
            prom.await("warren_nat_slots{daemon=\"bumblebee\",state=\"free\"}", v -> v == 63, 30_000);
            prom.await("warren_upgrade_latency_seconds_count{daemon=\"bumblebee\",protocol=\"tcp\"}", v -> v == 1, 30_000);
            Prometheus.Checked checked = Prometheus.checkMetrics(http(port));
            assertEquals(0, checked.status(), "promtool check metrics:\n" + checked.output());

            long oldPid = bb.pid();
            assertEquals(0, bb.upgrade(), "upgrade in place");
            assertNotEquals(oldPid, bb.pid());
            badUpgrade(c, 200);
            Streams.writeAll(s.get(), hello);
            assertEquals(3, prom.await(ERRORS, v -> v >= 3, 30_000), "the successor counts on from 2");
            prom.await(PACKETS_OUT, v -> v > packets, 30_000);
            prom.await(BYTES_OUT, v -> v >= bytes + hello.length, 30_000);
            prom.await("warren_upgrade_latency_seconds_count{daemon=\"bumblebee\",protocol=\"tcp\"}", v -> v == 1, 30_000);
            prom.await("warren_upgrade_pause_seconds_count{daemon=\"bumblebee\"}", v -> v == 1, 30_000);
            assertEquals(0, prom.await("sum(resets(label_replace({__name__=~\"warren_.+_total\",daemon=\"bumblebee\"},"
                    + " \"family\", \"$1\", \"__name__\", \"(.+)\")[5m:500ms]))", v -> true, 10_000),
                    "counter resets seen by Prometheus");
            checked = Prometheus.checkMetrics(http(port));
            assertEquals(0, checked.status(), "promtool after the upgrade:\n" + checked.output());
        } finally {
            Fd.closeAll(conns);
            io.shutdownNow();
        }
    }

    private static void badUpgrade(ControlClient c, long id) throws Exception {
        int[] p = Native.pipe2(Native.O_CLOEXEC);
        try (Fd r = Fd.adopt(p[0]); Fd w = Fd.adopt(p[1]);
                Reply reply = c.call(Request.newBuilder().setId(id).setUpgrade(Upgrade.newBuilder().setFdFlow(0)),
                        List.of(r)).get(10, TimeUnit.SECONDS)) {
            assertEquals(warren.control.v1.Error.Code.BAD_FD_TYPE, reply.response().getError().getCode(),
                    reply.response().toString());
        }
    }

    private static String http(int port) throws Exception {
        HttpResponse<String> r = HttpClient.newHttpClient().send(HttpRequest.newBuilder(
                URI.create("http://127.0.0.1:" + port + "/metrics")).build(), HttpResponse.BodyHandlers.ofString());
        assertEquals(200, r.statusCode(), r.body());
        return r.body();
    }
}
