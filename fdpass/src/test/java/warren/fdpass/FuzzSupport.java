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

    /** {@code n} eventfds (cheap stand-ins for sockets and pipes); those whose bit is set in {@code closedMask} closed. */
    public static List<Fd> eventfds(int n, int closedMask) throws NativeIoException {
        List<Fd> out = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            Fd f = Fd.adopt(Native.eventfd(0, Native.EFD_CLOEXEC));
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
            if (numberOpen(n)) {
                throw new AssertionError("fd " + n + " still open " + when);
            }
        }
    }
}
