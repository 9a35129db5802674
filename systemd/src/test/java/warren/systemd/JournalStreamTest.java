package warren.systemd;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import warren.fdpass.libc.Native;

/** $JOURNAL_STREAM names fd 2 exactly, or it does not count. */
class JournalStreamTest {
    @Test
    void theVariableMustNameTheDeviceAndInodeOfTheFd() throws Exception {
        int[] sp = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
        try {
            long[] st = Native.fstat(sp[0]);
            String mine = Long.toUnsignedString(st[2]) + ":" + Long.toUnsignedString(st[3]);
            assertTrue(JournalStream.connects(sp[0], mine));
            assertFalse(JournalStream.connects(sp[1], mine), "the other end is another inode");
            assertFalse(JournalStream.connects(sp[0], null), "no variable: not journald");
            assertFalse(JournalStream.connects(sp[0], ""));
            assertFalse(JournalStream.connects(sp[0], st[2] + ":" + (st[3] + 1)));
            assertFalse(JournalStream.connects(sp[0], (st[2] + 1) + ":" + st[3]));
            assertFalse(JournalStream.connects(sp[0], mine + "x"));
            assertFalse(JournalStream.connects(sp[0], ":" + st[3]));
            assertFalse(JournalStream.connects(-1, mine), "a closed fd is not journald");
        } finally {
            Native.close(sp[0]);
            Native.close(sp[1]);
        }
    }

    @Test
    void parsing() {
        assertTrue(JournalStream.matches("8:12345", 8, 12345));
        assertTrue(JournalStream.matches("18446744073709551615:1", -1L, 1), "st_dev is unsigned");
        assertFalse(JournalStream.matches("8:12345:1", 8, 12345));
        assertFalse(JournalStream.matches("8", 8, 12345));
        assertFalse(JournalStream.matches("8:", 8, 12345));
        assertFalse(JournalStream.matches("a:b", 8, 12345));
    }
}
