package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.management.ManagementFactory;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.metrics.DaemonMetrics;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;

/**
 * What a scrape costs with many live pairs: the event loop's part (the sample: counters, the
 * relay's live byte counts over every pair, gauges) and the whole text, in time and in bytes
 * allocated, with no pair and with {@link #PAIRS} idle pairs. The pairs hold all four ends of two
 * socket pairs inside the daemon (a1-b1 and a2-b2 where a1, a2 and b1, b2 are peers), so 8,000
 * pairs fit the fd limit of one process. A measurement (printed), with loose bounds: the loop's
 * allocation must not grow with the number of pairs.
 */
@Timeout(value = 300, unit = TimeUnit.SECONDS)
class SplicerScrapeCostTest {
    private static final int PAIRS = 8000;
    private static final int SCRAPES = 30;

    @TempDir
    Path dir;

    @Test
    void scrapeCostAtManyPairs() throws Exception {
        long limit = Native.getrlimit(Native.RLIMIT_NOFILE)[0];
        int pairs = (int) Math.min(PAIRS, (limit - 1000) / 2 / 2 * 2);
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("s.sock"), "audit.path = /dev/null\n")) {
            long[] empty = measure(d.daemon.metrics(), d);
            List<CompletableFuture<Reply>> answers = new ArrayList<>();
            ControlClient c = ControlClient.connect(d.control);
            try {
                for (int i = 0; i < pairs / 2; i++) {
                    int[] x = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                    int[] y = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                    for (int k = 0; k < 2; k++) {
                        CompletableFuture<Response> accepted = new CompletableFuture<>();
                        try (Fd a = Fd.adopt(x[k]); Fd b = Fd.adopt(y[k])) {
                            answers.add(c.call(Request.newBuilder().setId(2L * i + k + 1).setSplice(Splice.newBuilder()
                                    .setFdA(0).setFdB(1)), List.of(a, b), accepted::complete));
                            Response r = accepted.get(10, TimeUnit.SECONDS);
                            assertTrue(r.hasAccepted(), r.toString());
                        }
                    }
                }
                assertEquals(pairs, d.daemon.tasks().active());
                long[] full = measure(d.daemon.metrics(), d);
                System.out.printf("SplicerScrapeCostTest: scrape with 0 pairs: loop %.1f us, %d B allocated on the loop;"
                        + " whole text %.1f us, %d B allocated by the scraping thread, %d B of OpenMetrics%n",
                        empty[0] / 1e3, empty[1], empty[2] / 1e3, empty[3], empty[4]);
                System.out.printf("SplicerScrapeCostTest: scrape with %d pairs: loop %.1f us, %d B allocated on the loop;"
                        + " whole text %.1f us, %d B allocated by the scraping thread, %d B of OpenMetrics%n",
                        pairs, full[0] / 1e3, full[1], full[2] / 1e3, full[3], full[4]);
                assertTrue(full[1] < empty[1] + (16 << 10), "the loop's allocation per scrape does not grow with pairs: "
                        + empty[1] + " -> " + full[1]);
                assertTrue(full[0] < 1_000_000_000L, "the loop's part took " + full[0] + " ns");
            } finally {
                c.close(); // the daemon drops the answers (closing the fds) when it stops
            }
        }
    }

    /** Medians over {@link #SCRAPES} scrapes after as many warm-up ones: loop ns, loop bytes, text ns, text bytes, size. */
    private static long[] measure(DaemonMetrics m, RunningDaemon d) throws Exception {
        com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        long[] loopNs = new long[SCRAPES];
        long[] loopBytes = new long[SCRAPES];
        long[] textNs = new long[SCRAPES];
        long[] textBytes = new long[SCRAPES];
        int size = 0;
        for (int round = 0; round < 2 * SCRAPES; round++) {
            long[] onLoop = d.daemon.loop().call(() -> {
                long tid = Thread.currentThread().getId();
                long a0 = mx.getThreadAllocatedBytes(tid);
                long t0 = System.nanoTime();
                m.sampleOnLoop();
                long t1 = System.nanoTime();
                return new long[] {t1 - t0, mx.getThreadAllocatedBytes(tid) - a0};
            }, 10_000);
            long tid = Thread.currentThread().getId();
            long a0 = mx.getThreadAllocatedBytes(tid);
            long t0 = System.nanoTime();
            size = m.text(true).length;
            long t1 = System.nanoTime();
            long a1 = mx.getThreadAllocatedBytes(tid);
            if (round >= SCRAPES) {
                int i = round - SCRAPES;
                loopNs[i] = onLoop[0];
                loopBytes[i] = onLoop[1];
                textNs[i] = t1 - t0;
                textBytes[i] = a1 - a0;
            }
        }
        return new long[] {median(loopNs), median(loopBytes), median(textNs), median(textBytes), size};
    }

    private static long median(long[] v) {
        long[] s = v.clone();
        Arrays.sort(s);
        return s[s.length / 2];
    }
}
