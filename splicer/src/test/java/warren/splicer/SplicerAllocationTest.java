package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.management.ManagementFactory;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.EndReason;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;
import warren.splicer.client.SplicerClient;

/**
 * The relay's hot path allocates nothing: bytes allocated by the daemon's loop threads
 * (com.sun.management.ThreadMXBean#getThreadAllocatedBytes) while they relay 512 MiB through one
 * pair, after a warm-up. Not a timing: an allocation count. At threads = 2 a first, idle pair
 * takes loop 0, so the measured one lives on loop 1 (placed from loop 0, relayed on its thread).
 */
@Timeout(value = 300, unit = TimeUnit.SECONDS)
class SplicerAllocationTest {
    @TempDir
    Path dir;

    @ParameterizedTest(name = "threads = {0}")
    @ValueSource(ints = {1, 2})
    void relayingAllocatesNothingOnTheLoopThreads(int threads) throws Exception {
        Fd[] listeners = Relayed.listeners();
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("a.sock"), "audit.path = /dev/null\nthreads = "
                + threads);
                SplicerClient client = SplicerClient.connect(d.control);
                Relayed idle = Relayed.open(listeners);
                Relayed r = Relayed.open(listeners)) {
            CompletableFuture<SplicerClient.Result> first = null;
            if (threads > 1) {
                CompletableFuture<Long> accepted = new CompletableFuture<>();
                first = client.splice(idle.a, idle.b, null, null, accepted::complete);
                accepted.get(10, TimeUnit.SECONDS);
            }
            CompletableFuture<SplicerClient.Result> f = client.splice(r.a, r.b, null, null, null);
            com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
            long[] loopTids = Thread.getAllStackTraces().keySet().stream().filter(t -> t.getName().startsWith("splicer-loop"))
                    .mapToLong(Thread::getId).toArray();
            assertEquals(threads, loopTids.length, "one thread per loop");
            ExecutorService pool = Executors.newFixedThreadPool(2);
            try {
                pump(pool, r, 128L << 20); // warm-up: JIT, pipes, first-time paths
                long before = allocated(mx, loopTids);
                long relayed = 512L << 20;
                pump(pool, r, relayed);
                long allocated = allocated(mx, loopTids) - before;
                long chunks = relayed / (256 << 10);
                System.out.printf("loop thread allocated %d bytes while relaying %d MiB (%d+ chunks of up to 256 KiB):"
                        + " %.4f bytes per chunk%n", allocated, relayed >> 20, chunks, (double) allocated / chunks);
                // the loop also wakes for its timers (idle check) and epoll; a per-chunk allocation of
                // even 16 bytes would show as >= 32 KiB here
                assertTrue(allocated < 16 << 10, allocated + " bytes allocated on the hot path");
            } finally {
                pool.shutdownNow();
            }
            TcpSockets.shutdownOutput(r.c);
            TcpSockets.shutdownOutput(r.u);
            try (SplicerClient.Result res = f.get(10, TimeUnit.SECONDS)) {
                assertEquals(EndReason.BOTH_EOF, res.spliced().getReason());
            }
            if (first != null) {
                TcpSockets.shutdownOutput(idle.c);
                TcpSockets.shutdownOutput(idle.u);
                first.get(10, TimeUnit.SECONDS).close();
            }
        } finally {
            Fd.closeAll(List.of(listeners));
        }
    }

    private static long allocated(com.sun.management.ThreadMXBean mx, long[] tids) {
        long sum = 0;
        for (long a : mx.getThreadAllocatedBytes(tids)) {
            sum += a;
        }
        return sum;
    }

    /** Sends {@code n} bytes from c to u and reads them there. */
    private static void pump(ExecutorService pool, Relayed r, long n) throws Exception {
        Future<?> w = pool.submit(() -> {
            byte[] buf = new byte[1 << 20];
            Pointer p = Native.allocate(buf.length);
            for (long s = 0; s < n; s += buf.length) {
                TcpSockets.writeFully(r.c, p, buf, 0, buf.length);
            }
            return null;
        });
        byte[] buf = new byte[1 << 20];
        Pointer p = Native.allocate(buf.length);
        long got = 0;
        while (got < n) {
            got += TcpSockets.read(r.u, p, buf, 0, (int) Math.min(buf.length, n - got));
        }
        w.get(60, TimeUnit.SECONDS);
    }
}
