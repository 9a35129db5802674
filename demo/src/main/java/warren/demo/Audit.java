package warren.demo;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** A daemon's audit file (JSON lines, written by the audit's writer thread) and short forms of its lines. */
final class Audit {
    /** The top-level fields a person wants to see; the rest (tcp_info, peer credentials...) is left out. */
    private static final List<String> KEYS = List.of("event", "task", "kind", "tenant", "soft_unicast_ip", "port_first",
            "port_last", "client", "egress", "original", "translated", "tuple", "a_remote", "b_remote", "reason",
            "duration_ms", "bytes_a_to_b", "bytes_b_to_a", "bytes_in", "bytes_out", "packets_in", "packets_out",
            "packets", "bytes");
    private static final String VALUE = "(\"(?:[^\"\\\\]|\\\\.)*\"|-?[0-9][0-9.eE+-]*|true|false|null)";

    private Audit() {}

    static List<String> lines(Path file) {
        try {
            return Files.exists(file) ? Files.readAllLines(file) : List.of();
        } catch (IOException e) {
            return List.of();
        }
    }

    /** Waits (deadline {@code seconds}) until the file's lines satisfy {@code done}; returns them either way. */
    static List<String> await(Path file, Predicate<List<String>> done, int seconds) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        List<String> lines = lines(file);
        while (!done.test(lines) && System.nanoTime() < deadline) {
            Thread.sleep(20);
            lines = lines(file);
        }
        return lines;
    }

    static long count(List<String> lines, String event) {
        return lines.stream().filter(l -> l.contains("\"event\":\"" + event + "\"")).count();
    }

    /** The lines of task {@code task} (its number as text). */
    static List<String> ofTask(List<String> lines, String task) {
        return lines.stream().filter(l -> task.equals(field(l, "task"))).toList();
    }

    /** One field's raw value (a JSON string keeps its quotes), or null. */
    static String field(String line, String key) {
        Matcher m = Pattern.compile("\"" + Pattern.quote(key) + "\":" + VALUE).matcher(line);
        return m.find() ? m.group(1) : null;
    }

    /** {@code HH:MM:SS.mmm key=value ...} with the fields of {@link #KEYS} in their order. */
    static String shorten(String line) {
        StringBuilder b = new StringBuilder();
        String ts = field(line, "ts");
        if (ts != null && ts.length() > 24) {
            b.append(ts, 12, 24).append(' ');
        }
        for (String k : KEYS) {
            String v = field(line, k);
            if (v != null) {
                b.append(k).append('=').append(v.startsWith("\"") ? v.substring(1, v.length() - 1) : v).append(' ');
            }
        }
        return b.toString().strip();
    }
}
