package warren.daemon.testing.livefuzz;

import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The task numbers the daemon has handed out so far (from Accepted answers), so that Cancel and
 * Trace sometimes name a real task. Which one is picked depends on what has been seen, so those
 * two fields are the part of a message that its seed alone does not fix.
 */
public final class TaskNumbers {
    private final AtomicLong highest = new AtomicLong();
    private final AtomicLong accepted = new AtomicLong();

    /** An Accepted answer named {@code task}. */
    public void seen(long task) {
        accepted.incrementAndGet();
        highest.accumulateAndGet(task, Math::max);
    }

    public long accepted() {
        return accepted.get();
    }

    /** A task number at most 16 below the highest seen (or 1..16 before any). */
    public long pick(SplittableRandom rnd) {
        return Math.max(1, highest.get() - rnd.nextInt(16));
    }
}
