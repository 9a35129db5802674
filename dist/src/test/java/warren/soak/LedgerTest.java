package warren.soak;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** The soak's windows of losses by design: open ones, closed ones and their slack. */
class LedgerTest {
    @Test
    void aRefusalDuringABurstStillUnderWayIsByDesign() {
        Ledger l = new Ledger();
        long before = System.nanoTime();
        long h = l.openBurst("splicer");
        long during = System.nanoTime();
        assertTrue(l.burstDuring("splicer", during, during + 1), "inside an open burst");
        assertTrue(l.burstDuring("splicer", before, during + 1), "a request sent before it, refused inside it");
        assertFalse(l.burstDuring("fish", during, during + 1), "another daemon's burst");
        l.closeBurst(h);
        long after = System.nanoTime();
        assertTrue(l.burstDuring("splicer", after, after + 1), "within the 2 s slack after it");
        assertFalse(l.burstDuring("splicer", after + 3_000_000_000L, after + 3_000_000_001L), "past the slack");
        assertFalse(l.burstDuring("splicer", before - 2, before - 1), "before it");
    }
}
