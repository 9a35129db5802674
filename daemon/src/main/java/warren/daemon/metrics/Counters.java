package warren.daemon.metrics;

import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.LongAdder;

/**
 * Named monotonic counters (requests by kind, errors by code, drops by reason), reported in
 * {@code StatusReport.counters}. Hot paths should hold the {@link LongAdder} they bump rather
 * than look it up by name each time.
 */
public final class Counters {
    private final ConcurrentHashMap<String, LongAdder> counters = new ConcurrentHashMap<>();

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
}
