package warren.fish;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.net.InetSocketAddress;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Egress;
import warren.control.v1.Request;
import warren.daemon.client.Reply;
import warren.daemon.testing.DaemonProcess;
import warren.daemon.testing.Prometheus;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;
import warren.linux.net.Netns;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;

/**
 * A real Prometheus server scrapes a real Fish process through an in-place upgrade while one
 * client lives on with an open TCP flow: rejected requests and the client's packets are read back
 * before and after and never go down (no counter reset at all), the free ports of its tenant and
 * the reservations are there, and promtool accepts the endpoint's text.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class FishMetricsTest {
    private static final String ERRORS = "warren_errors_total{daemon=\"fish\",code=\"BAD_FD_TYPE\"}";
    private static final String PACKETS_OUT = "warren_ip_packets_total{daemon=\"fish\",direction=\"out\"}";

    @TempDir
    Path dir;

    @Test
    void prometheusSeesCountersMoveAndNeverResetAcrossAnUpgrade(TestNetwork net) throws Exception {
        assumeTrue(Prometheus.available(), "prometheus/promtool not installed (./warren test installs them)");
        int port = Prometheus.freePort();
        List<Fd> conns = new ArrayList<>();
        try (Topology t = new Topology(net, dir, "metrics.listen = 127.0.0.1:" + port + "\n", true);
                Prometheus prom = new Prometheus(List.of("127.0.0.1:" + port))) {
            DaemonProcess fish = t.process;
            TestNetwork.Namespace client = t.client("metrics", 20000, 20099, new CompletableFuture<Reply>());
            // one TCP flow to the internet namespace's HTTP server, kept open (it holds a port)
            Fd conn = Netns.call("/run/netns/" + client.name, () -> TcpSockets.connect(new InetSocketAddress(t.server, 80)));
            conns.add(conn);
            for (int i = 0; i < 2; i++) {
                badEgress(t, 100 + i);
            }
            assertEquals(2, prom.await(ERRORS, v -> v == 2, 30_000));
            double packets = prom.await(PACKETS_OUT, v -> v >= 2, 30_000); // SYN, ACK of a live client
            prom.await("warren_ports_free{daemon=\"fish\",tenant=\"metrics\",protocol=\"tcp\"}", v -> v == 99, 30_000);
            prom.await("warren_ports_free{daemon=\"fish\",tenant=\"metrics\",protocol=\"udp\"}", v -> v == 100, 30_000);
            prom.await("warren_reservations_total{daemon=\"fish\"}", v -> v >= 1, 30_000);
            Prometheus.Checked checked = Prometheus.checkMetrics(http(port));
            assertEquals(0, checked.status(), "promtool check metrics:\n" + checked.output());

            long oldPid = fish.pid();
            assertEquals(0, fish.upgrade(), "upgrade in place");
            assertNotEquals(oldPid, fish.pid());
            badEgress(t, 200);
            Native.shutdown(conn.get(), Native.SHUT_WR); // FIN through the successor
            assertEquals(3, prom.await(ERRORS, v -> v >= 3, 30_000), "the successor counts on from 2");
            prom.await(PACKETS_OUT, v -> v > packets, 30_000);
            prom.await("warren_upgrade_pause_seconds_count{daemon=\"fish\"}", v -> v == 1, 30_000);
            assertEquals(0, prom.await("sum(resets(label_replace({__name__=~\"warren_.+_total\",daemon=\"fish\"},"
                    + " \"family\", \"$1\", \"__name__\", \"(.+)\")[5m:500ms]))", v -> true, 10_000),
                    "counter resets seen by Prometheus");
            checked = Prometheus.checkMetrics(http(port));
            assertEquals(0, checked.status(), "promtool after the upgrade:\n" + checked.output());
        } finally {
            Fd.closeAll(conns);
        }
    }

    private static void badEgress(Topology t, long id) throws Exception {
        int[] p = Native.pipe2(Native.O_CLOEXEC);
        try (Fd r = Fd.adopt(p[0]); Fd w = Fd.adopt(p[1]);
                Reply reply = t.control.call(Request.newBuilder().setId(id).setEgress(Egress.newBuilder()
                        .setFdPackets(0)), List.of(r)).get(10, TimeUnit.SECONDS)) {
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
