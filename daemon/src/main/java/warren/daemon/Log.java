package warren.daemon;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.LongAdder;
import warren.daemon.config.Config;
import warren.daemon.config.ConfigKey;
import warren.daemon.logging.LineWriter;
import warren.daemon.logging.Priority;
import warren.daemon.logging.RateLimit;
import warren.systemd.JournalStream;

/**
 * Operator log lines on stderr (journald adds the time under systemd): "name: message". Lines
 * about one task or connection start with it ("task 42: ..."), so one grep follows it.
 *
 * <p><b>Priorities.</b> Each line has a syslog priority (error, warning, notice, info, debug).
 * When stderr is journald's stream (exactly: fd 2 is the socket {@code $JOURNAL_STREAM} names,
 * see {@link JournalStream}) every line starts with the sd-daemon prefix ({@code "<3>"} ...
 * {@code "<7>"}), which journald turns into the entry's priority; on a terminal, in a file or a
 * pipe the prefix would be noise and is left out ({@code log.priority_prefix} overrides).
 * Lines below {@code log.level} are not formatted at all.
 *
 * <p><b>Never on the caller's time.</b> Once {@link #configure} has run, lines go to a bounded
 * queue written by a thread of its own ({@link LineWriter}): a stderr pipe nobody reads fills the
 * queue, and further lines are dropped and counted ({@code log.dropped}), never waited for.
 * Before that (option and config errors at start) lines are written directly. The queue is
 * written out at exit (a bounded wait).
 *
 * <p><b>Repeating lines</b> go through a {@link Limited} ({@link #every(String)}): at most
 * {@code log.rate_limit_lines} per {@code log.rate_limit_interval} for its key, then one line
 * "... (N similar lines suppressed)" when the interval ends.
 */
public final class Log {
    public static final ConfigKey<String> LEVEL = ConfigKey.oneOf("log.level", "info",
            List.of("err", "warning", "notice", "info", "debug"), "lowest priority of the log lines written to stderr");
    public static final ConfigKey<String> PRIORITY_PREFIX = ConfigKey.oneOf("log.priority_prefix", "auto",
            List.of("auto", "yes", "no"), "start stderr lines with the sd-daemon priority (\"<3>\"); auto: when stderr"
                    + " is journald's stream ($JOURNAL_STREAM names fd 2)");
    public static final ConfigKey<Long> QUEUE = ConfigKey.count("log.queue", 65_536, 16, 1 << 24,
            "log lines waiting for stderr before further ones are dropped (and counted in log.dropped)");
    public static final ConfigKey<Long> RATE_LIMIT_LINES = ConfigKey.count("log.rate_limit_lines", 10, 1, 1 << 20,
            "lines of one repeating kind (an exhausted port range, a failing accept) per log.rate_limit_interval;"
                    + " the rest are counted in one summary line");
    public static final ConfigKey<Long> RATE_LIMIT_INTERVAL = ConfigKey.millis("log.rate_limit_interval", 10_000,
            "the interval of log.rate_limit_lines");

    /** The config keys of the log, in every daemon's config. */
    public static final List<ConfigKey<?>> KEYS = List.of(LEVEL, PRIORITY_PREFIX, QUEUE, RATE_LIMIT_LINES,
            RATE_LIMIT_INTERVAL);

    /** How long the exit waits for queued lines to reach stderr (a pipe nobody reads holds it no longer). */
    public static final long EXIT_FLUSH_MS = 2000;

    private static final LongAdder DROPPED = new LongAdder();
    private static final LongAdder WRITE_ERRORS = new LongAdder();
    private static final ConcurrentHashMap<String, Limited> EVERY = new ConcurrentHashMap<>();

    private static volatile String name = "warren";
    private static volatile Priority level = Boolean.getBoolean("warren.debug") ? Priority.DEBUG : Priority.INFO;
    private static volatile boolean prefix = JournalStream.stderrIsJournal();
    private static volatile LineWriter writer;

    private Log() {}

    public static void setName(String daemonName) {
        name = daemonName;
    }

