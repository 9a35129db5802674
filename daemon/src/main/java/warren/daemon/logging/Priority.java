package warren.daemon.logging;

/**
 * syslog(3) priorities as sd-daemon(3) writes them in front of a stderr line: {@code "<3>"} is
 * {@code SD_ERR}, {@code "<7>"} {@code SD_DEBUG}. journald strips the prefix and stores the
 * priority, so {@code journalctl -p warning} shows warnings and worse.
 */
public enum Priority {
    EMERG, ALERT, CRIT, ERR, WARNING, NOTICE, INFO, DEBUG;

    private static final Priority[] ALL = values();
    private static final String[] PREFIXES = new String[ALL.length];

    static {
        for (Priority p : ALL) {
            PREFIXES[p.ordinal()] = "<" + p.ordinal() + ">";
        }
    }

    /** The syslog level: 0 (emerg) to 7 (debug). */
    public int level() {
        return ordinal();
    }

    /** {@code "<N>"}, the sd-daemon line prefix. */
    public String prefix() {
        return PREFIXES[ordinal()];
    }

    /** True when a line of this priority passes a threshold of {@code max} (e.g. INFO passes DEBUG). */
    public boolean atLeast(Priority max) {
        return ordinal() <= max.ordinal();
    }

    /** By its name as in syslog and the config ("err", "warning", "info", "debug", ...). */
    public static Priority of(String name) {
        return valueOf(name.toUpperCase(java.util.Locale.ROOT));
    }
}
