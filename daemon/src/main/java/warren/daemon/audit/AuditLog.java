package warren.daemon.audit;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Instant;
import java.util.concurrent.atomic.LongAdder;
import warren.daemon.Log;
import warren.daemon.logging.LineWriter;

/**
 * The per-task audit log: JSON lines, one when a task starts and one when it ends (and one for
 * each rejected request), written to a file (appended; created 0640 less the umask) or to stderr.
 * Each line starts with {@code ts}, {@code daemon}, {@code event} and the task number, so
 * {@code grep '"task":42'} gives one task's story.
 *
 * <p>{@link #write} never blocks and never does I/O: the line goes to a bounded queue
 * ({@code audit.queue} lines) that a writer thread of its own drains ({@link LineWriter}); to
 * stderr's writer when the audit goes to stderr. A full queue drops the line, and a failing write
 * (a full disk) loses the lines it held: both are counted in {@link #dropped()}
 * ({@code audit.dropped}), failed writes in {@link #writeErrors()} ({@code audit.write_errors}),
 * and reported on stderr at most a few times per interval. Relaying never waits for the audit.
 *
 * <p>{@link #reopen()} (SIGUSR1, after logrotate renamed the file) opens the path again on the
 * writer thread; {@link #close()} writes what is queued, waiting at most {@link #CLOSE_WAIT_MS}.
 */
public final class AuditLog implements AutoCloseable {
    /** The default of {@code audit.queue}. */
    public static final int DEFAULT_QUEUE = 65_536;
    /** How long {@link #close()} waits for queued lines (at exit and after a handoff). */
    public static final long CLOSE_WAIT_MS = 5000;

    private final String daemon;
    private final LineWriter file; // null: to stderr, through the log's writer
    private final LongAdder dropped;
    private final LongAdder writeErrors;
    private final Log.Limited failures = Log.limited("audit.write_failed");

    private AuditLog(String daemon, Path path, int queue, LongAdder dropped, LongAdder writeErrors) throws IOException {
        this.daemon = daemon;
        this.dropped = dropped;
        this.writeErrors = writeErrors;
        this.file = path == null ? null : LineWriter.toFile(path, queue, dropped, writeErrors, new LineWriter.Events() {
            @Override
            public void writeFailed(IOException e, long linesLost) {
                failures.warn("audit log " + path + ": write failed, " + linesLost + " lines lost (counted in"
                        + " audit.dropped): " + e.getMessage());
            }

            @Override
            public void reopened(String what) {
                Log.info("audit log reopened: " + what);
            }

            @Override
            public void reopenFailed(String what, IOException e) {
                Log.warn("audit log " + what + ": cannot reopen (" + e + "); writing on to the file already open");
            }
        });
    }

    /** Audit to {@code path} (appended; created 0640), or stderr when path is null or empty. */
    public static AuditLog open(String daemon, String path) throws IOException {
        return open(daemon, path, DEFAULT_QUEUE);
    }

    /** As {@link #open(String, String)}, with a queue of {@code queue} lines. */
    public static AuditLog open(String daemon, String path, int queue) throws IOException {
        boolean stderr = path == null || path.isEmpty() || path.equals("-") || path.equals("stderr");
        return new AuditLog(daemon, stderr ? null : Path.of(path), queue, new LongAdder(), new LongAdder());
    }

    /** A line with the common head filled in; add fields, then {@link #write}. */
    public JsonLine line(String event, long task) {
        return new JsonLine().put("ts", Instant.now().toString()).put("daemon", daemon).put("event", event)
                .put("task", task);
    }

    /**
     * Queues the line (turned into text on the writer thread: do not change it afterwards); never
     * blocks. Any thread.
     */
    public void write(JsonLine line) {
        boolean queued = file != null ? file.offer(line) : Log.raw(line);
        if (!queued) {
            dropped.increment();
        }
    }

    /** Lines not written: queue full or the write failed (audit.dropped). */
    public LongAdder dropped() {
        return dropped;
    }

    /** Failed writes to the audit file (audit.write_errors). */
    public LongAdder writeErrors() {
        return writeErrors;
    }

    /** Opens the file again (logrotate); false when the audit goes to stderr. Any thread. */
    public boolean reopen() {
        return file != null && file.reopen();
    }

    /** Where the lines go: the file's path, or "stderr". */
    public String destination() {
        return file != null ? file.what() : "stderr";
    }

    /** Waits until every line written so far is out, at most {@code timeoutMs}; true if it is. */
    public boolean flush(long timeoutMs) {
        return file != null ? file.flush(timeoutMs) : Log.flush(timeoutMs);
    }

    @Override
    public void close() {
        if (file == null) {
            Log.flush(Log.EXIT_FLUSH_MS);
        } else if (!file.close(CLOSE_WAIT_MS)) {
            Log.warn("audit log " + file.what() + ": " + file.queued() + " lines still unwritten after "
                    + CLOSE_WAIT_MS + " ms; exiting without them");
        }
    }
}
