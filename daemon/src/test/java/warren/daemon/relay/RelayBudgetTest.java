package warren.daemon.relay;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import warren.control.v1.EndReason;
import warren.control.v1.Spliced;
import warren.daemon.metrics.Counters;
import warren.daemon.testing.LoopThread;
import warren.fdpass.Fd;
import warren.fdpass.FdCount;
import warren.fdpass.TestSockets;
import warren.fdpass.libc.Native;

/**
 * Every wakeup has a budget: a pair whose two sockets are the two ends of one socketpair feeds
 * itself (each byte written to b comes straight back on a), so its pump always makes progress.
 * The loop must still turn: other work (a posted task, here standing for another client's Status)
 * runs while the pair is fed, and the pair ends when asked to. The relay itself is driven here,
 * below the handler that refuses such pairs (issue 12, item 1).
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class RelayBudgetTest {
    @Test
    void aPairFeedingItselfDoesNotFreezeTheLoop() throws Exception {
        int before = FdCount.now();
        LoopThread lt = new LoopThread("relay-loop", 64);
        Relay relay = new Relay(lt.loop, new Counters(), new Relay.Settings(64 * 1024, 4, 64));
        Fd[] sv = TestSockets.streamPair();
        Fd writer = sv[0].dup(); // the test's copy of a: what it writes arrives on b
        CompletableFuture<Spliced> ended = new CompletableFuture<>();
        try {
            Pair p = lt.on(() -> relay.start(null, sv[0], sv[1], 0, 0, 0, (call, a, b, counts, audit) -> {
                a.close();
                b.close();
                ended.complete(counts);
            }, null));
            TestSockets.writeAll(writer, new byte[] {42});
            long first = -1;
            long last = -1;
            for (int i = 0; i < 20; i++) {
                // a task posted to the loop runs within a few seconds although the pair never runs dry
                long moved = lt.loop.call(() -> p.read[Pair.B_TO_A], 5_000);
                first = first < 0 ? moved : first;
                last = moved;
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (last - first < 1_000 && System.nanoTime() < deadline) {
                last = lt.loop.call(() -> p.read[Pair.B_TO_A], 5_000);
            }
            System.out.printf("the self-fed pair moved its byte %d times while the loop served 20+ tasks%n", last);
            assertTrue(last - first >= 1_000, "the pair is really fed between tasks: " + first + " -> " + last);
            assertEquals(0L, (long) lt.loop.call(() -> (long) lt.errors.size(), 5_000));
            lt.loop.execute(() -> relay.finish(p, EndReason.CANCELLED, 0, "test over"));
            assertEquals(EndReason.CANCELLED, ended.get(10, TimeUnit.SECONDS).getReason());
            assertEquals(0, (int) lt.on(relay::active));
        } finally {
            writer.close();
            lt.stop();
            relay.close();
        }
        assertTrue(lt.finished(), "the loop thread returned after stop()");
        lt.loop.close();
        assertTrue(lt.errors.isEmpty(), lt.errors.toString());
        assertEquals(before, FdCount.awaitCount(before), FdCount::dump);
    }
}
