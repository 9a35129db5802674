package warren.daemon.metrics;

import io.prometheus.metrics.expositionformats.ExpositionFormatWriter;
import io.prometheus.metrics.expositionformats.OpenMetricsTextFormatWriter;
import io.prometheus.metrics.expositionformats.PrometheusTextFormatWriter;
import io.prometheus.metrics.model.snapshots.ClassicHistogramBuckets;
import io.prometheus.metrics.model.snapshots.CounterSnapshot;
import io.prometheus.metrics.model.snapshots.GaugeSnapshot;
import io.prometheus.metrics.model.snapshots.HistogramSnapshot;
import io.prometheus.metrics.model.snapshots.Labels;
import io.prometheus.metrics.model.snapshots.MetricSnapshot;
import io.prometheus.metrics.model.snapshots.MetricSnapshots;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeoutException;
import warren.daemon.loop.EventLoop;
import warren.daemon.task.TaskRegistry;
import warren.fdpass.libc.Native;

/**
 * A daemon's Prometheus metrics, built at scrape time (see {@link Families} for the names):
 * <ol>
 *   <li>On the event loop, in one go ({@link Sample}): every dotted counter, what each
 *       {@link Probe} adds for tasks in flight, and the probes' gauges. From another thread (the
 *       HTTP endpoint) this is an {@link EventLoop#call} with a short timeout; if the loop does
 *       not answer in time the previous sample is served (monotonic, a little stale) and
 *       {@code metrics.loop_timeouts} counts it.</li>
 *   <li>Off the loop's data: histograms (adders), fds in use ({@code /proc/self/fd}) and the
 *       limit (RLIMIT_NOFILE).</li>
 * </ol>
 * Nothing is added to the per-packet or per-byte paths: they keep bumping what they bumped.
 *
 * <p>The Prometheus Java client provides the data model (snapshots) and both text formats. Its
 * metric classes (prometheus-metrics-core) are not used: its Histogram cannot be seeded with a
 * predecessor's buckets, and its callback metrics would each read loop-owned state from the
 * scraping thread, one value at a time.
 */
public final class DaemonMetrics {
    /** Adds an engine's numbers to a sample. Called on the loop thread, at scrape time only. */
    @FunctionalInterface
    public interface Probe {
        void sample(Sample s);
    }

    public static final String OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    public static final String PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8";
    private static final long LOOP_TIMEOUT_MS = 2000;

    private final String daemon;
    private final String version;
    private final EventLoop loop;
    private final Counters counters;
    private final TaskRegistry tasks;
    private final List<Probe> probes = new CopyOnWriteArrayList<>();
    /** Probes of engines on other loops than the control loop, sampled on their loop. */
    private final List<Map.Entry<EventLoop, Probe>> loopProbes = new CopyOnWriteArrayList<>();
    private final ExpositionFormatWriter openMetrics = OpenMetricsTextFormatWriter.create();
    private final ExpositionFormatWriter prometheusText = PrometheusTextFormatWriter.create();
    private volatile Sample last;
    private volatile boolean handedOver;

    public DaemonMetrics(String daemon, String version, EventLoop loop, Counters counters, TaskRegistry tasks) {
        this.daemon = daemon;
        this.version = version;
        this.loop = loop;
        this.counters = counters;
        this.tasks = tasks;
    }

    /** Registers an engine's probe (its gauges and its tasks' live counts), run on the control loop. Any thread. */
    public void probe(Probe p) {
        probes.add(p);
    }

    /**
     * Registers the probe of an engine that lives on {@code on} (one of the daemon's loops): it is
     * run there, into that loop's part of the sample. Any thread.
     */
    public void probe(EventLoop on, Probe p) {
        if (on == loop) {
            probes.add(p);
        } else {
            loopProbes.add(Map.entry(on, p));
        }
    }

    /** The registry's end listener: counts the outcome and the task's duration by kind. */
    public TaskRegistry.EndListener taskEnds() {
        return (kind, outcome, nanos) -> {
            counters.increment("tasks.ended." + (outcome == null ? "unknown" : outcome));
            counters.histogram(Families.TASK_DURATION.key() + kind).observeNanos(nanos);
        };
    }

    /**
     * After an upgrade's commit: this process's numbers are the successor's now; scrapes that
     * still reach it fail rather than show tasks that moved away.
     */
    public void handedOver() {
        handedOver = true;
    }

    public String daemon() {
        return daemon;
    }

