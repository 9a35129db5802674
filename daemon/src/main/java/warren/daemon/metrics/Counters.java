package warren.daemon.metrics;

import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.LongAdder;

/**
 * Named monotonic counters (requests by kind, errors by code, drops by reason), reported in
 * {@code StatusReport.counters}, and the daemon's histograms. Both travel in the upgrade handoff,
 * so they count across processes. Hot paths should hold the {@link LongAdder} or
 * {@link Histogram} they bump rather than look it up by name each time. How the dotted names
 * become Prometheus families is {@link Families}'s business, at scrape time.
 */
public final class Counters {
    private final ConcurrentHashMap<String, LongAdder> counters = new ConcurrentHashMap<>();
    private final ConcurrentHashMap<String, Histogram> histograms = new ConcurrentHashMap<>();

    public LongAdder counter(String name) {
        return counters.computeIfAbsent(name, n -> new LongAdder());
    }

    /**
     * Makes {@code name} report {@code adder}, a counter kept by its owner (the audit log's drops,
     * the log's, shared by the process). A value already counted under the name is carried over.
     */
    public void attach(String name, LongAdder adder) {
        LongAdder before = counters.put(name, adder);
        if (before != null && before != adder) {
            adder.add(before.sum());
        }
    }

    public void increment(String name) {
        counter(name).increment();
    }

    public long get(String name) {
        LongAdder a = counters.get(name);
        return a == null ? 0 : a.sum();
    }

    /** A sorted copy of every counter. */
    public Map<String, Long> snapshot() {
        Map<String, Long> out = new TreeMap<>();
        counters.forEach((k, v) -> out.put(k, v.sum()));
        return out;
    }

    /**
     * The histogram of a dotted key whose family is in {@link Families} (e.g.
     * {@code task_duration.splice}); IllegalArgumentException for a key of no family.
     */
    public Histogram histogram(String key) {
        Histogram h = histograms.get(key);
        return h != null ? h : histograms.computeIfAbsent(key, k -> new Histogram(Families.histogram(k).bounds()));
    }

    /** Every histogram by key, sorted (a copy of the map; the histograms are live). */
    public Map<String, Histogram> histograms() {
        return new TreeMap<>(histograms);
    }

    /** The histograms in the handoff encoding. */
    public Map<String, warren.handoff.v1.HistogramState> histogramStates() {
        Map<String, warren.handoff.v1.HistogramState> out = new TreeMap<>();
        histograms.forEach((k, h) -> {
            warren.handoff.v1.HistogramState.Builder b = warren.handoff.v1.HistogramState.newBuilder().setSum(h.sum());
            for (double d : h.bounds()) {
                b.addUpperBounds(d);
            }
            for (long c : h.counts()) {
                b.addCounts(c);
            }
            out.put(k, b.build());
        });
        return out;
    }

    /**
     * Adds a predecessor's histograms. One whose key or buckets this version does not have is
     * left out (it restarts); returns how many were.
     */
    public int adoptHistograms(Map<String, warren.handoff.v1.HistogramState> states) {
        int skipped = 0;
        for (Map.Entry<String, warren.handoff.v1.HistogramState> e : states.entrySet()) {
            warren.handoff.v1.HistogramState st = e.getValue();
            // plain loops: this runs in an upgrade's pause, in a new JVM, where a first stream
            // pipeline's class loading and lambda linkage cost 20-60 ms (bench upgrade, 2026-12-02)
            double[] bounds = new double[st.getUpperBoundsCount()];
            for (int i = 0; i < bounds.length; i++) {
                bounds[i] = st.getUpperBounds(i);
            }
            long[] counts = new long[st.getCountsCount()];
            for (int i = 0; i < counts.length; i++) {
                counts[i] = st.getCounts(i);
            }
            try {
                if (!histogram(e.getKey()).add(bounds, counts, st.getSum())) {
                    skipped++;
                }
            } catch (IllegalArgumentException x) {
                skipped++;
            }
        }
        return skipped;
    }
}
