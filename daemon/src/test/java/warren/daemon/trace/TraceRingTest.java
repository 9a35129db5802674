package warren.daemon.trace;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import org.junit.jupiter.api.Test;

/** The ring's layout, its bounds, and the cost of one copy (no allocation; time printed). */
class TraceRingTest {
    @Test
    void recordsArePackedWithTheirHeader() {
        TraceRing ring = new TraceRing(TraceRing.HEADER + TraceRing.MAX_PACKET);
        ring.reset(65_535, 10);
        ByteBuffer pkt = ByteBuffer.allocateDirect(64);
        for (int i = 0; i < 64; i++) {
            pkt.put(i, (byte) i);
        }
        long t0 = System.nanoTime();
        ring.copy(pkt, 8, 20, TraceRing.TRANSLATED_IN);
        ring.copy(pkt, 0, 4, TraceRing.CLIENT_OUT);
        ByteBuffer r = ring.region();
        assertEquals(2 * TraceRing.HEADER + 24, ring.used());
        assertTrue(r.getLong(0) >= t0 && r.getLong(0) <= System.nanoTime());
        assertEquals(20, r.getInt(TraceRing.AT_LENGTH));
        assertEquals(20, r.getShort(TraceRing.AT_KEPT));
        assertEquals(TraceRing.TRANSLATED_IN, r.get(TraceRing.AT_POINT));
        assertEquals(8, r.get(TraceRing.HEADER));
        assertEquals(27, r.get(TraceRing.HEADER + 19));
        int second = TraceRing.HEADER + 20;
        assertEquals(TraceRing.CLIENT_OUT, r.get(second + TraceRing.AT_POINT));
        assertEquals(3, r.get(second + TraceRing.HEADER + 3));
    }

    @Test
    void snaplenBudgetAndRoomBoundIt() {
        TraceRing ring = new TraceRing(TraceRing.HEADER + TraceRing.MAX_PACKET);
        ring.reset(100, 3);
        ByteBuffer big = ByteBuffer.allocate(65_535);
        ring.copy(big, 0, 65_535, TraceRing.CLIENT_IN);
        assertEquals(TraceRing.HEADER + 100, ring.used(), "cut to snaplen");
        assertEquals(65_535, ring.region().getInt(TraceRing.AT_LENGTH), "original length kept");
        ring.copy(big, 0, 10, TraceRing.CLIENT_IN);
        ring.copy(big, 0, 10, TraceRing.CLIENT_IN);
        int used = ring.used();
        ring.copy(big, 0, 10, TraceRing.CLIENT_IN);
        assertEquals(used, ring.used(), "max_packets reached: nothing more is copied");
        assertEquals(0, ring.dropped(), "and that is not a drop");

        ring.reset(65_535, 1000);
        ring.copy(big, 0, 65_535, TraceRing.CLIENT_IN);
        ring.copy(big, 0, 1, TraceRing.CLIENT_IN);
        assertEquals(1, ring.dropped(), "no room: dropped and counted");
        ring.clear();
        ring.copy(big, 0, 1, TraceRing.CLIENT_IN);
        assertEquals(TraceRing.HEADER + 1, ring.used(), "room again after a drain");
    }

    /**
     * A copy allocates nothing (ThreadMXBean's allocated bytes of this thread over 2 million
     * copies of a 1,500-byte packet from a direct buffer) and its time per packet is printed.
     */
    @Test
    void aCopyAllocatesNothing() {
        TraceRing ring = new TraceRing(1 << 20);
        ByteBuffer pkt = ByteBuffer.allocateDirect(2048);
        com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        long tid = Thread.currentThread().getId();
        int rounds = 2_000_000;
        int perDrain = (1 << 20) / (TraceRing.HEADER + 1500);
        for (int warm = 0; warm < 2; warm++) {
            ring.reset(65_535, Long.MAX_VALUE);
            long before = mx.getThreadAllocatedBytes(tid);
            long t0 = System.nanoTime();
            for (int i = 0; i < rounds; i++) {
                if (i % perDrain == 0) {
                    ring.clear();
                }
                ring.copy(pkt, 0, 1500, i & 3);
            }
            long ns = System.nanoTime() - t0;
            long allocated = mx.getThreadAllocatedBytes(tid) - before;
            if (warm == 1) {
                System.out.printf("trace ring: %.1f ns per 1,500-byte packet copied, %d bytes allocated in %d copies%n",
                        (double) ns / rounds, allocated, rounds);
                assertTrue(allocated < 4096, allocated + " bytes allocated");
            }
        }
    }
}
