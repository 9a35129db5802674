package warren.daemon.handoff;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Set;
import org.junit.jupiter.api.Test;

/** {@link DeltaCheck}: each rule, its message naming the key, and what a delta that passes records. */
class DeltaCheckTest {
    /** Copies of keys 1, 2, 3 and 1L << 40 are held. */
    private static DeltaCheck check() {
        Set<Long> held = Set.of(1L, 2L, 3L, 1L << 40);
        return new DeltaCheck(held::contains, k -> "pair key " + k);
    }

    private static String refused(Runnable r) {
        return assertThrows(IllegalArgumentException.class, r::run).getMessage();
    }

    @Test
    void aDeltaThatFitsTheCopiesPasses() {
        DeltaCheck d = check();
        d.ended(1);
        d.ended(1L << 40);
        d.updated(2);
        d.updated(3);
        assertTrue(d.isEnded(1));
        assertTrue(d.isEnded(1L << 40));
        assertFalse(d.isEnded(2), "updated, not ended");
        assertFalse(d.isEnded(4), "never held");
        assertEquals(2, d.endedCount());
    }

    @Test
    void anEndOfAKeyNeverCopiedOrEndedTwiceIsRefused() {
        DeltaCheck d = check();
        assertEquals("pair key 9 ended twice or never pre-copied here", refused(() -> d.ended(9)));
        assertFalse(d.isEnded(9), "a refused end is not recorded");
        d.ended(2);
        assertEquals("pair key 2 ended twice or never pre-copied here", refused(() -> d.ended(2)));
        assertEquals(1, d.endedCount());
    }

    @Test
    void anUpdateOfAKeyNeverCopiedEndedOrUpdatedTwiceIsRefused() {
        DeltaCheck d = check();
        assertEquals("an update of pair key 9, never pre-copied here", refused(() -> d.updated(9)));
        d.ended(1);
        assertEquals("pair key 1 both ended and updated", refused(() -> d.updated(1)));
        d.updated(2);
        assertEquals("pair key 2 updated twice", refused(() -> d.updated(2)));
    }

    @Test
    void nothingIsHeldWhereTheCallerSaysSo() {
        // e.g. a pre-copy chunk: no key can be ended or updated; the name is the caller's
        DeltaCheck d = new DeltaCheck(k -> false, k -> "slot " + (k >>> 32) + " generation " + (k & 0xFFFFFFFFL));
        long key = 5L << 32 | 0xFFFFFFFFL;
        assertEquals("slot 5 generation 4294967295 ended twice or never pre-copied here", refused(() -> d.ended(key)));
        assertEquals("an update of slot 5 generation 4294967295, never pre-copied here", refused(() -> d.updated(key)));
        assertEquals(0, d.endedCount());
    }
}
