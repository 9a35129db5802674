package warren.daemon.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;

class ConfigTest {
    static final ConfigKey<Long> IDLE = ConfigKey.millis("splice.idle_timeout", 300_000, "idle");
    static final ConfigKey<Long> LIMIT = ConfigKey.bytes("splice.byte_limit", 0, "bytes");
    static final ConfigKey<Long> N = ConfigKey.count("n", 5, 1, 10, "n");
    static final ConfigKey<Boolean> ON = ConfigKey.flag("on", false, "on");
    static final ConfigKey<Integer> MODE = ConfigKey.mode("mode", 0660, "mode");
    static final List<ConfigKey<?>> KEYS = List.of(IDLE, LIMIT, N, ON, MODE);

    @Test
    void defaultsWorkWithNoFile() throws Exception {
        Config c = Config.load(null, KEYS);
        assertEquals(300_000L, c.get(IDLE));
        assertEquals(5L, c.get(N));
        assertEquals(0660, c.get(MODE));
    }

    @Test
    void valuesParseWithUnits() throws Exception {
        Config c = Config.parse("# comment\n\nsplice.idle_timeout = 30s\nsplice.byte_limit=16m\nn = 7\non = yes\nmode = 0600\n",
                KEYS, "t");
        assertEquals(30_000L, c.get(IDLE));
        assertEquals(16L << 20, c.get(LIMIT));
        assertEquals(7L, c.get(N));
        assertTrue(c.get(ON));
        assertEquals(0600, c.get(MODE));
        assertEquals(250L, Config.parse("splice.idle_timeout = 250ms", KEYS, "t").get(IDLE));
        assertEquals(7_200_000L, Config.parse("splice.idle_timeout = 2h", KEYS, "t").get(IDLE));
    }

    @Test
    void mistakesAreOneLineNamingTheLineAndKey() {
        assertEquals("t line 2: unknown key 'nn' (known: splice.idle_timeout, splice.byte_limit, n, on, mode)",
                assertThrows(ConfigException.class, () -> Config.parse("n = 1\nnn = 2", KEYS, "t")).getMessage());
        assertEquals("t line 1: bad value '11' for n: must be between 1 and 10",
                assertThrows(ConfigException.class, () -> Config.parse("n = 11", KEYS, "t")).getMessage());
        assertEquals("t line 2: key 'n' set twice",
                assertThrows(ConfigException.class, () -> Config.parse("n = 1\nn = 2", KEYS, "t")).getMessage());
        assertEquals("t line 1: expected 'key = value', got 'n'",
                assertThrows(ConfigException.class, () -> Config.parse("n", KEYS, "t")).getMessage());
        assertEquals("t line 1: bad value 'maybe' for on: expected true or false",
                assertThrows(ConfigException.class, () -> Config.parse("on = maybe", KEYS, "t")).getMessage());
        assertEquals("t line 1: bad value '-5s' for splice.idle_timeout: must not be negative",
                assertThrows(ConfigException.class, () -> Config.parse("splice.idle_timeout = -5s", KEYS, "t")).getMessage());
    }
}
