package warren.fish;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.InputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Request;
import warren.daemon.client.Reply;
import warren.linux.net.Netns;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;

/**
 * Fish at threads = 2: clients are placed on the loop whose residue class (port % 2) holds their
 * range, fish0's steering program puts their replies on that loop's queue (nothing handed over),
 * and a client whose class is used up gets a port of the other class, whose replies are handed
 * over to its loop and still arrive.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class FishLoopsTest {
    @TempDir
    Path dir;

    @Test
    void clientsSpreadOverBothLoopsAndTheirRepliesLandThere(TestNetwork net) throws Exception {
        try (Topology t = new Topology(net, dir, "threads = 2\n")) {
            steeringAttached(t);
            TestNetwork.Namespace even = t.client("even", 30000, 30000, null); // 30000 % 2 == 0: loop 0
            TestNetwork.Namespace odd = t.client("odd", 30101, 30101, null); // loop 1
            assertEquals(Map.of(0, 1.0, 1, 1.0), clientsPerLoop(t), "one client on each loop");
            try (Socket a = hello(even, t.server, Topology.SOFT + ":30000");
                    Socket b = hello(odd, t.server, Topology.SOFT + ":30101")) {
                assertTrue(a.isConnected() && b.isConnected());
            }
            Map<String, Long> c = t.status().getStatus().getCountersMap();
            assertEquals(0L, c.getOrDefault("handover.packets", 0L), "every reply read on its client's loop: " + c);
            assertEquals(0L, c.getOrDefault("drops.handover_full", 0L));
            assertEquals(0L, c.getOrDefault("drops.reply_no_flow", 0L));
        }
    }

    @Test
    void aClientWhoseClassIsUsedUpGetsTheOtherClassAndItsRepliesAreHandedOver(TestNetwork net) throws Exception {
        try (Topology t = new Topology(net, dir, "threads = 2\n")) {
            steeringAttached(t);
            // 31000-31001: one port of each class, a tie: the loop with fewer clients (0), class 0 first
            TestNetwork.Namespace client = t.client("both", 31000, 31001, null);
            assertEquals(Map.of(0, 1.0, 1, 0.0), clientsPerLoop(t));
            try (Socket first = hello(client, t.server, Topology.SOFT + ":31000");
                    Socket second = hello(client, t.server, Topology.SOFT + ":31001")) {
                Map<String, Long> c = t.status().getStatus().getCountersMap();
                assertTrue(c.getOrDefault("handover.packets", 0L) > 0,
                        "the replies to 31001 (steered to loop 1) went over to loop 0: " + c);
                assertEquals(0L, c.getOrDefault("drops.handover_full", 0L));
                assertEquals(0L, c.getOrDefault("drops.reply_no_flow", 0L));
            }
        }
    }

    private static void steeringAttached(Topology t) throws Exception {
        long unavailable = t.status().getStatus().getCountersOrDefault("tun.steering_unavailable", 0);
        Assumptions.assumeTrue(unavailable == 0, "no steering program here (bpf(2) not permitted)");
    }

    /** Connects from the client namespace and reads the greeting; checks it when {@code expect} is given. */
    private static Socket hello(TestNetwork.Namespace client, InetAddress server, String expect) throws Exception {
        Socket s = Netns.call("/run/netns/" + client.name, () -> {
            Socket k = new Socket();
            k.connect(new InetSocketAddress(server, 80), 5000);
            return k;
        });
        s.setSoTimeout(5000);
        s.getOutputStream().write("GET / HTTP/1.0\r\n\r\n".getBytes(StandardCharsets.US_ASCII));
        InputStream in = s.getInputStream();
        byte[] b = new byte[512];
        int n = in.read(b);
        String text = new String(b, 0, n, StandardCharsets.US_ASCII);
        assertTrue(text.contains("you are " + Topology.SOFT + ":"), text);
        if (expect != null && expect.contains(":")) {
            assertTrue(text.contains("you are " + expect), text);
        }
        return s; // the server holds the connection until the client closes it
    }

    /** warren_fish_clients by loop, from a Metrics request. */
    static Map<Integer, Double> clientsPerLoop(Topology t) throws Exception {
        try (Reply r = t.control.call(Request.newBuilder().setMetrics(warren.control.v1.Metrics.getDefaultInstance()),
                List.of()).get(10, TimeUnit.SECONDS)) {
            Map<Integer, Double> byLoop = new TreeMap<>();
            Matcher m = Pattern.compile("(?m)^warren_fish_clients\\{[^}]*loop=\"(\\d+)\"[^}]*\\} (\\S+)$")
                    .matcher(r.response().getMetrics().getText());
            while (m.find()) {
                byLoop.put(Integer.parseInt(m.group(1)), Double.parseDouble(m.group(2)));
            }
            return byLoop;
        }
    }
}
