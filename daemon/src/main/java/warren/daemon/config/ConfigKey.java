package warren.daemon.config;

/**
 * One config key: its name, default, and how a text value becomes a typed one. Every limit in
 * warren has a key and a default that works without a config file.
 */
public final class ConfigKey<T> {
    /** Turns the text of a value into a typed value, or says why not. */
    @FunctionalInterface
    public interface Parser<T> {
        T parse(String text) throws IllegalArgumentException;
    }

    private final String name;
    private final T defaultValue;
    private final Parser<T> parser;
    private final java.util.function.Function<T, String> formatter;
    private final String help;

    private ConfigKey(String name, T defaultValue, Parser<T> parser, String help) {
        this(name, defaultValue, parser, String::valueOf, help);
    }

    private ConfigKey(String name, T defaultValue, Parser<T> parser, java.util.function.Function<T, String> formatter,
            String help) {
        this.name = name;
        this.defaultValue = defaultValue;
        this.parser = parser;
        this.formatter = formatter;
        this.help = help;
    }

    /**
     * A key of any type: {@code formatter} writes a value the way {@code parser} reads it back
     * (what {@code --print-config} prints must load as the same config).
     */
    public static <T> ConfigKey<T> of(String name, T def, Parser<T> parser, java.util.function.Function<T, String> formatter,
            String help) {
        return new ConfigKey<>(name, def, parser, formatter, help);
    }

    public static ConfigKey<Long> count(String name, long def, long min, long max, String help) {
        return new ConfigKey<>(name, def, t -> {
            long v = Long.parseLong(t.replace("_", ""));
            if (v < min || v > max) {
                throw new IllegalArgumentException("must be between " + min + " and " + max);
            }
            return v;
        }, help);
    }

    /** A duration: "250ms", "30s", "5m", "2h", or plain milliseconds. Stored in ms. */
    public static ConfigKey<Long> millis(String name, long defMillis, String help) {
        return new ConfigKey<>(name, defMillis, ConfigKey::parseMillis, help);
    }

    /** A byte size: "4096", "64k", "16m", "1g" (powers of 1024). */
    public static ConfigKey<Long> bytes(String name, long def, String help) {
        return new ConfigKey<>(name, def, ConfigKey::parseBytes, help);
    }

    /** One of a fixed set of words. */
    public static ConfigKey<String> oneOf(String name, String def, java.util.List<String> allowed, String help) {
        return new ConfigKey<>(name, def, t -> {
            if (!allowed.contains(t)) {
                throw new IllegalArgumentException("expected one of " + String.join(", ", allowed));
            }
            return t;
        }, help);
    }

    /** A key with a parser of its own, which throws IllegalArgumentException saying what is wrong. */
    public static <T> ConfigKey<T> custom(String name, T def, Parser<T> parser, String help) {
        return new ConfigKey<>(name, def, parser, help);
    }

    public static ConfigKey<String> text(String name, String def, String help) {
        return new ConfigKey<>(name, def, t -> t, help);
    }

    /** A file mode in octal, e.g. 0660; printed the same way (not as its decimal value). */
    public static ConfigKey<Integer> mode(String name, int def, String help) {
        return new ConfigKey<>(name, def, t -> {
            int v = Integer.parseInt(t, 8);
            if (v < 0 || v > 07777) {
                throw new IllegalArgumentException("not a file mode");
            }
            return v;
        }, v -> String.format("0%03o", v), help);
    }

    public static ConfigKey<Boolean> flag(String name, boolean def, String help) {
        return new ConfigKey<>(name, def, t -> {
            switch (t.toLowerCase(java.util.Locale.ROOT)) {
                case "true": case "yes": case "on": case "1": return true;
                case "false": case "no": case "off": case "0": return false;
                default: throw new IllegalArgumentException("expected true or false");
            }
        }, help);
    }

    static long parseMillis(String t) {
        String s = t.trim().toLowerCase(java.util.Locale.ROOT);
        long mult = 1;
        if (s.endsWith("ms")) {
            s = s.substring(0, s.length() - 2);
        } else if (s.endsWith("s")) {
            mult = 1000;
            s = s.substring(0, s.length() - 1);
        } else if (s.endsWith("m")) {
            mult = 60_000;
            s = s.substring(0, s.length() - 1);
        } else if (s.endsWith("h")) {
            mult = 3_600_000;
            s = s.substring(0, s.length() - 1);
        }
        long v = Long.parseLong(s.trim());
        if (v < 0) {
            throw new IllegalArgumentException("must not be negative");
        }
        return Math.multiplyExact(v, mult);
    }

    static long parseBytes(String t) {
        String s = t.trim().toLowerCase(java.util.Locale.ROOT);
        long mult = 1;
        char last = s.isEmpty() ? ' ' : s.charAt(s.length() - 1);
        if (last == 'k' || last == 'm' || last == 'g') {
            mult = last == 'k' ? 1L << 10 : last == 'm' ? 1L << 20 : 1L << 30;
            s = s.substring(0, s.length() - 1);
        }
        long v = Long.parseLong(s.trim());
        if (v < 0) {
            throw new IllegalArgumentException("must not be negative");
        }
        return Math.multiplyExact(v, mult);
    }

    public String name() {
        return name;
    }

    public T defaultValue() {
        return defaultValue;
    }

    public String help() {
        return help;
    }

    T parse(String text) {
        return parser.parse(text);
    }

    /** The text of a value, as a config file would hold it. */
    public String format(T value) {
        return formatter.apply(value);
    }
}
