package warren.daemon.logging;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** At most N lines per interval per key, then one summary with the count; times are given, not waited for. */
class RateLimitTest {
    private static final long S = 1_000_000_000L;

    private final RateLimit.Pending pending = new RateLimit.Pending(); // not the process's log
    private final List<String> out = new ArrayList<>();
    private final RateLimit.Summary summary = (p, last, n) -> out.add(p.prefix() + RateLimit.summaryText(last, n));

    /** What a caller does: acquire, print, remember. */
    private boolean line(RateLimit r, long now, String msg) {
        if (!r.acquire(now, summary)) {
            return false;
        }
        out.add("<4>" + msg);
        r.printed(Priority.WARNING, msg);
        return true;
    }

    @Test
    void aBurstPrintsNLinesAndOneSummaryWhenItsIntervalEnds() {
        RateLimit r = new RateLimit("test.burst", 3, 10 * S, pending);
        long t0 = 1000 * S;
        long before = RateLimit.suppressedCounter().sum();
        for (int i = 0; i < 1000; i++) {
            line(r, t0 + i * 1000L, "no free port for flow " + i);
        }
        assertEquals(List.of("<4>no free port for flow 0", "<4>no free port for flow 1", "<4>no free port for flow 2"),
                out);
        assertEquals(997, r.suppressed());
        assertEquals(997, RateLimit.suppressedCounter().sum() - before);
        assertTrue(pending.dueInNanos(t0) <= 10 * S, "a summary is due when the window ends");

        pending.summarizeDue(t0 + 5 * S, false, summary); // window not over: nothing yet
        assertEquals(3, out.size());
        pending.summarizeDue(t0 + 10 * S, false, summary);
        assertEquals("<4>no free port for flow 2 (997 similar lines suppressed)", out.get(3));
        assertEquals(4, out.size());
        pending.summarizeDue(t0 + 30 * S, false, summary);
        assertEquals(4, out.size(), "reported once");

        assertTrue(line(r, t0 + 31 * S, "again"), "a new window prints again");
        assertEquals("<4>again", out.get(4));
    }

    @Test
    void theNextLineAfterTheIntervalReportsTheCountIfNoSummaryPassCame() {
        RateLimit r = new RateLimit("test.next", 1, 10 * S, pending);
        long t0 = 2000 * S;
        assertTrue(line(r, t0, "first"));
        assertFalse(line(r, t0 + 1, "second"));
        assertFalse(line(r, t0 + 2, "third"));
        assertTrue(line(r, t0 + 11 * S, "fourth"));
        assertEquals(List.of("<4>first", "<4>first (2 similar lines suppressed)", "<4>fourth"), out);
        pending.summarizeDue(t0 + 100 * S, false, summary);
        assertEquals(3, out.size(), "nothing left to report");
    }

    @Test
    void aSuppressedOccurrenceAllocatesNothing() {
        RateLimit r = new RateLimit("test.alloc", 1, 3600 * S, pending);
        long t0 = System.nanoTime();
        assertTrue(line(r, t0, "printed"));
        com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory
                .getThreadMXBean();
        for (int i = 0; i < 100_000; i++) { // compiled, and pending once
            r.suppresses(t0 + i);
        }
        long tid = Thread.currentThread().getId();
        long before = mx.getThreadAllocatedBytes(tid);
        for (int i = 0; i < 1_000_000; i++) {
            if (!r.suppresses(t0 + i)) {
                throw new AssertionError("not suppressed");
            }
        }
        long allocated = mx.getThreadAllocatedBytes(tid) - before;
        assertTrue(allocated < 1024, allocated + " bytes for 1,000,000 suppressed occurrences");
    }

    @Test
    void suppressesCountsWithoutTakingALineAndTheKeysAreIndependent() {
        RateLimit a = new RateLimit("test.a", 2, 10 * S, pending);
        RateLimit b = new RateLimit("test.b", 2, 10 * S, pending);
        long t0 = 3000 * S;
        assertFalse(a.suppresses(t0), "nothing printed yet");
        assertTrue(line(a, t0, "a1"));
        assertFalse(a.suppresses(t0 + 1), "one more may be printed");
        assertTrue(line(a, t0 + 2, "a2"));
        assertTrue(a.suppresses(t0 + 3), "the window is full");
        assertEquals(1, a.suppressed(), "counted");
        assertTrue(line(b, t0 + 4, "b1"), "another key is not held back");
        assertFalse(a.suppresses(t0 + 10 * S), "a new window");
    }
}
