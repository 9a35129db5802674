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
        return new JsonLine().put("ts", timestamp(Instant.now())).put("daemon", daemon).put("event", event)
                .put("task", task);
    }

    /** The day of the last {@link #timestamp} and its text up to the 'T' (shared by every thread; immutable). */
    private record Day(long epochDay, String prefix) {}

    private static volatile Day day = new Day(Long.MIN_VALUE, "");

    /**
     * {@code t.toString()} (ISO-8601, UTC, the fraction in groups of 3 digits as needed) without
     * the formatter: each audit line has one, and issue 15's profile of 1,000 upgrades at once
     * found DateTimeFormatter's printing in the loop thread's samples. The date part is kept per
     * day; years outside 1970-9999 go to {@link Instant#toString}.
     */
    static String timestamp(Instant t) {
        long sec = t.getEpochSecond();
        if (sec < 0 || sec >= 253_402_300_800L) { // 10000-01-01T00:00:00Z
            return t.toString();
        }
        long epochDay = sec / 86_400;
        int s = (int) (sec - epochDay * 86_400);
        Day d = day;
        if (d.epochDay() != epochDay) {
            d = new Day(epochDay, java.time.LocalDate.ofEpochDay(epochDay) + "T");
            day = d;
        }
        StringBuilder sb = new StringBuilder(32).append(d.prefix());
        two(sb, s / 3600).append(':');
        two(sb, s / 60 % 60).append(':');
        two(sb, s % 60);
        int nano = t.getNano();
        if (nano > 0) {
            int digits = nano % 1_000_000 == 0 ? 3 : nano % 1000 == 0 ? 6 : 9;
            sb.append('.');
            for (int div = 100_000_000, i = 0; i < digits; i++, div /= 10) {
                sb.append((char) ('0' + nano / div % 10));
            }
        }
        return sb.append('Z').toString();
    }

    private static StringBuilder two(StringBuilder sb, int v) {
        return sb.append((char) ('0' + v / 10)).append((char) ('0' + v % 10));
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
