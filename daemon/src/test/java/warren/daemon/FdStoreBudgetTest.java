package warren.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * What systemd can hand back after a crash: LISTEN_FDNAMES is one environment string, which the
 * kernel caps at 131,072 bytes (an exec with more fails E2BIG), and systemd hands back about half
 * its RLIMIT_NOFILE. The bound must cover the names exactly as systemd would join them.
 */
class FdStoreBudgetTest {
    private static final long NO_COUNT_LIMIT = Long.MAX_VALUE;

    @Test
    void theBoundCoversTheNamesAsSystemdJoinsThem() {
        // Splicer: 5 fds per pair under p<TASK>, live tasks numbered below 1,000,000, one connection
        long next = 1_000_000;
        int fits = 0;
        while (FdStoreBudget.refusal(fits + 1, next, 5, 1, 2, NO_COUNT_LIMIT) == null) {
            fits++;
        }
        // the most that fits, named as systemd would pass them: every name at its longest
        List<String> names = new ArrayList<>();
        names.add("control");
        names.add("c1");
        for (int i = 0; i < fits; i++) {
            for (int f = 0; f < 5; f++) {
                names.add("p" + (next - 1 - i));
            }
        }
        String env = "LISTEN_FDNAMES=" + String.join(":", names);
        assertTrue(env.length() + 1 <= 32 * 4096, env.length() + " bytes with " + fits + " pairs: past MAX_ARG_STRLEN");
        assertTrue(fits >= 2800 && fits <= 2900, "7-digit task numbers leave ~2,860 pairs, not " + fits);
        String why = FdStoreBudget.refusal(fits + 1, next, 5, 1, 2, NO_COUNT_LIMIT);
        assertNotNull(why);
        assertTrue(why.contains("LISTEN_FDNAMES") && why.contains("E2BIG"), why);
        // 8,000 pairs of 5 fds cannot be named within it, whatever their numbers
        assertNotNull(FdStoreBudget.refusal(8000, 8001, 5, 1, 2, NO_COUNT_LIMIT));
    }

    /**
     * Pairs in the pair book: 4 fds under a slot's name. 8,000 of them (slots claimed lowest
     * first), the book and 64 connections, joined exactly as systemd joins them, fit one
     * environment string; the bound is the names' exact length, and refuses only past it.
     */
    @Test
    void eightThousandBookPairsCanBeNamed() {
        PairBook book = new PairBook();
        int connections = 64;
        List<String> names = new ArrayList<>();
        names.add("control");
        names.add(FdStoreNames.BOOK);
        for (int c = 0; c < connections; c++) {
            names.add(FdStoreNames.connection(c));
        }
        int pairs = 0;
        while (FdStoreBudget.refusal(pairs + 1, 10_000_000, 5, book.inUse() + 1,
                book.nameBytes() + PairBookTest.names(book.inUse()), connections, connections, NO_COUNT_LIMIT) == null) {
            int slot = book.claim();
            for (int f = 0; f < PairBook.FDS_PER_PAIR; f++) {
                names.add(FdStoreNames.slot(slot));
            }
            pairs++;
        }
        String env = "LISTEN_FDNAMES=" + String.join(":", names);
        assertTrue(env.length() + 1 <= 32 * 4096, env.length() + " bytes with " + pairs + " pairs: past MAX_ARG_STRLEN");
        assertTrue(pairs >= 8000, "8,000 pairs and more can be named, not " + pairs);
        assertTrue(env.length() + 1 > 32 * 4096 - FdStoreBudget.NAMES_RESERVE - 32,
                "and the bound is tight: " + env.length() + " bytes with " + pairs + " pairs");
        // the book's figures are its names' exact length: 8,000 pairs' names within ~110,000 bytes
        PairBook eight = new PairBook();
        for (int i = 0; i < 8000; i++) {
            eight.claim();
        }
        assertTrue(eight.nameBytes() < 111_000, eight.nameBytes() + " bytes");
        assertNull(FdStoreBudget.refusal(8000, 9_999_999, 5, 8000, eight.nameBytes(), connections, connections,
                NO_COUNT_LIMIT));
    }

    @Test
    void theCountIsBoundedByWhatSystemdCanHandBack() {
        // the same machine with the pair book: 4 fds a pair and the book: 2,371 pairs
        PairBook book = new PairBook();
        for (int i = 0; i < 2371; i++) {
            book.claim();
        }
        assertNull(FdStoreBudget.refusal(2371, 3000, 5, 2371, book.nameBytes(), 1, 2, 9488));
        book.claim();
        String refused = FdStoreBudget.refusal(2372, 3000, 5, 2372, book.nameBytes(), 1, 2, 9488);
        assertNotNull(refused);
        assertTrue(refused.contains("9490 fds"), refused);
        // this machine: RLIMIT_NOFILE hard 20,000 -> 9,488 fds -> 1,897 pairs of 5 with one connection
        assertNull(FdStoreBudget.refusal(1897, 2000, 5, 1, 2, 9488));
        String why = FdStoreBudget.refusal(1898, 2000, 5, 1, 2, 9488);
        assertNotNull(why);
        assertTrue(why.contains("9488") && why.contains("RLIMIT_NOFILE"), why);
        long max = FdStoreBudget.maxFds();
        assertTrue(max > 0, "this process's own bound: " + max);
    }

    @Test
    void digitsCountsEveryPowerOfTen() {
        assertEquals(1, FdStoreBudget.digits(0));
        assertEquals(1, FdStoreBudget.digits(9));
        assertEquals(2, FdStoreBudget.digits(10));
        assertEquals(7, FdStoreBudget.digits(1_000_000));
        assertEquals(19, FdStoreBudget.digits(Long.MAX_VALUE));
    }
}