    /**
     * Applies the config's log keys and starts the writer thread (once per process; the queue's
     * capacity is the first config's). Lines logged before are written directly.
     */
    public static void configure(Config config) {
        String p = config.get(PRIORITY_PREFIX);
        prefix = p.equals("yes") || (p.equals("auto") && JournalStream.stderrIsJournal());
        if (!Boolean.getBoolean("warren.debug")) {
            level = Priority.of(config.get(LEVEL));
        }
        RateLimit.configure(config.get(RATE_LIMIT_LINES).intValue(), config.get(RATE_LIMIT_INTERVAL));
        start(config.get(QUEUE).intValue());
    }

    private static synchronized void start(int capacity) {
        if (writer != null) {
            return;
        }
        writer = LineWriter.toStderr(capacity, DROPPED, WRITE_ERRORS, (e, lost) -> { }, new LineWriter.Idle() {
            @Override
            public long dueInNanos(long now) {
                return RateLimit.PROCESS.dueInNanos(now);
            }

            @Override
            public void run(long now) {
                RateLimit.PROCESS.summarizeDue(now, false, Log::summary);
            }
        });
        RateLimit.PROCESS.onPending(() -> {
            LineWriter w = writer;
            if (w != null) {
                w.wake();
            }
        });
        Thread hook = new Thread(() -> flushAtExit(EXIT_FLUSH_MS), "log flush at exit");
        Runtime.getRuntime().addShutdownHook(hook);
    }

    /** Waits until every line queued so far is on stderr, at most {@code timeoutMs}; true if they all are. */
    public static boolean flush(long timeoutMs) {
        LineWriter w = writer;
        return w == null || w.flush(timeoutMs);
    }

    /** At exit: the rate limits' pending summaries, then {@link #flush}. */
    static boolean flushAtExit(long timeoutMs) {
        RateLimit.PROCESS.summarizeDue(System.nanoTime(), true, Log::summary);
        return flush(timeoutMs);
    }

    /** Whether lines carry the sd-daemon prefix now. */
    public static boolean priorityPrefix() {
        return prefix;
    }

    /** For tests and tools: force the prefix on or off. */
    public static void priorityPrefix(boolean on) {
        prefix = on;
    }

    public static void setDebug(boolean on) {
        level = on ? Priority.DEBUG : Priority.INFO;
    }

    public static boolean debugEnabled() {
        return level == Priority.DEBUG;
    }

    /** Whether lines of priority {@code p} are written. */
    public static boolean enabled(Priority p) {
        return p.atLeast(level);
    }

    /** Lines lost: the queue was full, or stderr failed (log.dropped). */
    public static LongAdder droppedCounter() {
        return DROPPED;
    }

    /** Failed writes to stderr (log.write_errors). */
    public static LongAdder writeErrorCounter() {
        return WRITE_ERRORS;
    }

    /** Lines held back by rate limits (log.suppressed). */
    public static LongAdder suppressedCounter() {
        return RateLimit.suppressedCounter();
    }

    /**
     * The last line of a daemon that cannot start or run on (a bad option or config, a socket
     * that cannot be bound): "name: message" like a command-line tool's, at priority err, and on
     * stderr before this returns.
     */
    public static void fatal(String message) {
        String line = format(Priority.ERR, "", message, name, prefix);
        LineWriter w = writer;
        if (w == null) {
            System.err.println(line);
        } else if (!w.offer(line)) {
            DROPPED.increment();
        } else {
            w.flush(EXIT_FLUSH_MS);
        }
    }

    public static void error(String message) {
        log(Priority.ERR, message);
    }

    public static void error(String message, Throwable t) {
        if (!enabled(Priority.ERR)) {
            return;
        }
        String text = message + (t == null ? "" : ": " + t);
        if (t != null && (debugEnabled() || !(t instanceof IOException))) {
            StringWriter trace = new StringWriter();
            t.printStackTrace(new PrintWriter(trace));
            text += "\n" + trace.toString().stripTrailing();
        }
        log(Priority.ERR, text);
    }

    public static void warn(String message) {
        log(Priority.WARNING, message);
    }

    /** A normal but significant event: started, stopped, upgraded. */
    public static void notice(String message) {
        log(Priority.NOTICE, message);
    }

