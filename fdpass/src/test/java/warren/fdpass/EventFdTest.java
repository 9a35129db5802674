package warren.fdpass;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import warren.fdpass.libc.Native;

/** The doorbell: signals add up, drain reads and resets them, readiness follows the counter. */
class EventFdTest {
    @Test
    void signalsAddUpAndDrainResets() throws Exception {
        EventFd e = new EventFd();
        try (e) {
            assertEquals(0, Native.pollOne(e.fd(), Native.POLLIN, 0), "not readable while 0");
            assertTrue(e.signal());
            assertTrue(e.signal());
            assertTrue((Native.pollOne(e.fd(), Native.POLLIN, 0) & Native.POLLIN) != 0, "readable");
            assertEquals(2, e.drain());
            assertEquals(0, e.drain(), "nothing pending");
        }
        assertFalse(e.signal(), "closed");
    }
}
