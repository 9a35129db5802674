package warren.daemon.loop;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.ref.WeakReference;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Cancelled timers do not keep what they would have run: a relay cancels a pair's 1 h idle timer
 * when the pair ends, and the pair must not stay reachable from the timer queue for that hour.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class EventLoopTimerTest {

    /** Polls System.gc() until every reference is cleared or the deadline passes. */
    private static boolean collected(List<? extends WeakReference<?>> refs) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (System.nanoTime() < deadline) {
            System.gc();
            if (refs.stream().allMatch(r -> r.get() == null)) {
                return true;
            }
            Thread.sleep(10);
        }
        return false;
    }

    @Test
    void aCancelledTimerLetsGoOfItsActionAtOnce() throws Exception {
        try (EventLoop loop = new EventLoop(16, t -> { })) {
            List<WeakReference<Object>> payloads = new ArrayList<>();
            for (int i = 0; i < 10; i++) {
                Object payload = new byte[1 << 16]; // stands for a pair
                payloads.add(new WeakReference<>(payload));
                loop.schedule(3_600_000, () -> payload.hashCode()).cancel();
            }
            assertTrue(collected(payloads), "a cancelled 1 h timer still holds its action");
        }
    }

    @Test
    void cancelledTimersLeaveTheQueue() throws Exception {
        try (EventLoop loop = new EventLoop(16, t -> { })) {
            List<WeakReference<EventLoop.Timer>> timers = new ArrayList<>();
            for (int i = 0; i < 1000; i++) {
                EventLoop.Timer t = loop.schedule(3_600_000, () -> { });
                t.cancel();
                timers.add(new WeakReference<>(t));
            }
            loop.schedule(3_600_000, () -> { }); // scheduling purges once enough are cancelled
            // the last few (at most 64 since the last purge) may still wait for the next one
            assertTrue(collected(timers.subList(0, 900)), "cancelled 1 h timers stay queued until their deadline");
        }
    }
}
