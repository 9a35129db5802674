package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.daemon.client.ControlClient;
import warren.daemon.testing.DaemonProcess;
import warren.fdpass.Fd;
import warren.fdpass.net.TcpSockets;

/**
 * A Splicer under a stand-in for systemd (a notify socket of the test's own) stores no more pairs
 * than systemd could hand back after a crash (FdStoreBudget): with RLIMIT_NOFILE's hard limit at
 * 1,100 that is 1,100 / 2 - 512 = 38 fds: the control connection, the pair book and 9 pairs of 4
 * (under the slot names A to I). The 10th pair and later still relay, unstored, and the log says
 * which limit and why.
 */
class SplicerFdStoreBudgetTest {
    @TempDir
    Path dir;

    @Test
    @Timeout(120)
    void pairsPastWhatSystemdCouldHandBackRunUnstoredAndTheLogSaysWhy() throws Exception {
        Path log = dir.resolve("out.log");
        Path conf = Files.writeString(dir.resolve("s.conf"), "");
        try (FakeNotify systemd = FakeNotify.bind(dir.resolve("notify.sock"))) {
            DaemonProcess d = systemd.splicer(dir.resolve("s.sock"), conf, List.of("prlimit", "--nofile=1100:1100", "--"), log);
            try (ControlClient proxy = ControlClient.connect(d.control);
                    Fd tcp = TcpSockets.listen(new InetSocketAddress("127.0.0.1", 0), 64);
                    IdlePairs pairs = IdlePairs.open(proxy, tcp, 12)) {
                String why = await(log, "pair of task 10 not stored");
                assertTrue(why.contains("the fd store would hold up to 42 fds with 10 tasks") && why.contains("about 38")
                        && why.contains("RLIMIT_NOFILE") && why.contains("it runs"), why);
                pairs.oneByteEachWay(); // all twelve relay, stored or not
                pairs.endAndCheck();
            } catch (Throwable t) {
                t.addSuppressed(new AssertionError("the daemon's log:\n" + Files.readString(log)));
                throw t;
            } finally {
                d.close();
            }
            // a pair is stored before its Accepted: the 12 were all answered, so this is all there was
            List<String> stored = systemd.stored();
            List<String> pairsStored = stored.stream()
                    .filter(x -> warren.daemon.FdStoreNames.parse(x).kind() == warren.daemon.FdStoreNames.Kind.SLOT).toList();
            assertEquals(List.of("A", "B", "C", "D", "E", "F", "G", "H", "I"), pairsStored, "stored: " + stored);
            assertTrue(stored.contains("c1"), "the connection: " + stored);
            assertEquals(1, stored.stream().filter("book"::equals).count(), "the pair book, once: " + stored);
        }
    }

    private static String await(Path log, String text) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (System.nanoTime() < deadline) {
            for (String l : Files.exists(log) ? Files.readAllLines(log) : List.<String>of()) {
                if (l.contains(text)) {
                    return l;
                }
            }
            Thread.sleep(20);
        }
        throw new AssertionError("no line with \"" + text + "\" in:\n" + Files.readString(log));
    }
}
