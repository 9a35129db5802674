package warren.daemon.testing;

import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Counts this process's open fds (/proc/self/fd), for leak checks. Jar files are left out: the
 * JVM's class loader opens them lazily the first time a class is needed, and the JDK opens
 * /dev/random and /dev/urandom once for its random generators; neither is a leak.
 */
public final class FdCount {
    private FdCount() {}

    static {
        // Loading the jnr-ffi libc binding opens one socket of jnr's own, once per JVM: load it
        // before anyone takes a "before" count.
        warren.fdpass.libc.Native.getpid();
    }

    public static int now() {
        String[] names = new File("/proc/self/fd").list();
        if (names == null) {
            return -1;
        }
        int n = 0;
        for (String name : names) {
            try {
                String target = Files.readSymbolicLink(Path.of("/proc/self/fd", name)).toString();
                if (target.endsWith(".jar") || target.equals("/dev/random") || target.equals("/dev/urandom")) {
                    continue;
                }
            } catch (IOException e) {
                continue; // closed while listing (the directory's own fd)
            }
            n++;
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
