package warren.daemon.logging;

import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.LongAdder;

/**
 * At most {@code lines} log lines per {@code interval} for one key (one repeating condition):
 * <pre>
 * no window --line--> window opens at now, printed 1
 * in window, printed &lt; lines --line--> printed (acquire &gt;= 0)
 * in window, printed = lines  --line--> suppressed, counted (acquire = -1); the first one puts
 *                                       this limit on the pending list
 * window over, suppressed n &gt; 0 --next line, or the summary pass--> "(n similar lines
 *                                       suppressed)" is printed once, then a new window
 * </pre>
 * The check is a clock read and a few field updates under this object's lock: no allocation, so
 * a per-packet path may call it (only going pending allocates a queue node, once per window).
 * The log's writer thread runs {@link #summarizeDue} when the earliest pending window ends, so a
 * burst that stops is still reported with its count.
 */
public final class RateLimit {
    /** Told when a limit first suppresses a line in a window (the log wakes its writer thread). */
    public interface Wakeup {
        void wake();
    }

    /** Prints one summary line. */
    public interface Summary {
        void print(Priority p, String lastMessage, long suppressed);
    }

    /**
     * The limits with lines held back that no summary has reported yet; the log's writer thread
     * runs {@link #summarizeDue} when {@link #dueInNanos} says. One per process ({@link #PROCESS}).
     */
    public static final class Pending {
        private final ConcurrentLinkedQueue<RateLimit> limits = new ConcurrentLinkedQueue<>();
        private volatile Wakeup wakeup = () -> {};

        public void onPending(Wakeup w) {
            wakeup = w;
        }

        /** Nanoseconds until the earliest pending window ends ({@code Long.MAX_VALUE}: none pending). */
        public long dueInNanos(long now) {
            long due = Long.MAX_VALUE;
            for (RateLimit r : limits) {
                due = Math.min(due, r.windowEnd() - now);
            }
            return due == Long.MAX_VALUE ? due : Math.max(0, due);
        }

        /** Prints a summary for each pending limit whose window is over (all of them if {@code all}). */
        public void summarizeDue(long now, boolean all, Summary out) {
            for (RateLimit r : limits) {
                Priority p;
                String last;
                long n;
                synchronized (r) {
                    if (!all && now - r.windowStart < r.interval()) {
                        continue;
                    }
                    n = r.suppressed;
                    r.suppressed = 0;
                    r.pending = false;
                    p = r.lastPriority;
                    last = r.lastMessage;
                }
                limits.remove(r);
                if (n > 0) {
                    out.print(p, last, n);
                }
            }
        }
    }

    /** The pending list of the process's log. */
    public static final Pending PROCESS = new Pending();

    private static final LongAdder SUPPRESSED = new LongAdder();
    private static volatile int defaultLines = 10;
    private static volatile long defaultIntervalNanos = 10_000_000_000L;

    private final Pending registry;
    private final String key;
    private final int lines; // 0: the process-wide default
    private final long intervalNanos;
    private boolean open;
    private long windowStart;
    private int printed;
    private long suppressed;
    private boolean pending;
    private Priority lastPriority = Priority.INFO;
    private String lastMessage = "";

    /** A limit of the process's log with the process-wide defaults ({@link #configure}). */
    public RateLimit(String key) {
        this(key, 0, 0, PROCESS);
    }

    /** {@code lines} per {@code intervalNanos} (0, 0: the defaults), pending on {@code registry}. */
    public RateLimit(String key, int lines, long intervalNanos, Pending registry) {
        this.registry = registry;
        this.key = key;
        this.lines = lines;
        this.intervalNanos = intervalNanos;
    }

    /** The defaults: {@code lines} per {@code intervalMillis}. */
    public static void configure(int lines, long intervalMillis) {
        defaultLines = Math.max(1, lines);
        defaultIntervalNanos = Math.max(1, intervalMillis) * 1_000_000L;
    }

    /** Lines suppressed by every limit of this process. */
    public static LongAdder suppressedCounter() {
        return SUPPRESSED;
    }

    public String key() {
        return key;
    }

    private int lines() {
        return lines > 0 ? lines : defaultLines;
    }

    private long interval() {
        return intervalNanos > 0 ? intervalNanos : defaultIntervalNanos;
    }

    /**
     * One occurrence at {@code now}: false if it is suppressed (counted), true if it may be
     * printed. When it opens a new window after one whose held-back lines no summary has reported
     * yet, that summary goes to {@code out} first.
     */
    public boolean acquire(long now, Summary out) {
        long unreported = 0;
        Priority p;
        String last;
        synchronized (this) {
            if (!open || now - windowStart >= interval()) {
                unreported = suppressed;
                suppressed = 0;
                open = true;
                windowStart = now;
                printed = 0;
            }
            p = lastPriority;
            last = lastMessage;
            if (printed >= lines()) {
                suppress();
                return false;
            }
            printed++;
        }
        if (unreported > 0) {
            out.print(p, last, unreported);
        }
        return true;
    }

    /**
     * True when an occurrence at {@code now} is suppressed, and then counts it; false when it
     * would be printed (nothing is taken: the caller then logs it through {@link #acquire}). For
     * hot paths, to skip formatting a line that would not be printed.
     */
    public synchronized boolean suppresses(long now) {
        if (!open || now - windowStart >= interval() || printed < lines()) {
            return false;
        }
        suppress();
        return true;
    }

    private void suppress() {
        suppressed++;
        SUPPRESSED.increment();
        if (!pending) {
            pending = true;
            registry.limits.add(this);
            registry.wakeup.wake();
        }
    }

    /** Remembers the line just printed, for the summary. */
    public synchronized void printed(Priority p, String message) {
        lastPriority = p;
        lastMessage = message;
    }

    /** Lines suppressed in the current window so far. */
    public synchronized long suppressed() {
        return suppressed;
    }

    private synchronized long windowEnd() {
        return windowStart + interval();
    }

    /** The summary text for {@code n} lines suppressed after {@code lastMessage}. */
    public static String summaryText(String lastMessage, long n) {
        return lastMessage + " (" + n + " similar line" + (n == 1 ? "" : "s") + " suppressed)";
    }
}
