package warren.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;

/** The fd store's names: every kind formats and parses back to itself; anything else is refused by name. */
class FdStoreNamesTest {
    @Test
    void everyKindRoundTrips() {
        for (long n : new long[] {0, 1, 9, 10, 4711, Long.MAX_VALUE}) {
            check(FdStoreNames.connection(n), FdStoreNames.Kind.CONNECTION, n, "c" + n);
            check(FdStoreNames.pair(n), FdStoreNames.Kind.PAIR, n, "p" + n);
            check(FdStoreNames.task(n), FdStoreNames.Kind.TASK, n, "t" + n);
        }
        for (String x : List.of("tun", "tun0", "tun1", "netns", "listen4", "a.b-c_d")) {
            String s = FdStoreNames.extra(x);
            assertEquals("x." + x, s, "the on-store format is as before");
            FdStoreNames.Name name = FdStoreNames.parse(s);
            assertEquals(FdStoreNames.Kind.EXTRA, name.kind());
            assertEquals(x, name.extra());
            assertEquals(s, name.toString());
            assertTrue(FdStoreNames.isStored(s));
        }
    }

    /** A multi-queue TUN's queues, one per name; queue 0 keeps the name of the single-queue days. */
    @Test
    void indexedExtrasKeepIndexZerosOldName() {
        assertEquals("x.tun", FdStoreNames.indexedExtra("tun", 0));
        assertEquals("x.tun1", FdStoreNames.indexedExtra("tun", 1));
        assertEquals("x.tun12", FdStoreNames.indexedExtra("tun", 12));
        assertEquals("tun1", FdStoreNames.parse(FdStoreNames.indexedExtra("tun", 1)).extra());
        assertThrows(IllegalArgumentException.class, () -> FdStoreNames.indexedExtra("tun", -1));
    }

    private static void check(String s, FdStoreNames.Kind kind, long n, String want) {
        assertEquals(want, s, "the on-store format is as before");
        FdStoreNames.Name name = FdStoreNames.parse(s);
        assertEquals(kind, name.kind());
        assertEquals(n, name.number());
        assertNull(name.extra());
        assertEquals(s, name.toString(), "parses back to the same string");
        assertEquals(name, FdStoreNames.tryParse(s));
        assertTrue(FdStoreNames.isStored(s));
    }

    @Test
    void junkIsRefusedWithItsName() {
        for (String junk : List.of("", "c", "p", "t", "x.", "x", "c-1", "c+1", "c01", "p00", "c1x", "p 1", "t1.5",
                "t99999999999999999999", "t9223372036854775808", "C1 ", "x.a:b", "x.a b", "x.\u00e9",
                "control", "warren-splicer.socket", "unknown", "q1", "books", "AAAAAA", "A\"", "A\\", "A$", "A%",
                "A`", "A'", "\u00e9", "0", "9A", "A:")) {
            assertFalse(FdStoreNames.isStored(junk), junk);
            assertNull(FdStoreNames.tryParse(junk), junk);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> FdStoreNames.parse(junk), junk);
            assertTrue(e.getMessage().contains("\"" + junk + "\""), "the error names the entry: " + e.getMessage());
        }
        assertFalse(FdStoreNames.isStored(null));
        assertThrows(IllegalArgumentException.class, () -> FdStoreNames.connection(-1));
        assertThrows(IllegalArgumentException.class, () -> FdStoreNames.task(-5));
        assertThrows(IllegalArgumentException.class, () -> FdStoreNames.extra(""));
        assertThrows(IllegalArgumentException.class, () -> FdStoreNames.extra("a:b"));
        assertThrows(IllegalArgumentException.class, () -> FdStoreNames.extra("x".repeat(254)));
        assertEquals("x." + "x".repeat(253), FdStoreNames.extra("x".repeat(253)), "systemd's 255 characters");
        assertEquals(FdStoreNames.LISTENER, "control", "the shipped .socket unit's FileDescriptorName=");
    }

    /**
     * Slot names: bijective (every slot formats to a name that parses back to it, no two slots
     * share a name), as short as they can be (1 character for 51 slots, 2 for the next 4,437, 3
     * for the next 386,019), never starting with a lowercase letter (so never another kind's name)
     * and valid for systemd.
     */
    @Test
    void slotNamesAreShortBijectiveAndApartFromTheOtherKinds() {
        java.util.Set<String> seen = new java.util.HashSet<>();
        for (int slot = 0; slot < 400_000; slot += slot < 10_000 ? 1 : 37) {
            String s = FdStoreNames.slot(slot);
            assertTrue(seen.add(s), "two slots named " + s);
            FdStoreNames.Name name = FdStoreNames.parse(s);
            assertEquals(FdStoreNames.Kind.SLOT, name.kind(), s);
            assertEquals(slot, name.number(), s);
            assertEquals(s, name.toString());
            assertEquals(s.length(), FdStoreNames.slotNameLength(slot));
            assertFalse(Character.isLowerCase(s.charAt(0)), s);
            for (char c : s.toCharArray()) { // systemd's fdname_is_valid, and nothing a shell or C escape would touch
                assertTrue(c > 0x20 && c < 0x7f && "\"'\\$%`:".indexOf(c) < 0, s);
            }
        }
        assertEquals(1, FdStoreNames.slot(50).length());
        assertEquals(2, FdStoreNames.slot(51).length());
        assertEquals(2, FdStoreNames.slot(51 + 4437 - 1).length());
        assertEquals(3, FdStoreNames.slot(51 + 4437).length());
        assertEquals(3, FdStoreNames.slot(51 + 4437 + 386_019 - 1).length());
        assertEquals(4, FdStoreNames.slot(51 + 4437 + 386_019).length());
        assertEquals(Integer.MAX_VALUE, FdStoreNames.parse(FdStoreNames.slot(Integer.MAX_VALUE)).number());
        assertThrows(IllegalArgumentException.class, () -> FdStoreNames.slot(-1));
        assertEquals(FdStoreNames.Kind.BOOK, FdStoreNames.parse("book").kind());
        assertEquals("book", FdStoreNames.parse("book").toString());
    }
}
