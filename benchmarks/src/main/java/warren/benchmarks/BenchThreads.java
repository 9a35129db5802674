package warren.benchmarks;

import java.util.Arrays;

/**
 * The {@code --threads LIST} option of the daemon benchmarks: a comma-separated list of event-loop
 * counts, each a number or {@code N} (the number of CPUs); default {@code 1,N}. Each value gets its
 * own daemon with {@code threads = T} in its config. The key is written only when the list is
 * not just {@code 1}, so {@code --threads 1} also runs a daemon that does not know the key yet.
 */
final class BenchThreads {
    private BenchThreads() {}

    static final String DEFAULT = "1,N";

    /** The distinct values of a list such as "1,N" or "1,2,4", in order. */
    static int[] parse(String list) {
        int cpus = Runtime.getRuntime().availableProcessors();
        return Arrays.stream(list.split(",")).map(String::trim).filter(s -> !s.isEmpty())
                .mapToInt(s -> {
                    int t = s.equalsIgnoreCase("N") ? cpus : Integer.parseInt(s);
                    if (t < 1) {
                        throw new IllegalArgumentException("--threads: " + s + " is not a thread count");
                    }
                    return t;
                }).distinct().toArray();
    }

    /** The config line for {@code t} threads, or "" when the whole list is just 1. */
    static String configLine(int[] list, int t) {
        return list.length == 1 && list[0] == 1 ? "" : "threads = " + t + "\n";
    }
}
