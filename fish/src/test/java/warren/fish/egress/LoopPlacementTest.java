package warren.fish.egress;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.Random;
import org.junit.jupiter.api.Test;

/** The placement rule, the residue-class sizes against a count, and the owner snapshot against a scan. */
class LoopPlacementTest {
    @Test
    void classSizesAgreeWithACount() {
        Random rnd = new Random(7);
        for (int k = 0; k < 2_000; k++) {
            int n = 1 + rnd.nextInt(8);
            int first = 1 + rnd.nextInt(65535);
            int last = Math.min(65535, first + rnd.nextInt(300));
            int total = 0;
            for (int c = 0; c < n; c++) {
                int count = 0;
                for (int p = first; p <= last; p++) {
                    count += p % n == c ? 1 : 0;
                }
                assertEquals(count, LoopPlacement.classSize(first, last, n, c), first + "-" + last + " % " + n + " == " + c);
                total += count;
            }
            assertEquals(last - first + 1, total);
        }
    }

    @Test
    void aClientGoesWhereMostOfItsRepliesLandTiesToTheLeastLoaded() {
        assertEquals(1, LoopPlacement.place(40001, 40001, new int[] {0, 5}), "one port: its own class, load aside");
        assertEquals(0, LoopPlacement.place(40000, 40002, new int[] {3, 0}), "two of three ports are even");
        assertEquals(1, LoopPlacement.place(40000, 40001, new int[] {3, 2}), "a tie: the loop with fewer clients");
        assertEquals(0, LoopPlacement.place(40000, 40001, new int[] {2, 2}), "a full tie: the lowest index");
        assertEquals(0, LoopPlacement.place(1, 65535, new int[] {9}), "one loop: always loop 0");
        assertEquals(2, LoopPlacement.place(10, 10, new int[] {0, 0, 0, 0}), "10 % 4 == 2");
    }

    @Test
    void theOwnerSnapshotFindsTheRangeOfAPortAndIsCopiedOnWrite() {
        byte[] a = {(byte) 198, 18, 0, 1};
        byte[] b = {(byte) 198, 18, 0, 2};
        Owners o = Owners.EMPTY.with(a, 30000, 30099, 1).with(a, 10000, 10009, 0).with(b, 5, 5, 1).with(a, 20000, 20000, 1);
        byte[] key = new byte[16];
        System.arraycopy(a, 0, key, 0, 4);
        assertEquals(0, o.loopOf(key, 4, 10000));
        assertEquals(0, o.loopOf(key, 4, 10009));
        assertEquals(-1, o.loopOf(key, 4, 10010));
        assertEquals(1, o.loopOf(key, 4, 20000));
        assertEquals(1, o.loopOf(key, 4, 30050));
        assertEquals(-1, o.loopOf(key, 4, 5));
        assertEquals(1, o.loopOf(b, 4, 5));
        Owners less = o.without(a, 20000, 20000);
        assertEquals(1, o.loopOf(key, 4, 20000), "the old snapshot is unchanged");
        assertEquals(-1, less.loopOf(key, 4, 20000));
        assertEquals(0, less.loopOf(key, 4, 10005));
        Owners none = less.without(a, 10000, 10009).without(a, 30000, 30099);
        assertEquals(-1, none.loopOf(key, 4, 30000));
        assertEquals(1, none.loopOf(b, 4, 5));
        assertEquals(-1, Owners.EMPTY.loopOf(key, 4, 30000));
    }
}
