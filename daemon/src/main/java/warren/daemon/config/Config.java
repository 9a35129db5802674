package warren.daemon.config;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A daemon's configuration: {@code key = value} lines, {@code #} comments, blank lines ignored.
 * Every key has a default, so no file is needed. An unknown key, a repeated key or a bad value is
 * a {@link ConfigException} naming the file, the line and the key: a typo never silently turns
 * into a default. The same {@link #validate} serves the restarter, which checks a new config
 * before it asks for an upgrade.
 */
public final class Config {
    private final Map<String, ConfigKey<?>> keys = new LinkedHashMap<>();
    private final Map<String, Object> values = new HashMap<>();
    private final String source;

    private Config(Collection<ConfigKey<?>> known, String source) {
        for (ConfigKey<?> k : known) {
            keys.put(k.name(), k);
        }
        this.source = source;
    }

    /** Defaults only. */
    public static Config defaults(Collection<ConfigKey<?>> known) {
        return new Config(known, "defaults");
    }

    /** Loads {@code file} (null = defaults only). */
    public static Config load(Path file, Collection<ConfigKey<?>> known) throws ConfigException {
        if (file == null) {
            return defaults(known);
        }
        List<String> lines;
        try {
            lines = Files.readAllLines(file, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new ConfigException("cannot read config " + file + ": " + e.getMessage());
        }
        Config c = new Config(known, file.toString());
        c.parse(lines);
        return c;
    }

    /** Parses config text (for tests and for the restarter's validation). */
    public static Config parse(String text, Collection<ConfigKey<?>> known, String source) throws ConfigException {
        Config c = new Config(known, source);
        c.parse(List.of(text.split("\n", -1)));
        return c;
    }

    private void parse(List<String> lines) throws ConfigException {
        for (int i = 0; i < lines.size(); i++) {
            String line = lines.get(i).strip();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            int eq = line.indexOf('=');
            String where = source + " line " + (i + 1);
            if (eq <= 0) {
                throw new ConfigException(where + ": expected 'key = value', got '" + line + "'");
            }
            String name = line.substring(0, eq).strip();
            String text = line.substring(eq + 1).strip();
            ConfigKey<?> key = keys.get(name);
            if (key == null) {
                throw new ConfigException(where + ": unknown key '" + name + "' (known: " + String.join(", ", keys.keySet()) + ")");
            }
            if (values.containsKey(name)) {
                throw new ConfigException(where + ": key '" + name + "' set twice");
            }
            try {
                values.put(name, key.parse(text));
            } catch (IllegalArgumentException | ArithmeticException e) {
                String why = e instanceof NumberFormatException ? "not a number" : e.getMessage();
                throw new ConfigException(where + ": bad value '" + text + "' for " + name + ": " + why);
            }
        }
    }

    @SuppressWarnings("unchecked")
    public <T> T get(ConfigKey<T> key) {
        if (!keys.containsKey(key.name())) {
            throw new IllegalArgumentException("config key " + key.name() + " is not registered");
        }
        Object v = values.get(key.name());
        return v != null ? (T) v : key.defaultValue();
    }

    public String source() {
        return source;
    }

    /** "key = value  # help" for every key, as a documented default config. */
    public String describe() {
        List<String> out = new ArrayList<>();
        for (ConfigKey<?> k : keys.values()) {
            out.add("# " + k.help() + "\n" + k.name() + " = " + text(k));
        }
        return String.join("\n", out) + "\n";
    }

    private <T> String text(ConfigKey<T> k) {
        return k.format(get(k));
    }
}
