package warren.daemon.config;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.code_intelligence.jazzer.junit.FuzzTest;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import warren.daemon.Daemon;
import warren.daemon.DaemonSpec;
import warren.fdpass.FuzzSupport;

/**
 * Fuzz target for {@link Config#parse}: the input as UTF-8 config text, read with every key the
 * daemon plumbing registers and one key of each kind ({@link ConfigKey#count}, millis, bytes,
 * oneOf, text, mode, flag). Invariants: a config parses or is a {@link ConfigException} (nothing
 * else); a parsed config's {@link Config#describe} (what {@code --print-config} prints) parses
 * again to the same value for every key. {@code ./warren fuzz config}.
 */
class ConfigFuzzTest {
    static final List<ConfigKey<?>> KEYS = keys();

    private static List<ConfigKey<?>> keys() {
        List<ConfigKey<?>> own = List.of(
                ConfigKey.count("fuzz.count", 8, 1, 1 << 20, "a count"),
                ConfigKey.millis("fuzz.timeout", 30_000, "a duration"),
                ConfigKey.bytes("fuzz.buffer", 1 << 20, "a size"),
                ConfigKey.oneOf("fuzz.mode", "auto", List.of("auto", "on", "off"), "a word"),
                ConfigKey.text("fuzz.path", "/run/warren/fuzz.sock", "a text"),
                ConfigKey.mode("fuzz.file_mode", 0660, "a file mode"),
                ConfigKey.flag("fuzz.enabled", true, "a flag"));
        return Daemon.configKeys(new DaemonSpec("fuzz", "0", "config fuzzing", own, null));
    }

    @FuzzTest
    void parse(byte[] in) {
        String text = new String(in, StandardCharsets.UTF_8);
        Config c;
        try {
            c = Config.parse(text, KEYS, "fuzz");
        } catch (ConfigException refused) {
            return;
        }
        String printed = c.describe();
        Config again;
        try {
            again = Config.parse(printed, KEYS, "printed");
        } catch (ConfigException e) {
            throw new AssertionError("what describe() printed does not load: " + e.getMessage() + "\n" + printed, e);
        }
        for (ConfigKey<?> k : KEYS) {
            assertSame(k, c, again);
        }
    }

    private static <T> void assertSame(ConfigKey<T> k, Config a, Config b) {
        assertEquals(k.format(a.get(k)), k.format(b.get(k)), k.name() + " after describe() and parse");
    }

    static Map<String, byte[]> seeds() {
        Map<String, byte[]> s = new LinkedHashMap<>();
        s.put("defaults-described", Config.defaults(KEYS).describe().getBytes(StandardCharsets.UTF_8));
        List<String> lines = new ArrayList<>();
        lines.add("# an operator's config");
        lines.add("threads = 2");
        lines.add("fuzz.count = 1_024");
        lines.add("fuzz.timeout = 250ms");
        lines.add("fuzz.buffer = 16m");
        lines.add("fuzz.mode = off");
        lines.add("fuzz.path =   /tmp/x y  ");
        lines.add("fuzz.file_mode = 0600");
        lines.add("fuzz.enabled = no");
        s.put("operator", String.join("\n", lines).getBytes(StandardCharsets.UTF_8));
        s.put("bad-value", "fuzz.timeout = 99999999999999999h\n".getBytes(StandardCharsets.UTF_8));
        s.put("twice", "fuzz.mode = on\nfuzz.mode = off\n".getBytes(StandardCharsets.UTF_8));
        return s;
    }

    @Test
    void seedsAreInTheCorpus() {
        Map<String, byte[]> s = seeds();
        s.values().forEach(this::parse);
        FuzzSupport.writeOrCheck(ConfigFuzzTest.class, "parse", s);
    }
}
