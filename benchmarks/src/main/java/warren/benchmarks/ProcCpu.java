package warren.benchmarks;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;

/**
 * CPU time (utime + stime, proc(5) fields 14 and 15 of {@code stat}) of a process, or of threads of
 * this JVM found by name under {@code /proc/self/task}. A thread's name there is its {@code comm}:
 * the JVM sets it from the Java name, cut to 15 bytes ({@code bumblebee-loop-1} reads
 * {@code bumblebee-loop-}).
 */
final class ProcCpu {
    private ProcCpu() {}

    /** USER_HZ, the unit of utime and stime (sysconf(_SC_CLK_TCK)). */
    static final double TICKS_PER_SECOND = clockTicks();

    /** Seconds of CPU the process {@code pid} has used; NaN when it is gone. */
    static double process(long pid) {
        return seconds(Path.of("/proc/" + pid + "/stat"));
    }

    /** Seconds of CPU this whole JVM has used (every thread, GC and JIT included). */
    static double self() {
        return seconds(Path.of("/proc/self/stat"));
    }

    /** Seconds of CPU the threads {@code tids} of this JVM have used together; a gone thread counts 0. */
    static double threads(int[] tids) {
        double s = 0;
        for (int tid : tids) {
            double t = seconds(Path.of("/proc/self/task/" + tid + "/stat"));
            s += Double.isNaN(t) ? 0 : t;
        }
        return s;
    }

    /** This JVM's threads, id to name. */
    static TreeMap<Integer, String> threads() {
        TreeMap<Integer, String> m = new TreeMap<>();
        try (var dir = Files.list(Path.of("/proc/self/task"))) {
            for (Path p : (Iterable<Path>) dir::iterator) {
                try {
                    m.put(Integer.parseInt(p.getFileName().toString()), Files.readString(p.resolve("comm")).strip());
                } catch (IOException gone) {
                    // the thread ended while listed
                }
            }
        } catch (IOException e) {
            throw new IllegalStateException("/proc/self/task: " + e.getMessage(), e);
        }
        return m;
    }

    /**
     * The threads whose name starts with {@code prefix} and whose id is not in {@code before},
     * waiting up to 10 s until there are {@code count} of them (a daemon starts its loops'
     * threads after it returns).
     */
    static int[] newThreads(Set<Integer> before, String prefix, int count) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (true) {
            List<Integer> found = new ArrayList<>();
            threads().forEach((tid, name) -> {
                if (!before.contains(tid) && name.startsWith(prefix)) {
                    found.add(tid);
                }
            });
            if (found.size() >= count || System.nanoTime() > deadline) {
                if (found.size() < count) {
                    throw new IllegalStateException("expected " + count + " new threads named " + prefix
                            + "*, found " + found.size() + ": " + threads());
                }
                return found.stream().mapToInt(Integer::intValue).toArray();
            }
            Thread.sleep(10);
        }
    }

    private static double seconds(Path stat) {
        String s;
        try {
            s = Files.readString(stat);
        } catch (IOException gone) {
            return Double.NaN;
        }
        // "pid (comm) state ppid ...": comm may hold spaces and ')', so count from the last ')'
        String[] f = s.substring(s.lastIndexOf(')') + 2).split(" ");
        return (Long.parseLong(f[11]) + Long.parseLong(f[12])) / TICKS_PER_SECOND; // fields 14, 15
    }

    private static double clockTicks() {
        try {
            Process p = new ProcessBuilder("getconf", "CLK_TCK").redirectErrorStream(true).start();
            String out = new String(p.getInputStream().readAllBytes()).strip();
            return p.waitFor() == 0 ? Double.parseDouble(out) : 100;
        } catch (IOException | InterruptedException | NumberFormatException e) {
            return 100; // USER_HZ on every Linux ABI in use
        }
    }
}
