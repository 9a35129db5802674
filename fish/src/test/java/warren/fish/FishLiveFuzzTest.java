package warren.fish;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.SocketTimeoutException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Response;
import warren.daemon.client.Reply;
import warren.daemon.testing.livefuzz.LiveFuzzer;
import warren.daemon.testing.livefuzz.Messages;
import warren.linux.net.Netns;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;

/**
 * The live-daemon fuzzer against a real Fish process in its test world ({@link Topology}: test
 * namespaces only, removed afterwards): 5,000 mutated control messages with fds of every kind
 * (100,000 with {@code ./warren fuzz live}), Egress requests on soft-unicast IPs inside and outside
 * its prefixes, some clients with random packets queued, Status answered throughout, every request
 * answered, the fd count back to its baseline, and a real client's UDP exchange through Fish before
 * and after. Short timeouts so that clients on datagram sockets (whose peer's close Fish cannot
 * see) and their flows end within the run's end.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 1800, unit = TimeUnit.SECONDS)
class FishLiveFuzzTest {
    private static final String TIMEOUTS = "fish.client_idle_timeout = 2s\nfish.udp_timeout = 2s\nfish.tcp_timeout = 5s\n"
            + "fish.tcp_close_timeout = 1s\nfish.icmp_timeout = 2s\n";

    @TempDir
    Path dir;

    @Test
    void mutatedControlMessagesWithFdsOfEveryKindLeaveFishServingAndItsFdsAtBaseline(TestNetwork net) throws Exception {
        try (Topology t = new Topology(net, dir, TIMEOUTS, true)) {
            exchangeThroughARealClient(t, "before", 30000);
            List<byte[]> soft = List.of(InetAddress.getByName(Topology.SOFT).getAddress(),
                    InetAddress.getByName("198.18.202.6").getAddress(), InetAddress.getByName(Topology.SOFT6).getAddress());
            LiveFuzzer.Result r = new LiveFuzzer(new LiveFuzzer.Daemon("fish", t.process.control, t.process.pid(),
                    new Messages.Target(soft)), LiveFuzzer.Settings.fromEnvironment(5_000)).run();
            assertTrue(r.findings().isEmpty(), () -> r + "\nlog:\n" + tail(dir.resolve("fish.log")));
            assertEquals(r.fdsBaseline(), r.fdsAfter(), r::toString);
            exchangeThroughARealClient(t, "after", 30100);
            assertTrue(t.process.process().isAlive(), "the first process still serves");
        }
    }

    /** A client namespace with its Egress; one UDP exchange with the echo server; the client ended (EgressEnded). */
    private static void exchangeThroughARealClient(Topology t, String tenant, int firstPort) throws Exception {
        CompletableFuture<Reply> ended = new CompletableFuture<>();
        TestNetwork.Namespace client = t.client(tenant, firstPort, firstPort + 9, ended);
        try (DatagramSocket s = Netns.call("/run/netns/" + client.name, DatagramSocket::new)) {
            s.connect(t.server, 7);
            s.setSoTimeout(1000);
            byte[] req = ("ping " + tenant).getBytes(StandardCharsets.US_ASCII);
            DatagramPacket in = new DatagramPacket(new byte[256], 256);
            for (int tries = 0; ; tries++) {
                s.send(new DatagramPacket(req, req.length));
                try {
                    s.receive(in);
                    break;
                } catch (SocketTimeoutException e) {
                    if (tries == 5) {
                        throw e;
                    }
                }
            }
            String got = new String(in.getData(), 0, in.getLength(), StandardCharsets.US_ASCII);
            assertTrue(got.startsWith("ping " + tenant + " from " + Topology.SOFT + ":"), got);
        }
        t.endClients();
        try (Reply r = ended.get(30, TimeUnit.SECONDS)) {
            assertEquals(Response.BodyCase.EGRESS_ENDED, r.response().getBodyCase(), r.response()::toString);
        }
    }

    private static String tail(Path log) {
        try {
            String s = Files.readString(log);
            return s.length() > 8000 ? s.substring(s.length() - 8000) : s;
        } catch (java.io.IOException e) {
            return "(no log: " + e + ")";
        }
    }
}
