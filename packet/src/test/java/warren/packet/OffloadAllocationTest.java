package warren.packet;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import org.junit.jupiter.api.Test;

/**
 * The offload path allocates nothing per packet: validate a super-packet's header, NAT-rewrite it
 * with its partial checksum, cut it into MTU-sized segments, complete a partial checksum. Also
 * prints what a 64 KiB super-packet costs to segment.
 */
class OffloadAllocationTest {

    @Test
    void validateRewriteAndSegmentAllocateNothing() {
        com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        long tid = Thread.currentThread().getId();
        ByteBuffer in = ByteBuffer.allocateDirect(VnetHdr.MAX_MESSAGE);
        ByteBuffer pristine = ByteBuffer.allocateDirect(VnetHdr.MAX_MESSAGE);
        int len = SuperPackets.build(pristine, 0, 4, Ip.TCP, 65_000, 1448, Ip.TCP_ACK);
        ByteBuffer addr = ByteBuffer.allocateDirect(16).put(0, (byte) 198).put(1, (byte) 19);
        ByteBuffer slots = ByteBuffer.allocateDirect(64 * 1500);
        PacketView view = new PacketView();
        FlowKey key = new FlowKey();
        int rounds = 5_000;
        for (int warm = 0; warm < 2; warm++) {
            long before = mx.getThreadAllocatedBytes(tid);
            long t0 = System.nanoTime();
            long segments = 0;
            for (int r = 0; r < rounds; r++) {
                in.put(0, pristine, 0, len);
                if (VnetHdr.parse(in, 0, len, view, key, 1500) != DropReason.NONE) {
                    throw new AssertionError();
                }
                view.rewrite(true, addr, 0, 20_000 + (r & 1023), VnetHdr.needsCsum(in, 0));
                int gso = VnetHdr.gsoSize(in, 0);
                int n = Gso.segments(view, gso);
                for (int i = 0; i < n; i++) {
                    Gso.segment(view, gso, i, slots, (i & 63) * 1500);
                }
                segments += n;
            }
            long ns = System.nanoTime() - t0;
            long allocated = mx.getThreadAllocatedBytes(tid) - before;
            if (warm == 1) {
                assertEquals(45L * rounds, segments);
                System.out.printf("software GSO: %.1f us per 65,000-byte TCP super-packet (45 segments, %.2f GB/s),"
                        + " %d bytes allocated in %d%n", ns / 1000.0 / rounds, 65_000.0 * rounds / ns, allocated, rounds);
                assertTrue(allocated < 4096, allocated + " bytes allocated");
            }
        }
        in.put(0, pristine, 0, len);
        VnetHdr.parse(in, 0, len, view, key, 65535);
        long before = mx.getThreadAllocatedBytes(tid);
        for (int r = 0; r < 10_000; r++) {
            view.completeChecksum();
            view.setPartialChecksum();
        }
        long allocated = mx.getThreadAllocatedBytes(tid) - before;
        assertTrue(allocated < 4096, allocated + " bytes allocated by completeChecksum");
    }
}
