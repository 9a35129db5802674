package warren.fdpass;

import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Counts this process's open fds of the kinds warren creates and receives (sockets, pipes,
 * memfds, epoll/eventfd: /proc/self/fd links starting "socket:", "pipe:", "/memfd:",
 * "anon_inode:"), for leak checks. Regular files are left out: the JVM opens and closes jar
 * files, /dev/random and temporary files on its own schedule (class loading, jffi's native
 * library), which made whole-directory counts flaky without a leak.
 */
public final class FdCount {
    private FdCount() {}

    static {
        // Loading the jnr-ffi libc binding opens one socket of jnr's own, once per JVM: load it
        // before anyone takes a "before" count.
        warren.fdpass.libc.Native.getpid();
    }

    public static int now() {
        return count("/proc/self/fd");
    }

    /** The same count for another process (e.g. a daemon the test started). */
    public static int of(long pid) {
        return count("/proc/" + pid + "/fd");
    }

    private static int count(String dir) {
        String[] names = new File(dir).list();
        if (names == null) {
            return -1;
        }
        int n = 0;
        for (String name : names) {
            try {
                String target = Files.readSymbolicLink(Path.of(dir, name)).toString();
                if (target.startsWith("socket:") || target.startsWith("pipe:") || target.startsWith("/memfd:")
                        || target.startsWith("anon_inode:")) {
                    n++;
                }
            } catch (IOException e) {
                // closed while listing (the directory's own fd)
            }
        }
        return n;
    }

    /**
     * The count once it has stopped moving (two equal readings 20 ms apart, at most 5 s): an
     * in-process daemon closes the fds of an answer just after sending it, so a reading taken the
     * instant the client has the answer may still include them.
     */
    public static int stable() throws InterruptedException {
        long deadline = System.nanoTime() + 5_000_000_000L;
        int last = now();
        while (System.nanoTime() < deadline) {
            Thread.sleep(20);
            int n = now();
            if (n == last) {
                return n;
            }
            last = n;
        }
        return last;
    }

    /**
     * This process's open fds of those kinds, as "fd -> target" (e.g. "17 -> socket:[4711]"):
     * take one before a test and pass it to {@link #openedSince} after.
     */
    public static java.util.Set<String> snapshot() {
        java.util.Set<String> out = new java.util.TreeSet<>();
        String[] names = new File("/proc/self/fd").list();
        for (String name : names == null ? new String[0] : names) {
            try {
                String target = Files.readSymbolicLink(Path.of("/proc/self/fd", name)).toString();
                if (target.startsWith("socket:") || target.startsWith("pipe:") || target.startsWith("/memfd:")
                        || target.startsWith("anon_inode:")) {
                    out.add(name + " -> " + target);
                }
            } catch (IOException e) {
                // closed while listing
            }
        }
        return out;
    }

    /**
     * The fds open now (once the set has stopped moving, as {@link #stable}) that were not in
     * {@code before}: what a test leaked. Unlike comparing counts, an fd an earlier test class
     * closes late (a cleaner, a thread winding down) cannot hide a leak or fake one.
     */
    public static java.util.Set<String> openedSince(java.util.Set<String> before) throws InterruptedException {
        long deadline = System.nanoTime() + 5_000_000_000L;
        java.util.Set<String> last = snapshot();
        while (System.nanoTime() < deadline) {
            Thread.sleep(20);
            java.util.Set<String> now = snapshot();
            if (now.equals(last)) {
                break;
            }
            last = now;
        }
        last.removeAll(before);
        return last;
    }

    /** Waits up to 5 s for the count to come back to {@code expected}; returns the last reading. */
    public static int awaitCount(int expected) throws InterruptedException {
        long deadline = System.nanoTime() + 5_000_000_000L;
        int n = now();
        while (n != expected && System.nanoTime() < deadline) {
            Thread.sleep(10);
            n = now();
        }
        return n;
    }

    /** What is open now, for a failure message. */
    public static String dump() {
        StringBuilder sb = new StringBuilder();
        String[] names = new File("/proc/self/fd").list();
        if (names != null) {
            for (String name : names) {
                try {
                    sb.append(name).append(" -> ").append(Files.readSymbolicLink(Path.of("/proc/self/fd", name))).append('\n');
                } catch (IOException e) {
                    // gone
                }
            }
        }
        return sb.toString();
    }
}
