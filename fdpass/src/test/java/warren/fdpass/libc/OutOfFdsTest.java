package warren.fdpass.libc;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * Out of fds (EMFILE), a failed call still says why: a class first loaded then cannot be read (from
 * a classes directory every load opens a file), so the error path's own classes are loaded with
 * {@link Native}; before, the first EMFILE of a fresh JVM threw NoClassDefFoundError for Errno.
 * Runs in a fresh JVM (in this one they are loaded already) under {@code prlimit --nofile=200}.
 */
class OutOfFdsTest {
    /** Opens /dev/null until a call fails, and prints what was thrown. */
    public static void main(String[] args) {
        int n = 0;
        try {
            while (n < 100_000) {
                Native.open("/dev/null", 0);
                n++;
            }
            System.out.println("no failure after " + n + " fds");
        } catch (Throwable t) {
            System.out.println("after " + n + " fds: " + t.getClass().getName() + ": " + t.getMessage());
        }
    }

    @Test
    void theFirstEmfileOfAFreshProcessIsANativeIoException() throws Exception {
        String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process p = new ProcessBuilder(List.of("prlimit", "--nofile=200", "--", java, "-XX:+UseSerialGC", "-cp", cp,
                OutOfFdsTest.class.getName())).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), out);
        assertEquals(0, p.exitValue(), out);
        assertTrue(out.contains(NativeIoException.class.getName()) && out.contains("EMFILE"), out);
    }
}
