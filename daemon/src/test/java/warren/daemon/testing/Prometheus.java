package warren.daemon.testing;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Comparator;
import java.util.List;
import java.util.OptionalDouble;
import java.util.concurrent.TimeUnit;
import java.util.function.DoublePredicate;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * A real Prometheus server (Debian's {@code prometheus}, installed by {@code ./warren test}) for
 * metrics tests: its own temporary config and TSDB, listening on a free loopback port, scraping
 * the given targets every second. {@link #query} asks its HTTP API; {@link #close} kills it (by
 * pid) and removes its directory. {@link #checkMetrics} runs {@code promtool check metrics}.
 */
public final class Prometheus implements AutoCloseable {
    private static final Path BINARY = Path.of("/usr/bin/prometheus");
    private static final Path PROMTOOL = Path.of("/usr/bin/promtool");

    private final Path dir;
    private final Process process;
    private final int port;
    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(2)).build();

    public static boolean available() {
        return Files.isExecutable(BINARY) && Files.isExecutable(PROMTOOL);
    }

    /** A free TCP port on 127.0.0.1 (bound and released: good enough for a test). */
    public static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket()) {
            s.bind(new InetSocketAddress("127.0.0.1", 0));
            return s.getLocalPort();
        }
    }

    /** Starts Prometheus scraping {@code targets} ({@code 127.0.0.1:PORT}, path /metrics) and waits until it is ready. */
    public Prometheus(List<String> targets) throws Exception {
        dir = Files.createTempDirectory("warren-prometheus-");
        port = freePort();
        StringBuilder conf = new StringBuilder("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                + "scrape_configs:\n  - job_name: warren\n    static_configs:\n      - targets: [");
        for (int i = 0; i < targets.size(); i++) {
            conf.append(i > 0 ? ", " : "").append('\'').append(targets.get(i)).append('\'');
        }
        conf.append("]\n");
        Path config = Files.writeString(dir.resolve("prometheus.yml"), conf);
        process = new ProcessBuilder(BINARY.toString(), "--config.file=" + config,
                "--storage.tsdb.path=" + dir.resolve("data"), "--web.listen-address=127.0.0.1:" + port,
                "--log.level=warn").redirectErrorStream(true).redirectOutput(dir.resolve("prometheus.log").toFile())
                .start();
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (!ready()) {
                if (!process.isAlive() || System.nanoTime() > deadline) {
                    throw new IllegalStateException("prometheus did not become ready: " + log());
                }
                Thread.sleep(50);
            }
        } catch (Exception | Error e) {
            close();
            throw e;
        }
    }

    private boolean ready() {
        try {
            return get("/-/ready").statusCode() == 200;
        } catch (IOException e) {
            return false;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }

    private HttpResponse<String> get(String path) throws IOException, InterruptedException {
        return http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path))
                .timeout(Duration.ofSeconds(5)).build(), HttpResponse.BodyHandlers.ofString());
    }

    public String log() {
        try {
            return Files.readString(dir.resolve("prometheus.log"));
        } catch (IOException e) {
            return "(no log: " + e.getMessage() + ")";
        }
    }

    private static final Pattern VALUE = Pattern.compile("\"value\":\\[[0-9.e+]+,\"([^\"]+)\"\\]");

    /** The value of an instant query that selects one series, or empty if it has none (yet). */
    public OptionalDouble query(String promql) throws IOException, InterruptedException {
        HttpResponse<String> r = get("/api/v1/query?query=" + URLEncoder.encode(promql, StandardCharsets.UTF_8));
        if (r.statusCode() != 200) {
            throw new IOException("query " + promql + ": HTTP " + r.statusCode() + ": " + r.body());
        }
        Matcher m = VALUE.matcher(r.body());
        if (!m.find()) {
            return OptionalDouble.empty();
        }
        double v = Double.parseDouble(m.group(1));
        if (m.find()) {
            throw new IOException("query " + promql + " selects more than one series: " + r.body());
        }
        return OptionalDouble.of(v);
    }

    /** Polls {@link #query} until its value passes {@code ok}; returns it, or fails with the last answer. */
    public double await(String promql, DoublePredicate ok, long timeoutMs) throws Exception {
        long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
        OptionalDouble v = OptionalDouble.empty();
        while (System.nanoTime() < deadline) {
            v = query(promql);
            if (v.isPresent() && ok.test(v.getAsDouble())) {
                return v.getAsDouble();
            }
            Thread.sleep(100);
        }
        String targets;
        try {
            targets = get("/api/v1/targets").body();
        } catch (IOException e) {
            targets = e.toString();
        }
        throw new AssertionError("Prometheus: " + promql + " = " + v + " after " + timeoutMs + " ms; targets: "
                + targets + "\nlog: " + log());
    }

    /** {@code promtool check metrics} on {@code text}: its exit status and output. */
    public static Checked checkMetrics(String text) throws Exception {
        Process p = new ProcessBuilder(PROMTOOL.toString(), "check", "metrics").redirectErrorStream(true).start();
        try (var in = p.getOutputStream()) {
            in.write(text.getBytes(StandardCharsets.UTF_8));
        }
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(30, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new IllegalStateException("promtool did not finish");
        }
        return new Checked(p.exitValue(), out);
    }

    /** What promtool said. */
    public record Checked(int status, String output) {}

    @Override
    public void close() throws Exception {
        process.destroy(); // SIGTERM to this pid only
        if (!process.waitFor(20, TimeUnit.SECONDS)) {
            process.destroyForcibly();
            process.waitFor(10, TimeUnit.SECONDS);
        }
        try (Stream<Path> s = Files.walk(dir)) {
            s.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
    }
}
