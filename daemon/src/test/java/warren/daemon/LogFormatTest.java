package warren.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import warren.daemon.logging.Priority;

/** The shape of a stderr line, with and without the sd-daemon priority prefix. */
class LogFormatTest {
    @Test
    void prioritiesAreTheSdDaemonPrefixes() {
        assertEquals("<3>", Priority.ERR.prefix(), "SD_ERR");
        assertEquals("<4>", Priority.WARNING.prefix(), "SD_WARNING");
        assertEquals("<5>", Priority.NOTICE.prefix(), "SD_NOTICE");
        assertEquals("<6>", Priority.INFO.prefix(), "SD_INFO");
        assertEquals("<7>", Priority.DEBUG.prefix(), "SD_DEBUG");
        assertEquals(Priority.WARNING, Priority.of("warning"));
        assertTrue(Priority.ERR.atLeast(Priority.INFO));
        assertFalse(Priority.DEBUG.atLeast(Priority.INFO));
    }

    @Test
    void underJournaldEachLineStartsWithItsPriority() {
        assertEquals("<3>fish: error: conntrack failed", Log.format(Priority.ERR, "conntrack failed", "fish", true));
        assertEquals("<4>fish: warning: no free port", Log.format(Priority.WARNING, "no free port", "fish", true));
        assertEquals("<5>fish: serving", Log.format(Priority.NOTICE, "serving", "fish", true));
        assertEquals("<6>fish: connection 3 closed", Log.format(Priority.INFO, "connection 3 closed", "fish", true));
        assertEquals("<7>fish: debug: slot 4 ended", Log.format(Priority.DEBUG, "slot 4 ended", "fish", true));
        // journald makes one entry per line: every line of a stack trace keeps the priority
        assertEquals("<3>fish: error: boom: x\n<3>\tat a.b(C.java:1)\n<3>\tat d.e(F.java:2)",
                Log.format(Priority.ERR, "boom: x\n\tat a.b(C.java:1)\n\tat d.e(F.java:2)", "fish", true));
    }

    @Test
    void onATerminalThereIsNoPrefix() {
        assertEquals("fish: error: conntrack failed", Log.format(Priority.ERR, "conntrack failed", "fish", false));
        assertEquals("fish: serving", Log.format(Priority.NOTICE, "serving", "fish", false));
        assertEquals("fish: a\n\tb", Log.format(Priority.INFO, "a\n\tb", "fish", false));
    }
}
