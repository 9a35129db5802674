package warren.daemon;

import java.io.PrintStream;

/**
 * Operator log lines on stderr (journald adds the time under systemd): "name: message". Lines
 * about one task or connection start with it ("task 42: ..."), so one grep follows it.
 */
public final class Log {
    private static volatile String name = "warren";
    private static volatile PrintStream out = System.err;
    private static volatile boolean debug = Boolean.getBoolean("warren.debug");

    private Log() {}

    public static void setName(String daemonName) {
        name = daemonName;
    }

    public static void setDebug(boolean on) {
        debug = on;
    }

    public static boolean debugEnabled() {
        return debug;
    }

    public static void info(String message) {
        out.println(name + ": " + message);
    }

    public static void warn(String message) {
        out.println(name + ": warning: " + message);
    }

    public static void error(String message, Throwable t) {
        out.println(name + ": error: " + message + (t == null ? "" : ": " + t));
        if (t != null && (debug || !(t instanceof java.io.IOException))) {
            t.printStackTrace(out);
        }
    }

    public static void debug(String message) {
        if (debug) {
            out.println(name + ": debug: " + message);
        }
    }
}