    /**
     * One sample of the loop's numbers. Loop thread. Refused once handed over (checked here, on
     * the loop, so that a scrape queued behind the commit does not see the tasks gone).
     */
    public Sample sampleOnLoop() {
        Sample s = controlPart();
        for (Map.Entry<EventLoop, List<Probe>> e : otherLoops().entrySet()) {
            EventLoop l = e.getKey();
            try { // a caller on the control loop (the Metrics request) waits here, up to the timeout
                s.merge(l.inLoop() || !l.started() || !l.isRunning() ? part(e.getValue())
                        : l.call(() -> part(e.getValue()), LOOP_TIMEOUT_MS));
            } catch (RuntimeException x) {
                throw x;
            } catch (Exception x) {
                throw new IllegalStateException("sampling an event loop failed: " + x, x);
            }
        }
        return s;
    }

    /** The control loop's part of a sample: counters, tasks, its engines' probes. Control loop. */
    private Sample controlPart() {
        if (handedOver) {
            throw new IllegalStateException(daemon + " has handed over to a successor");
        }
        Sample s = new Sample(counters.snapshot());
        s.tasksStarted = tasks.total();
        s.gauge(Families.TASKS_ACTIVE, tasks.active());
        for (Probe p : probes) {
            p.sample(s);
        }
        return s;
    }

    /** The probes of engines on other loops, by loop. */
    private Map<EventLoop, List<Probe>> otherLoops() {
        Map<EventLoop, List<Probe>> byLoop = new LinkedHashMap<>();
        for (Map.Entry<EventLoop, Probe> e : loopProbes) {
            byLoop.computeIfAbsent(e.getKey(), k -> new ArrayList<>()).add(e.getValue());
        }
        return byLoop;
    }

    /** One loop's part, taken on that loop (its engines' state is that loop's alone). */
    private static Sample part(List<Probe> ps) {
        Sample p = new Sample(Map.of());
        for (Probe probe : ps) {
            probe.sample(p);
        }
        return p;
    }

    private Sample sample() throws IOException {
        if (handedOver) {
            throw new IOException(daemon + " has handed over to a successor");
        }
        if (loop.inLoop()) {
            return sampleOnLoop();
        }
        if (!loop.isRunning()) {
            throw new IOException(daemon + " is stopping");
        }
        try { // from this thread: the control loop's part there, then each other loop's on that loop
            Sample s = loop.call(this::controlPart, LOOP_TIMEOUT_MS);
            for (Map.Entry<EventLoop, List<Probe>> e : otherLoops().entrySet()) {
                EventLoop l = e.getKey();
                s.merge(!l.started() || !l.isRunning() ? part(e.getValue()) : l.call(() -> part(e.getValue()), LOOP_TIMEOUT_MS));
            }
            last = s;
            return s;
        } catch (TimeoutException e) {
            counters.increment("metrics.loop_timeouts");
            Sample s = last;
            if (s == null) {
                throw new IOException("the event loop did not answer within " + LOOP_TIMEOUT_MS + " ms");
            }
            return s;
        } catch (IllegalStateException e) {
            throw new IOException(e.getMessage(), e);
        } catch (IOException | RuntimeException e) {
            throw e;
        } catch (Exception e) {
            throw new IOException("sampling on the event loop failed: " + e, e);
        }
    }

    /** Every metric now. Any thread (the loop's part runs on the loop). */
    public MetricSnapshots collect() throws IOException {
        return collect(sample());
    }

    private MetricSnapshots collect(Sample s) {
        List<MetricSnapshot> out = new ArrayList<>();
        counterFamilies(s, out);
        for (Families.Gauge g : s.gaugeFamilies()) {
            out.add(gauge(g, s.gauges.get(g)));
        }
        histograms(out);
        Map<List<String>, Double> one = new LinkedHashMap<>();
        one.put(List.of(), (double) openFds());
        out.add(gauge(Families.OPEN_FDS, one));
        Map<List<String>, Double> lim = new LinkedHashMap<>();
        lim.put(List.of(), (double) fdLimit());
        out.add(gauge(Families.MAX_FDS, lim));
        Map<List<String>, Double> info = new LinkedHashMap<>();
        info.put(List.of(version), 1.0);
        out.add(gauge(Families.BUILD_INFO, info));
        return new MetricSnapshots(out);
    }

    /** The metrics as text: OpenMetrics 1.0 ({@link #OPENMETRICS}) or Prometheus 0.0.4 ({@link #PROMETHEUS_TEXT}). */
    public byte[] text(boolean openMetricsFormat) throws IOException {
        return render(sample(), openMetricsFormat);
    }

