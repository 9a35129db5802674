package warren.daemon.metrics;

import java.util.concurrent.atomic.DoubleAdder;
import java.util.concurrent.atomic.LongAdder;

/**
 * A classic Prometheus histogram with fixed upper bounds: one {@link LongAdder} per bucket (not
 * cumulative; the last is +Inf) and a sum. {@link #observe} is a binary search and two adder
 * updates: no allocation, any thread. Unlike the client library's Histogram, its state can be
 * read out and added in, so it travels in the upgrade handoff with the counters.
 */
public final class Histogram {
    private final double[] bounds; // ascending, finite; +Inf is implied
    private final LongAdder[] counts;
    private final DoubleAdder sum = new DoubleAdder();

    Histogram(double[] bounds) {
        for (int i = 1; i < bounds.length; i++) {
            if (!(bounds[i] > bounds[i - 1])) {
                throw new IllegalArgumentException("bucket bounds must ascend");
            }
        }
        this.bounds = bounds.clone();
        this.counts = new LongAdder[bounds.length + 1];
        for (int i = 0; i < counts.length; i++) {
            counts[i] = new LongAdder();
        }
    }

    /** Records one value (seconds, for every histogram warren has). */
    public void observe(double value) {
        int lo = 0;
        int hi = bounds.length;
        while (lo < hi) { // first bound >= value (Prometheus buckets are "le")
            int mid = (lo + hi) >>> 1;
            if (bounds[mid] < value) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        counts[lo].increment();
        sum.add(value);
    }

    /** Records a duration given in nanoseconds, in seconds. */
    public void observeNanos(long nanos) {
        observe(nanos / 1e9);
    }

    /** The finite upper bounds (a copy). */
    public double[] bounds() {
        return bounds.clone();
    }

    /** Per-bucket counts, not cumulative, +Inf last. */
    public long[] counts() {
        long[] out = new long[counts.length];
        for (int i = 0; i < out.length; i++) {
            out[i] = counts[i].sum();
        }
        return out;
    }

    public double sum() {
        return sum.sum();
    }

    /**
     * Adds a predecessor's state (upgrade in place). False, and nothing added, when its bounds are
     * not these (a new version changed the buckets: the histogram then restarts).
     */
    boolean add(double[] theirBounds, long[] theirCounts, double theirSum) {
        if (!java.util.Arrays.equals(bounds, theirBounds) || theirCounts.length != counts.length) {
            return false;
        }
        for (int i = 0; i < counts.length; i++) {
            counts[i].add(theirCounts[i]);
        }
        sum.add(theirSum);
        return true;
    }
}
