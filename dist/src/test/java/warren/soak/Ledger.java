package warren.soak;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Queue;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ConcurrentSkipListMap;
import java.util.concurrent.atomic.LongAdder;

/**
 * What the soak saw, shared by its traffic and its injector: flow outcomes counted by key
 * ("splicer tcp: ok", "bumblebee udp: datagrams resent"...), failures with their details, and the
 * windows during which a daemon was down by design (kill -9 until systemd had it active again) or
 * out of slots on purpose (a burst), so that a flow that lost its request in one is counted as an
 * expected loss and one that lost it outside is a failure.
 */
final class Ledger {
    private final Map<String, LongAdder> counts = new ConcurrentSkipListMap<>();
    private final Queue<String> failures = new ConcurrentLinkedQueue<>();
    private final List<long[]> kills = new ArrayList<>(); // {daemon index, from, to}
    private final List<long[]> bursts = new ArrayList<>();
    private final long start = System.nanoTime();
    /** Where progress lines go as they happen (the soak's progress file). */
    volatile java.util.function.Consumer<String> log = line -> { };

    static int index(String daemon) {
        return switch (daemon) {
            case "splicer" -> 0;
            case "bumblebee" -> 1;
            case "fish" -> 2;
            default -> throw new IllegalArgumentException(daemon);
        };
    }

    void count(String key) {
        count(key, 1);
    }

    void count(String key, long n) {
        counts.computeIfAbsent(key, k -> new LongAdder()).add(n);
    }

    long get(String key) {
        LongAdder a = counts.get(key);
        return a == null ? 0 : a.sum();
    }

    Map<String, LongAdder> counts() {
        return counts;
    }

    void fail(String what) {
        String line = String.format("%.1f s: %s", (System.nanoTime() - start) / 1e9, what);
        failures.add(line);
        if (failures.size() <= 100) {
            log.accept("FAILURE " + line);
        }
    }

    List<String> failures() {
        return new ArrayList<>(failures);
    }

    /** Did a kill -9 of {@code daemon} overlap [from, to] (nanoTime; a slack of 2 s after its restart)? */
    synchronized boolean killedDuring(String daemon, long from, long to) {
        return overlaps(kills, daemon, from, to);
    }

    /** Did a burst on {@code daemon} overlap [from, to]? */
    synchronized boolean burstDuring(String daemon, long from, long to) {
        return overlaps(bursts, daemon, from, to);
    }

    private static boolean overlaps(List<long[]> windows, String daemon, long from, long to) {
        int d = index(daemon);
        long slack = 2_000_000_000L;
        for (long[] w : windows) {
            // a window still open ends at Long.MAX_VALUE: adding the slack to it overflowed, so a
            // request refused during a burst still under way counted as a failure (the 30-minute
            // soak's 2 failures, each inside a Splicer burst)
            long end = w[2] > Long.MAX_VALUE - slack ? Long.MAX_VALUE : w[2] + slack;
            if (w[0] == d && from <= end && to >= w[1]) {
                return true;
            }
        }
        return false;
    }

    /** A kill -9 of {@code daemon} that has begun and not yet ended (to = Long.MAX_VALUE while it runs). */
    synchronized long openKill(String daemon) {
        kills.add(new long[] {index(daemon), System.nanoTime(), Long.MAX_VALUE});
        return kills.size() - 1;
    }

    synchronized void closeWindow(long handle) {
        kills.get((int) handle)[2] = System.nanoTime();
    }

    synchronized long openBurst(String daemon) {
        bursts.add(new long[] {index(daemon), System.nanoTime(), Long.MAX_VALUE});
        return bursts.size() - 1;
    }

    synchronized void closeBurst(long handle) {
        bursts.get((int) handle)[2] = System.nanoTime();
    }
}
