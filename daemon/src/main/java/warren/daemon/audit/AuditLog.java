package warren.daemon.audit;

import java.io.BufferedWriter;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.io.PrintStream;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Instant;

/**
 * The per-task audit log: JSON lines, one when a task starts and one when it ends (and one for
 * each rejected request), written to a file (appended) or to stderr. Each line starts with
 * {@code ts}, {@code daemon}, {@code event} and the task number, so {@code grep '"task":42'}
 * gives one task's story. Lines are written whole and flushed; writers on several threads are
 * serialized. A failing write is reported once on stderr and never stops the daemon.
 */
public final class AuditLog implements AutoCloseable {
    private final Writer out;
    private final String daemon;
    private final boolean ownsOut;
    private boolean failed;

    private AuditLog(Writer out, String daemon, boolean ownsOut) {
        this.out = out;
        this.daemon = daemon;
        this.ownsOut = ownsOut;
    }

    /** Audit to {@code path} (appended; created 0640), or stderr when path is null or empty. */
    public static AuditLog open(String daemon, String path) throws IOException {
        if (path == null || path.isEmpty() || path.equals("-") || path.equals("stderr")) {
            return toStream(daemon, System.err);
        }
        Path p = Path.of(path);
        Writer w = Files.newBufferedWriter(p, StandardCharsets.UTF_8, StandardOpenOption.CREATE,
                StandardOpenOption.APPEND, StandardOpenOption.WRITE);
        return new AuditLog(w, daemon, true);
    }

    public static AuditLog toStream(String daemon, PrintStream stream) {
        return new AuditLog(new BufferedWriter(new OutputStreamWriter(stream, StandardCharsets.UTF_8)), daemon, false);
    }

    /** A line with the common head filled in; add fields, then {@link #write}. */
    public JsonLine line(String event, long task) {
        return new JsonLine().put("ts", Instant.now().toString()).put("daemon", daemon).put("event", event)
                .put("task", task);
    }

    public synchronized void write(JsonLine line) {
        try {
            out.write(line.toString());
            out.write('\n');
            out.flush();
        } catch (IOException e) {
            if (!failed) {
                failed = true;
                System.err.println(daemon + ": audit log write failed, lines are being lost: " + e.getMessage());
            }
        }
    }

    @Override
    public synchronized void close() {
        try {
            out.flush();
            if (ownsOut) {
                out.close();
            }
        } catch (IOException ignored) {
            // nothing more to do at exit
        }
    }
}
