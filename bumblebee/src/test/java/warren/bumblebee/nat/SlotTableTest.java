package warren.bumblebee.nat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.TreeSet;
import org.junit.jupiter.api.Test;

/**
 * {@link SlotTable#moved}, the successor's pause's O(1) bookkeeping per changed slot: after any
 * sequence of moves the free stack holds exactly the FREE slots of the loop (claims hand out each
 * once, never one in use) and the quarantine count is the QUARANTINED ones, as a
 * {@link SlotTable#recount} would make them; taking a slot that is not free is refused.
 */
class SlotTableTest {
    @Test
    void movesKeepTheFreeStackAndTheQuarantineCountAsARecountWould() {
        for (int loops = 1; loops <= 2; loops++) {
            Flow[] flows = SlotTable.table(12);
            SlotTable t = new SlotTable(null, null, flows, 0, loops, 1500, 1000);
            java.util.Random r = new java.util.Random(7 + loops);
            for (int step = 0; step < 500; step++) {
                int slot = r.nextInt(12);
                if (SlotTable.owner(slot, loops) != 0) {
                    continue;
                }
                Flow f = flows[slot];
                int was = f.state;
                f.state = r.nextInt(4); // FREE, RESERVED, ACTIVE, QUARANTINED
                t.moved(f, was);
            }
            TreeSet<Integer> free = new TreeSet<>();
            int quarantined = 0;
            for (Flow f : t.all()) {
                if (f.state == Flow.FREE) {
                    free.add(f.slot);
                }
                quarantined += f.state == Flow.QUARANTINED ? 1 : 0;
            }
            assertEquals(free.size(), t.free());
            assertEquals(free.size(), t.freeShared());
            assertEquals(quarantined, t.quarantined());
            TreeSet<Integer> claimed = new TreeSet<>();
            for (int i = 0; i < free.size(); i++) {
                Flow f = t.claim(null, 0, false);
                claimed.add(f.slot);
                f.state = Flow.RESERVED;
            }
            assertEquals(free, claimed, "each free slot handed out once, none in use");
            assertNull(t.claim(null, 0, false));
            Flow inUse = flows[claimed.isEmpty() ? 0 : claimed.first()];
            assertThrows(IllegalStateException.class, () -> t.moved(inUse, Flow.FREE), "not on the free stack");
        }
    }
}
