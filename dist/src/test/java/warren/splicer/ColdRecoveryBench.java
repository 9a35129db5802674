package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * {@code ./warren bench recovery}: the part of a kill -9 recovery that grows with the pairs,
 * measured past systemd's ceiling here. Each run is a fresh JVM ({@link warren.daemon.ColdRecovery},
 * the daemons' JVM options) that makes an fd store of N pairs and recovers Splicer from it, timing
 * the "recovered" line's phases after main; sizes and runs alternate ({@code
 * -Dwarren.recovery.pairs=500,1000,2000,3000 -Dwarren.recovery.runs=3}; {@code
 * -Dwarren.recovery.format=p} for the p&lt;TASK&gt; entries of before the pair book). Printed: the median of
 * each phase per size, the cost per 1,000 more pairs between sizes, and what the last step's slope
 * gives at 8,000 pairs (issue 16's goal: < 1 s from the crash to relaying again, of which the JVM's
 * start and systemd's fork and exec, ~0.4 s under the unit, are {@code ./warren bench crash}'s).
 * Not a test ({@code *Bench}: left out of {@code ./warren test}).
 */
class ColdRecoveryBench {
    private static final Pattern PHASE = Pattern.compile("(grouped|daemon built|entries read|adopted|started) in ([0-9.]+) ms");
    private static final Pattern SERVING = Pattern.compile("serving ([0-9.]+) ms after main");
    private static final Pattern RESUMED = Pattern.compile("control connections, ([0-9]+) pairs");
    private static final String[] COLUMNS = {"grouped", "daemon built", "entries read", "adopted", "started", "serving"};

    @Test
    void coldRecovery() throws Exception {
        int[] sizes = Arrays.stream(System.getProperty("warren.recovery.pairs", "500,1000,2000,3000").split(","))
                .mapToInt(s -> Integer.parseInt(s.strip())).toArray();
        int runs = Integer.getInteger("warren.recovery.runs", 3);
        String format = System.getProperty("warren.recovery.format", "book"); // or "p": p<TASK> entries
        String opts = System.getProperty("warren.recovery.java-opts", "-XX:+UseSerialGC -Xmn16m").strip();
        String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        double[][][] ms = new double[sizes.length][COLUMNS.length][runs];
        Path dir = Files.createDirectories(Path.of("target", "cold-recovery-" + ProcessHandle.current().pid())).toAbsolutePath();
        for (int r = 0; r < runs; r++) {
            for (int s = 0; s < sizes.length; s++) {
                List<String> cmd = new ArrayList<>(List.of(java));
                if (!opts.isEmpty()) {
                    cmd.addAll(List.of(opts.split("\\s+")));
                }
                Path sock = dir.resolve("s" + s + "-" + r + ".sock");
                cmd.addAll(List.of("-cp", cp, "warren.daemon.ColdRecovery", String.valueOf(sizes[s]), sock.toString(),
                        format));
                Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
                String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
                assertTrue(p.waitFor(120, TimeUnit.SECONDS), "cold recovery of " + sizes[s] + " pairs ends");
                assertEquals(0, p.exitValue(), out);
                Files.deleteIfExists(sock);
                String line = out.lines().filter(l -> l.contains("recovered after a crash")).findFirst()
                        .orElseThrow(() -> new AssertionError("no recovered line:\n" + out));
                Matcher resumed = RESUMED.matcher(line);
                assertTrue(resumed.find() && Integer.parseInt(resumed.group(1)) == sizes[s], "every pair resumed: " + line);
                Matcher m = PHASE.matcher(line);
                while (m.find()) {
                    ms[s][Arrays.asList(COLUMNS).indexOf(m.group(1))][r] = Double.parseDouble(m.group(2));
                }
                Matcher sv = SERVING.matcher(line);
                assertTrue(sv.find(), line);
                ms[s][COLUMNS.length - 1][r] = Double.parseDouble(sv.group(1));
                System.out.printf(Locale.ROOT, "%d pairs, run %d: %s%n", sizes[s], r + 1,
                        line.substring(line.indexOf("recovered after")));
            }
        }
        StringBuilder t = new StringBuilder("# stored as " + (format.equals("p") ? "p<TASK>, a sealed description each"
                : "slots of the pair book") + "\n" + String.format(Locale.ROOT, "%-7s", "pairs"));
        for (String c : COLUMNS) {
            t.append(String.format(Locale.ROOT, " %13s", c));
        }
        t.append(String.format(Locale.ROOT, " %16s%n", "serving (runs)"));
        double[] serving = new double[sizes.length];
        for (int s = 0; s < sizes.length; s++) {
            t.append(String.format(Locale.ROOT, "%-7d", sizes[s]));
            for (int c = 0; c < COLUMNS.length; c++) {
                t.append(String.format(Locale.ROOT, " %13.1f", median(ms[s][c])));
            }
            serving[s] = median(ms[s][COLUMNS.length - 1]);
            StringBuilder each = new StringBuilder();
            for (double v : ms[s][COLUMNS.length - 1]) {
                each.append(each.length() == 0 ? "" : "/").append(String.format(Locale.ROOT, "%.0f", v));
            }
            t.append(String.format(Locale.ROOT, " %16s%n", each));
        }
        t.append("# medians, ms after main (this JVM's start not included); serving = the recovery's whole time\n");
        for (int s = 1; s < sizes.length; s++) {
            t.append(String.format(Locale.ROOT, "# %d -> %d pairs: +%.1f ms per 1,000 pairs%n", sizes[s - 1], sizes[s],
                    (serving[s] - serving[s - 1]) * 1000 / (sizes[s] - sizes[s - 1])));
        }
        if (sizes.length > 1) {
            int l = sizes.length - 1;
            double slope = (serving[l] - serving[l - 1]) / (sizes[l] - sizes[l - 1]);
            t.append(String.format(Locale.ROOT, "# at 8,000 pairs by the last step's slope: %.0f ms after main%n",
                    serving[l] + slope * (8000 - sizes[l])));
        }
        Files.delete(dir);
        System.out.print("\n" + t);
        Files.writeString(Path.of("target", "recovery-report.txt"), t.toString());
    }

    private static double median(double[] v) {
        double[] s = v.clone();
        Arrays.sort(s);
        return s[s.length / 2];
    }
}
