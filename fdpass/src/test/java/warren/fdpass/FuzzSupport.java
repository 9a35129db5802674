package warren.fdpass;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * What the Jazzer fuzz tests of every module share (this test-jar reaches them all but packet's):
 * seeds written where regression mode reads them, synthetic fd tables, the fd-leak check.
 */
public final class FuzzSupport {
    private FuzzSupport() {}

    /**
     * Writes a fuzz test's seeds (inputs made by the real encoders) where Jazzer's regression mode
     * reads them, {@code src/test/resources/<package>/<Class>Inputs/<method>/<name>} of the module
     * being built, when run with {@code -Dwarren.fuzz.writeSeeds=true}; otherwise checks each is there.
     */
    public static void writeOrCheck(Class<?> test, String method, Map<String, byte[]> seeds) {
        Path dir = Path.of("src/test/resources", test.getPackageName().replace('.', '/'),
                test.getSimpleName() + "Inputs", method);
        try {
            if (Boolean.getBoolean("warren.fuzz.writeSeeds")) {
                Files.createDirectories(dir);
                for (Map.Entry<String, byte[]> e : seeds.entrySet()) {
                    Files.write(dir.resolve(e.getKey()), e.getValue());
                }
                return;
            }
            for (String name : seeds.keySet()) {
                if (!Files.isRegularFile(dir.resolve(name))) {
                    throw new AssertionError("seed " + dir.resolve(name)
                            + " missing: run with -Dwarren.fuzz.writeSeeds=true and commit it");
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /**
     * Each eventfd {@link #eventfds} made, by number: its {@code eventfd-id} (/proc/self/fdinfo,
     * Linux 6.1 and later), so that {@link #assertClosed} tells one of them still open from a
     * number another thread of this JVM opened since (a number is reused at once; a CI-style run
     * saw "fd 50 still open" that way once).
     */
    private static final java.util.Map<Integer, String> EVENTFD_IDS = new java.util.concurrent.ConcurrentHashMap<>();

    /** {@code n} eventfds (cheap stand-ins for sockets and pipes); those whose bit is set in {@code closedMask} closed. */
    public static List<Fd> eventfds(int n, int closedMask) throws NativeIoException {
        List<Fd> out = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            Fd f = Fd.adopt(Native.eventfd(0, Native.EFD_CLOEXEC));
            String id = eventfdId(f.number());
            if (id != null) {
                EVENTFD_IDS.put(f.number(), id);
            } else {
                EVENTFD_IDS.remove(f.number());
            }
            if ((closedMask & (1 << i)) != 0) {
                f.close();
            }
            out.add(f);
        }
        return out;
    }

    /** True if the fd number is open in this process (fstat succeeds). */
    public static boolean numberOpen(int fd) {
        try {
            Native.fstat(fd);
            return true;
        } catch (NativeIoException e) {
            return false;
        }
    }

    /** Fails if any of {@code numbers} is still open: a decoder took an fd and neither handed it on nor closed it. */
    public static void assertClosed(List<Integer> numbers, String when) {
        for (int n : numbers) {
            if (numberOpen(n) && stillOurs(n)) {
                throw new AssertionError("fd " + n + " still open " + when);
            }
        }
    }

    /**
     * False if open number {@code n} is no longer the eventfd {@link #eventfds} made under it (its
     * eventfd-id differs, or it is no eventfd: another thread reused the number); true otherwise,
     * and whenever that cannot be told (not made there, or a kernel without eventfd-id).
     */
    private static boolean stillOurs(int n) {
        String made = EVENTFD_IDS.get(n);
        return made == null || made.equals(eventfdId(n));
    }

    /** The {@code eventfd-id} of fd {@code n} in /proc/self/fdinfo, or null (not an eventfd, or not said). */
    private static String eventfdId(int n) {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/fdinfo/" + n))) {
                if (line.startsWith("eventfd-id:")) {
                    return line.substring("eventfd-id:".length()).strip();
                }
            }
        } catch (IOException | RuntimeException e) {
            // closed meanwhile, or no /proc: nothing to tell
        }
        return null;
    }
}