    public static void info(String message) {
        log(Priority.INFO, message);
    }

    public static void debug(String message) {
        log(Priority.DEBUG, message);
    }

    /** One line (or several, for a message with newlines) at priority {@code p}. */
    public static void log(Priority p, String message) {
        if (!enabled(p)) {
            return;
        }
        String line = format(p, message, name, prefix);
        LineWriter w = writer;
        if (w == null) {
            System.err.println(line);
        } else if (!w.offer(line)) {
            DROPPED.increment();
        }
    }

    /**
     * A line as it is (the audit's JSON when the audit goes to stderr): no name, no prefix, no
     * level; {@code toString()} runs on the writer thread. False if it was dropped (queue full).
     */
    public static boolean raw(Object line) {
        LineWriter w = writer;
        if (w == null) {
            System.err.println(line);
            return true;
        }
        return w.offer(line);
    }

    /**
     * {@code "<4>fish: warning: message"}: the sd-daemon prefix (when {@code withPrefix}), the
     * daemon's name, a word for errors, warnings and debug lines (the only mark a terminal shows).
     * Each further line of a multi-line message (a stack trace) gets the prefix too, since
     * journald makes one entry per line.
     */
    static String format(Priority p, String message, String daemon, boolean withPrefix) {
        return format(p, word(p), message, daemon, withPrefix);
    }

    private static String format(Priority p, String word, String message, String daemon, boolean withPrefix) {
        String pre = withPrefix ? p.prefix() : "";
        StringBuilder sb = new StringBuilder(pre.length() + daemon.length() + message.length() + 16);
        sb.append(pre).append(daemon).append(": ").append(word);
        int from = 0;
        int nl;
        while ((nl = message.indexOf('\n', from)) >= 0) {
            sb.append(message, from, nl).append('\n').append(pre);
            from = nl + 1;
        }
        return sb.append(message, from, message.length()).toString();
    }

    private static String word(Priority p) {
        switch (p) {
            case EMERG: case ALERT: case CRIT: case ERR: return "error: ";
            case WARNING: return "warning: ";
            case DEBUG: return "debug: ";
            default: return "";
        }
    }

    private static void summary(Priority p, String last, long n) {
        log(p, RateLimit.summaryText(last, n));
    }

    // ---- repeating lines

    /**
     * The limiter of one repeating condition, shared by every caller with the same key (a
     * constant: "fish.port_range_exhausted", "control.accept_failed"). Hold it in a field.
     */
    public static Limited every(String key) {
        return EVERY.computeIfAbsent(key, Limited::new);
    }

    /** A limiter of its own (one per client, say), with the process-wide rate. */
    public static Limited limited(String key) {
        return new Limited(key);
    }

    /**
     * Log lines of one repeating kind, at most {@code log.rate_limit_lines} per
     * {@code log.rate_limit_interval}, then one summary with the count of those held back.
     * Any thread. On a per-packet path, ask {@link #suppresses()} first so that a line that
     * would not be printed is not formatted either:
     * <pre>
     * if (!exhausted.suppresses()) exhausted.warn("tenant '" + t + "': no free port ...");
     * </pre>
     */
    public static final class Limited {
        private final RateLimit limit;

        Limited(String key) {
            this.limit = new RateLimit(key);
        }

        /** True (and counted) when a line now would be held back; false when it would be printed. */
        public boolean suppresses() {
            return limit.suppresses(System.nanoTime());
        }

        public void error(String message, Throwable t) {
            if (admit(Priority.ERR)) {
                Log.error(message, t);
                limit.printed(Priority.ERR, message);
            }
        }

        public void warn(String message) {
            emit(Priority.WARNING, message);
        }

        public void info(String message) {
            emit(Priority.INFO, message);
        }

        public void debug(String message) {
            emit(Priority.DEBUG, message);
        }

        public void log(Priority p, String message) {
            emit(p, message);
        }

        private void emit(Priority p, String message) {
            if (admit(p)) {
                Log.log(p, message);
                limit.printed(p, message);
            }
        }

        private boolean admit(Priority p) {
            return enabled(p) && limit.acquire(System.nanoTime(), Log::summary);
        }
    }
}
