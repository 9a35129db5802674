package warren.daemon;

import warren.fdpass.libc.Native;

/**
 * What systemd can hand back after a crash, so that a daemon never stores more: past it, the
 * restart itself fails and every stored task is lost, not just the one too many.
 *
 * <ul>
 *   <li>Names: systemd passes every stored fd's name in one environment string,
 *   {@code LISTEN_FDNAMES=name:name:...}, and the kernel refuses an exec with any single string
 *   over MAX_ARG_STRLEN (32 pages, 131,072 bytes): E2BIG, the unit's restart fails (status
 *   203/EXEC) until its start limit, and the store goes with the failed unit. Splicer's pairs take
 *   4 fds under a slot's name of 1-3 characters ({@link PairBook}): 8 to 16 bytes a pair, ~8,000
 *   pairs in ~110,000 bytes. A pair stored as {@code p<TASK>} (a description too long for a slot;
 *   Bumblebee's downgrades) takes 5 x (2 + digits of the task number).</li>
 *   <li>Count: systemd moves the stored fds into place in the forked child beside its own copies,
 *   so it can hand back about half its RLIMIT_NOFILE hard limit (status 202/FDS past it). The
 *   daemon's own hard limit stands in for systemd's (systemd gives the unit LimitNOFILE=, clamped
 *   to what it may grant).</li>
 * </ul>
 * Both are checked against a bound computed from the live tasks alone (every live task counted as
 * stored, its number as high as the next one's), so that it holds in a successor after an upgrade
 * and after a recovery without knowing what exactly the store holds.
 */
public final class FdStoreBudget {
    /** MAX_ARG_STRLEN less "LISTEN_FDNAMES=" and the terminating NUL. */
    public static final int NAMES_MAX = 32 * 4096 - "LISTEN_FDNAMES=".length() - 1;
    /** Left for the socket units' own names ("control") and a handler's extras ({@code x.<NAME>}). */
    static final int NAMES_RESERVE = 2048;
    private static volatile long maxFds = -1;

    private FdStoreBudget() {}

    /**
     * Null if {@code tasks} live tasks (the one to store among them) fit what systemd can hand back
     * (at most {@code maxFds} fds), with {@code connections} stored control connections numbered
     * below {@code nextConnection}; else why not, for a log line. Of the tasks, {@code slotted} are
     * pairs in the pair book ({@link PairBook}: 4 fds each, their names {@code slotNames} bytes in
     * all, and the book's own fd); each other task counts as {@code fdsPerTask} fds under a name as
     * long as {@code nextTask}'s.
     */
    public static String refusal(long tasks, long nextTask, int fdsPerTask, long slotted, long slotNames,
            long connections, long nextConnection, long maxFds) {
        long others = Math.max(0, tasks - slotted);
        long names = slotNames + (slotted > 0 ? FdStoreNames.BOOK.length() + 1 : 0)
                + others * fdsPerTask * (2L + digits(nextTask)) + connections * (2L + digits(nextConnection));
        if (names > NAMES_MAX - NAMES_RESERVE) {
            return "the fd store's names would take up to " + names + " bytes of LISTEN_FDNAMES with " + tasks
                    + " tasks, and the kernel passes at most " + NAMES_MAX + " (an exec with more fails: E2BIG)";
        }
        long fds = slotted * PairBook.FDS_PER_PAIR + (slotted > 0 ? 1 : 0) + others * fdsPerTask + connections;
        if (fds > maxFds) {
            return "the fd store would hold up to " + fds + " fds with " + tasks + " tasks, and systemd can hand back"
                    + " about " + maxFds + " (half its RLIMIT_NOFILE hard limit, less 512)";
        }
        return null;
    }

    /** {@link #refusal} without slotted pairs. */
    public static String refusal(long tasks, long nextTask, int fdsPerTask, long connections, long nextConnection,
            long maxFds) {
        return refusal(tasks, nextTask, fdsPerTask, 0, 0, connections, nextConnection, maxFds);
    }

    /** {@link #refusal} with this process's RLIMIT_NOFILE hard limit / 2 - 512 as the count limit. */
    public static String refusal(long tasks, long nextTask, int fdsPerTask, long slotted, long slotNames,
            long connections, long nextConnection) {
        return refusal(tasks, nextTask, fdsPerTask, slotted, slotNames, connections, nextConnection, maxFds());
    }

    /** Half this process's RLIMIT_NOFILE hard limit less 512 (Long.MAX_VALUE if unknown). */
    public static long maxFds() {
        long m = maxFds;
        if (m < 0) {
            try {
                long hard = Native.getrlimit(Native.RLIMIT_NOFILE)[1];
                m = hard <= 0 ? Long.MAX_VALUE : Math.max(0, hard / 2 - 512); // <= 0: RLIM_INFINITY
            } catch (Exception e) {
                m = Long.MAX_VALUE;
            }
            maxFds = m;
        }
        return m;
    }

    static int digits(long n) {
        int d = 1;
        for (long x = Math.max(0, n); x >= 10; x /= 10) {
            d++;
        }
        return d;
    }
}
