package warren.benchmarks;

import java.util.Arrays;
import java.util.List;
import warren.daemon.config.ConfigKey;

/**
 * The {@code --threads LIST} option of the daemon benchmarks: a comma-separated list of event-loop
 * counts, each a number or {@code N} (the number of CPUs); default {@code 1,N}. Each value gets its
 * own daemon with {@code threads = T} in its config. A daemon built before the key existed
 * rejects it: then the key is left out, which is only right for 1 (the only count it has).
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

    /**
     * The config line for {@code t} threads: always when the daemon knows the key (its default may
     * be one loop per CPU, so 1 must be said); "" for 1 when it does not; an error otherwise.
     */
    static String configLine(List<ConfigKey<?>> keys, int t) {
        if (keys.stream().anyMatch(k -> k.name().equals("threads"))) {
            return "threads = " + t + "\n";
        }
        if (t == 1) {
            return "";
        }
        throw new IllegalArgumentException("--threads " + t + ": this build's daemons have no 'threads' key (one loop only)");
    }
}
