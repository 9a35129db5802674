package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Cancel;
import warren.control.v1.EndReason;
import warren.control.v1.Listing;
import warren.control.v1.Request;
import warren.control.v1.TaskInfo;
import warren.daemon.client.Reply;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.splicer.client.SplicerClient;

/**
 * Splicer at threads = 2: new pairs go to the loop with the fewest pairs (Metrics' per-loop
 * gauge), each relayed on its loop's own thread; List reads every pair's counts on its loop,
 * Cancel reaches a pair on loop 1, and the shutdown drain hands back the pairs of both loops.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class SplicerLoopsTest {
    @TempDir
    Path dir;

    @Test
    void pairsSpreadOverTheLoopsAndTheControlPlaneSeesThemAll() throws Exception {
        Fd[] listeners = Relayed.listeners();
        List<Relayed> rs = new ArrayList<>();
        List<CompletableFuture<SplicerClient.Result>> results = new ArrayList<>();
        List<Long> taskNumbers = new ArrayList<>();
        RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("l.sock"), "audit.path = /dev/null\nthreads = 2");
        try (SplicerClient client = SplicerClient.connect(d.control)) {
            for (int i = 0; i < 4; i++) {
                Relayed r = Relayed.open(listeners);
                rs.add(r);
                CompletableFuture<Long> accepted = new CompletableFuture<>();
                results.add(client.splice(r.a, r.b, null, null, accepted::complete));
                taskNumbers.add(accepted.get(10, TimeUnit.SECONDS));
                r.closeHandedOver();
            }
            Set<String> loopThreads = Thread.getAllStackTraces().keySet().stream().map(Thread::getName)
                    .filter(n -> n.startsWith("splicer-loop")).collect(Collectors.toSet());
            assertEquals(Set.of("splicer-loop", "splicer-loop-1"), loopThreads, "loop 0 on the daemon's thread, loop 1 on its own");
            assertEquals(List.of(2.0, 2.0), await(() -> SplicerUpgradeTest.pairsPerLoop(d.control), List.of(2.0, 2.0)),
                    "least loaded first: two pairs on each loop");

            // i + 1 bytes through pair i, both ways, each pair on its own loop
            Pointer p = Native.allocate(64);
            for (int i = 0; i < rs.size(); i++) {
                Relayed r = rs.get(i);
                byte[] buf = new byte[i + 1];
                java.util.Arrays.fill(buf, (byte) i);
                p.put(0, buf, 0, buf.length);
                assertEquals(buf.length, Native.write(r.c.get(), p, buf.length));
                byte[] got = readFully(r.u, buf.length, p);
                assertArrayEquals(buf, got);
            }
            // List: every pair with its counts, read on the loop it lives on
            try (Reply rep = client.control().call(Request.newBuilder().setList(warren.control.v1.List.getDefaultInstance()),
                    List.of()).get(10, TimeUnit.SECONDS)) {
                Listing l = rep.response().getListing();
                assertEquals(4, l.getTasksCount(), l.toString());
                for (TaskInfo t : l.getTasksList()) {
                    int i = taskNumbers.indexOf(t.getTask());
                    assertEquals(i + 1, t.getBytesOut(), t.toString());
                    assertEquals(2, t.getTuplesCount(), t.toString());
                }
            }
            // Cancel the second pair (least loaded: loop 1)
            try (Reply rep = client.control().call(Request.newBuilder().setCancel(Cancel.newBuilder()
                    .setTask(taskNumbers.get(1))), List.of()).get(10, TimeUnit.SECONDS)) {
                assertTrue(rep.response().hasCancelled(), rep.response().toString());
            }
            try (SplicerClient.Result res = results.get(1).get(10, TimeUnit.SECONDS)) {
                assertEquals(EndReason.CANCELLED, res.spliced().getReason());
                assertEquals(2, res.spliced().getBytesAToB());
            }
            assertEquals(List.of(2.0, 1.0), await(() -> SplicerUpgradeTest.pairsPerLoop(d.control), List.of(2.0, 1.0)));
            // the drain: SHUTDOWN for the pairs left on both loops, each with its sockets
            d.close();
            for (int i : new int[] {0, 2, 3}) {
                try (SplicerClient.Result res = results.get(i).get(20, TimeUnit.SECONDS)) {
                    assertEquals(EndReason.SHUTDOWN, res.spliced().getReason());
                    assertEquals(i + 1, res.spliced().getBytesAToB());
                    assertTrue(res.a() != null && res.b() != null, "both sockets handed back");
                }
            }
        } finally {
            d.close();
            rs.forEach(Relayed::close);
            Fd.closeAll(List.of(listeners));
        }
    }

    private static byte[] readFully(Fd fd, int n, Pointer p) {
        byte[] out = new byte[n];
        int got = 0;
        while (got < n) {
            long r = Native.read(fd.get(), p, n - got);
            assertTrue(r > 0, "read " + r);
            p.get(0, out, got, (int) r);
            got += (int) r;
        }
        return out;
    }

    private static <T> T await(java.util.concurrent.Callable<T> f, T want) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        T v = f.call();
        while (!v.equals(want) && System.nanoTime() < deadline) {
            Thread.sleep(20);
            v = f.call();
        }
        return v;
    }
}