    private byte[] render(Sample s, boolean openMetricsFormat) throws IOException {
        MetricSnapshots snaps = collect(s);
        ByteArrayOutputStream b = new ByteArrayOutputStream(16 << 10);
        (openMetricsFormat ? openMetrics : prometheusText).write(b, snaps);
        return b.toByteArray();
    }

    private void counterFamilies(Sample s, List<MetricSnapshot> out) {
        Map<String, Families.CounterFamily> byName = new TreeMap<>();
        Map<String, Map<String, Long>> values = new TreeMap<>(); // family -> label value ("" if none) -> sum
        for (Map.Entry<String, Long> e : s.counters.entrySet()) {
            Families.Mapped m = Families.counter(e.getKey());
            byName.put(m.family().name(), m.family());
            values.computeIfAbsent(m.family().name(), k -> new TreeMap<>())
                    .merge(m.labelValue() == null ? "" : m.labelValue(), e.getValue(), Long::sum);
        }
        byName.put(Families.TASKS_STARTED.name(), Families.TASKS_STARTED);
        values.put(Families.TASKS_STARTED.name(), Map.of("", s.tasksStarted));
        for (Map.Entry<String, Families.CounterFamily> f : byName.entrySet()) {
            Families.CounterFamily fam = f.getValue();
            CounterSnapshot.Builder b = CounterSnapshot.builder().name(fam.name()).help(fam.help());
            values.get(f.getKey()).forEach((labelValue, v) -> b.dataPoint(CounterSnapshot.CounterDataPointSnapshot
                    .builder().labels(fam.label() == null ? Labels.of("daemon", daemon)
                            : Labels.of("daemon", daemon, fam.label(), labelValue))
                    .value(v).build()));
            out.add(b.build());
        }
    }

    private GaugeSnapshot gauge(Families.Gauge g, Map<List<String>, Double> points) {
        GaugeSnapshot.Builder b = GaugeSnapshot.builder().name(g.name()).help(g.help());
        points.forEach((labelValues, v) -> b.dataPoint(GaugeSnapshot.GaugeDataPointSnapshot.builder()
                .labels(labels(g.labels(), labelValues)).value(v).build()));
        return b.build();
    }

    private Labels labels(List<String> names, List<String> values) {
        String[] kv = new String[2 + 2 * names.size()];
        kv[0] = "daemon";
        kv[1] = daemon;
        for (int i = 0; i < names.size(); i++) {
            kv[2 + 2 * i] = names.get(i);
            kv[3 + 2 * i] = values.get(i);
        }
        return Labels.of(kv);
    }

    private void histograms(List<MetricSnapshot> out) {
        Map<String, HistogramSnapshot.Builder> families = new LinkedHashMap<>();
        for (Map.Entry<String, Histogram> e : counters.histograms().entrySet()) {
            Families.HistogramFamily f = Families.histogram(e.getKey());
            Histogram h = e.getValue();
            long[] counts = h.counts();
            double[] bounds = h.bounds();
            double[] upper = java.util.Arrays.copyOf(bounds, bounds.length + 1);
            upper[bounds.length] = Double.POSITIVE_INFINITY;
            Labels labels = f.label() == null ? Labels.of("daemon", daemon)
                    : Labels.of("daemon", daemon, f.label(), e.getKey().substring(f.key().length()));
            families.computeIfAbsent(f.name(), n -> HistogramSnapshot.builder().name(f.name()).help(f.help()))
                    .dataPoint(HistogramSnapshot.HistogramDataPointSnapshot.builder().labels(labels).sum(h.sum())
                            .classicHistogramBuckets(ClassicHistogramBuckets.of(upper, counts)).build());
        }
        families.values().forEach(b -> out.add(b.build()));
    }

    /**
     * Open fds of this process. Since Linux 6.2 the size of {@code /proc/self/fd} is their count
     * (one stat); before, the directory is listed.
     */
    public static long openFds() {
        Path fds = Path.of("/proc/self/fd");
        try {
            long n = Files.size(fds);
            if (n > 0) {
                return n;
            }
        } catch (IOException e) {
            // listed below
        }
        String[] names = fds.toFile().list();
        return names == null ? -1 : names.length;
    }

    /** The soft RLIMIT_NOFILE, or -1. */
    public static long fdLimit() {
        try {
            return Native.getrlimit(Native.RLIMIT_NOFILE)[0];
        } catch (warren.fdpass.libc.NativeIoException e) {
            return -1;
        }
    }
}
