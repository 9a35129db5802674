package warren.daemon.metrics;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * What the event loops report at one scrape, each loop's part taken on that loop in one go so
 * that it is consistent (and merged: counters and gauges with the same labels add up): every counter, plus what the engines add for their tasks in flight (bytes of live
 * pairs, packets of live clients: a task's counts join the dotted counter only when it ends), and
 * their gauges. Built by {@link DaemonMetrics}, filled by its {@link DaemonMetrics.Probe}s.
 */
public final class Sample {
    final Map<String, Long> counters;
    final Map<Families.Gauge, Map<List<String>, Double>> gauges = new LinkedHashMap<>();
    long tasksStarted;

    Sample(Map<String, Long> counters) {
        this.counters = new TreeMap<>(counters);
    }

    /** Adds {@code value} to the dotted counter {@code name} (e.g. the bytes of pairs in flight). */
    public void addCounter(String name, long value) {
        counters.merge(name, value, Long::sum);
    }

    /**
     * Adds {@code value} to a gauge with these label values (as many as the gauge has labels);
     * two calls with the same labels add up (e.g. two clients of one tenant).
     */
    public void gauge(Families.Gauge g, double value, String... labelValues) {
        if (labelValues.length != g.labels().size()) {
            throw new IllegalArgumentException(g.name() + " has labels " + g.labels() + ", got "
                    + Arrays.toString(labelValues));
        }
        gauges.computeIfAbsent(g, k -> new LinkedHashMap<>()).merge(List.of(labelValues), value, Double::sum);
    }

    /** Adds another loop's part of the sample: counters and gauges with the same labels add up. */
    void merge(Sample part) {
        part.counters.forEach(this::addCounter);
        part.gauges.forEach((g, points) -> points.forEach((labels, v) ->
                gauges.computeIfAbsent(g, k -> new LinkedHashMap<>()).merge(labels, v, Double::sum)));
    }

    /** The counters, sorted by name (after the probes' additions). */
    public Map<String, Long> counters() {
        return counters;
    }

    /** A gauge's value for these label values, or NaN. */
    public double gaugeValue(Families.Gauge g, String... labelValues) {
        Map<List<String>, Double> m = gauges.get(g);
        Double v = m == null ? null : m.get(List.of(labelValues));
        return v == null ? Double.NaN : v;
    }

    List<Families.Gauge> gaugeFamilies() {
        return new ArrayList<>(gauges.keySet());
    }
}
