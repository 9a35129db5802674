package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import warren.control.v1.Request;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.DaemonProcess;
import warren.fdpass.Fd;
import warren.fdpass.net.TcpSockets;

/**
 * The pair book across an upgrade in place, under a stand-in for systemd's fd store: pairs are
 * stored as 4 fds under slot names claimed lowest first (A, B, ...), the book once; a successor
 * takes the book and its predecessor's slots, so its new pairs fill the freed slots (B, D) and go
 * on past the live ones (G, H) without ever storing under a live pair's name; every entry is
 * removed by its own name when its pair ends, whichever process stored it, and the book is never
 * stored again.
 */
class SplicerPairBookTest {
    @TempDir
    Path dir;

    @ParameterizedTest(name = "threads = {0}")
    @ValueSource(ints = {1, 2})
    @Timeout(180)
    void aSuccessorTakesTheBookAndItsSlots(int threads) throws Exception {
        Path log = dir.resolve("out.log");
        Path conf = Files.writeString(dir.resolve("s.conf"), "audit.path = /dev/null\nthreads = " + threads + "\n");
        try (FakeNotify systemd = FakeNotify.bind(dir.resolve("notify.sock"))) {
            DaemonProcess d = systemd.splicer(dir.resolve("s.sock"), conf, List.of(), log);
            try (ControlClient proxy = ControlClient.connect(d.control);
                    Fd tcp = TcpSockets.listen(new InetSocketAddress("127.0.0.1", 0), 64);
                    IdlePairs first = IdlePairs.open(proxy, tcp, 6)) {
                Map<String, Integer> s = systemd.awaitNames(Set.of("c1", "book", "A", "B", "C", "D", "E", "F"));
                for (String slot : List.of("A", "B", "C", "D", "E", "F")) {
                    assertEquals(4, s.get(slot), "a pair is 4 fds: " + s);
                }
                assertEquals(1, s.get("book"));
                first.end(1);
                first.end(3);
                systemd.awaitNames(Set.of("c1", "book", "A", "C", "E", "F"));

                long before = d.pid();
                try (Reply r = proxy.call(Request.newBuilder().setId(1_000_000).setRestart(
                        warren.control.v1.Restart.getDefaultInstance()), List.of(), null, null).get(120, TimeUnit.SECONDS)) {
                    assertTrue(r.response().hasRestarted(), r.response().toString());
                }
                assertNotEquals(before, d.pid(), "upgraded");

                try (IdlePairs second = IdlePairs.open(proxy, tcp, 4, 101)) {
                    s = systemd.awaitNames(Set.of("c1", "book", "A", "B", "C", "D", "E", "F", "G", "H"));
                    for (String slot : List.of("B", "D", "G", "H")) {
                        assertEquals(4, s.get(slot), "the successor's pair under " + slot + ", 4 fds (never added to a live"
                                + " pair's): " + systemd.events());
                    }
                    first.oneByteEachWay();
                    second.oneByteEachWay();
                    first.endAndCheck();
                    second.endAndCheck();
                }
                systemd.awaitNames(Set.of("c1", "book"));
            } catch (Throwable t) {
                t.addSuppressed(new AssertionError("the daemon's log:\n" + Files.readString(log)));
                throw t;
            } finally {
                d.close();
            }
            List<String> events = systemd.events();
            assertEquals(1, systemd.stored().stream().filter("book"::equals).count(), "the book stored once: " + events);
            assertTrue(events.stream().noneMatch(e -> e.endsWith("?")), "every removal named a stored entry: " + events);
        }
    }
}
