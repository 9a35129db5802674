package warren.daemon.testing;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;

/**
 * The audit file of a daemon running as another process: its lines are written by a writer
 * thread after the event, so a test waits for the lines it expects instead of reading at once.
 * (In-process daemons: {@code daemon.audit().flush(ms)}.)
 */
public final class AuditFile {
    private AuditFile() {}

    /** The file's text once {@code done} holds for it, or after 30 s (the test's assertions then say what is missing). */
    public static String await(Path file, Predicate<String> done) throws IOException, InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        String text = Files.exists(file) ? Files.readString(file) : "";
        while (!done.test(text) && System.nanoTime() < deadline) {
            Thread.sleep(20);
            text = Files.exists(file) ? Files.readString(file) : "";
        }
        return text;
    }
}
