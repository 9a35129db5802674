package warren.daemon;

/**
 * Keeps a repeating log line (one per refused connection, per refused request, per failed
 * accept) from flooding the log: the first occurrence is logged, then at most one line per
 * interval, each saying how many like it were left out since the last one. One limiter per kind of
 * line. Counters, not this, record every occurrence.
 *
 * <pre>
 * RepeatLimiter refusals = new RepeatLimiter(10_000);
 * String more = refusals.admit();
 * if (more != null) Log.warn("connection refused: ..." + more);
 * </pre>
 */
public final class RepeatLimiter {
    private final long intervalNanos;
    private long nextNanos;
    private boolean started;
    private long leftOut;

    public RepeatLimiter(long intervalMillis) {
        this.intervalNanos = intervalMillis * 1_000_000L;
    }

    /**
     * Null if this occurrence is left out of the log; otherwise what to append to the line: ""
     * or " (N more like it left out in the last S s)".
     */
    public synchronized String admit() {
        long now = System.nanoTime();
        if (started && now - nextNanos < 0) {
            leftOut++;
            return null;
        }
        started = true;
        nextNanos = now + intervalNanos;
        String more = leftOut == 0 ? "" : " (" + leftOut + " more like it left out in the last "
                + intervalNanos / 1_000_000_000L + " s)";
        leftOut = 0;
        return more;
    }

    /** Occurrences left out since the last line logged. */
    public synchronized long leftOut() {
        return leftOut;
    }
}
