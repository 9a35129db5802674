package warren.daemon;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import org.junit.jupiter.api.Test;
import warren.fdpass.Fd;
import warren.fdpass.FdCount;
import warren.fdpass.libc.Native;

/** The pair book: slots claimed lowest first and counted, descriptions written and read back by slot. */
class PairBookTest {
    /** What slot {@code slot}'s entry adds to LISTEN_FDNAMES, counted here without the book. */
    static long names(long slot) {
        return PairBook.FDS_PER_PAIR * (1L + FdStoreNames.slot((int) slot).length());
    }

    @Test
    void slotsAreClaimedLowestFirstAndCountedExactly() {
        PairBook b = new PairBook();
        long want = 0;
        for (int i = 0; i < 5000; i++) {
            assertEquals(i, b.claim());
            want += names(i);
        }
        assertEquals(5000, b.inUse());
        assertEquals(want, b.nameBytes(), "every name and separator, exactly");
        b.release(7);
        b.release(3);
        b.release(3); // not held any more: ignored
        assertEquals(4998, b.inUse());
        assertEquals(3, b.claim(), "the lowest free one again: the shortest names");
        assertEquals(7, b.claim());
        assertEquals(5000, b.claim());
        assertEquals(want + names(5000), b.nameBytes());
    }

    /**
     * A successor marks its predecessor's slots; a pre-copied pair that ended and the pair given
     * its slot next may be marked in either order, and the slot stays held by the second.
     */
    @Test
    void marksAreCountedSoThatASlotPassedOnStaysHeld() {
        PairBook b = new PairBook();
        b.mark(4);
        b.mark(4); // the next pair of slot 4 (the delta), before the first copy's drop
        b.release(4); // the ended copy
        assertEquals(1, b.inUse());
        assertEquals(0, b.claim());
        assertEquals(1, b.claim());
        assertEquals(2, b.claim());
        assertEquals(3, b.claim());
        assertEquals(5, b.claim(), "4 is still held");
        b.release(4);
        assertEquals(4, b.claim());
    }

    @Test
    void descriptionsAreWrittenAndFoundBySlot() throws Exception {
        int before = FdCount.now();
        try (PairBook b = new PairBook()) {
            b.adopt(Fd.adopt(Native.memfd_create("book", Native.MFD_CLOEXEC)));
            byte[] d3 = "three".getBytes();
            byte[] d70 = new byte[PairBook.MAX_DESCRIPTION];
            Arrays.fill(d70, (byte) 7);
            b.write(3, d3, null);
            b.write(70, d70, null);
            assertThrows(IllegalArgumentException.class, () -> b.write(1, new byte[PairBook.MAX_DESCRIPTION + 1], null));
            byte[] content = PairBook.read(b.storedFd(), 1 << 20);
            assertEquals(71 * PairBook.SLOT_BYTES, content.length);
            int[] at = PairBook.find(content, 3);
            assertArrayEquals(d3, Arrays.copyOfRange(content, at[0], at[0] + at[1]));
            at = PairBook.find(content, 70);
            assertArrayEquals(d70, Arrays.copyOfRange(content, at[0], at[0] + at[1]));
            assertNull(PairBook.find(content, 4), "never written");
            assertNull(PairBook.find(content, 71), "past the end");
            assertNull(PairBook.find(content, -1));
            b.write(3, "3".getBytes(), null); // a slot written again: the newer description
            at = PairBook.find(PairBook.read(b.storedFd(), 1 << 20), 3);
            assertEquals(1, at[1]);
            assertThrows(IllegalArgumentException.class, () -> PairBook.read(b.storedFd(), 1000), "past the limit");
        }
        assertEquals(before, FdCount.now(), "the book's fd closed with it");
    }

    @Test
    void aBookHandedInTwiceKeepsTheFirst() throws Exception {
        int before = FdCount.now();
        PairBook b = new PairBook();
        assertNull(b.storedFd(), "none until created or adopted");
        Fd first = Fd.adopt(Native.memfd_create("a", Native.MFD_CLOEXEC));
        Fd second = Fd.adopt(Native.memfd_create("b", Native.MFD_CLOEXEC));
        b.adopt(first);
        b.adopt(second);
        assertTrue(!second.isOpen(), "the second is closed");
        assertEquals(first.get(), b.storedFd().get());
        b.close();
        assertTrue(!b.write(0, new byte[1], null), "closed (at exit): no second book is made");
        assertEquals(before, FdCount.now());
    }
}
