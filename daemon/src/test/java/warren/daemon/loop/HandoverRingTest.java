package warren.daemon.loop;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import warren.fdpass.EventFd;
import warren.fdpass.libc.Native;

/**
 * The hand-over ring between two loops: a million packets cross from one thread to another in
 * order and intact, the consumer sleeps on its eventfd like a loop and is never left asleep with
 * packets waiting, a full ring refuses, and neither side allocates per packet.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class HandoverRingTest {
    private static final int PACKETS = 1_000_000;

    /** Packet seq: its length and content are functions of seq; the tag carries its checksum. */
    private static int lengthOf(long seq, int max) {
        return (int) Math.min(max, 8 + (seq * 7919) % 1600);
    }

    private static void fill(ByteBuffer b, long seq, int length) {
        b.putLong(0, seq);
        for (int j = 8; j < length; j++) {
            b.put(j, (byte) (seq * 31 + j * 7));
        }
    }

    private static int checksum(ByteBuffer b, int offset, int length) {
        int s = 1;
        for (int j = 0; j < length; j++) {
            s = s * 31 + b.get(offset + j);
        }
        return s;
    }

    /** What the consumer saw; one instance, no allocation per packet. */
    private static final class Check implements HandoverRing.Receiver {
        long expected;
        long badSeq;
        long badSum;
        long badLength;
        int max;

        @Override
        public void onPacket(ByteBuffer buffer, int offset, int length, int tag) {
            long seq = buffer.getLong(offset);
            if (seq != expected) {
                badSeq++;
            }
            if (length != lengthOf(seq, max)) {
                badLength++;
            }
            if (checksum(buffer, offset, length) != tag) {
                badSum++;
            }
            expected = seq + 1;
        }
    }

    @Test
    void aMillionPacketsCrossInOrderAndIntactAndTheConsumerIsWokenWhenAsleep() throws Exception {
        try (EventFd wake = new EventFd()) {
            HandoverRing ring = new HandoverRing(1024, HandoverRing.DEFAULT_SLOT_SIZE, wake);
            Check check = new Check();
            check.max = ring.maxPacket();
            long[] sleeps = new long[1];
            long[] announced = new long[1];
            long[] lost = new long[1];
            CompletableFuture<Void> consumer = CompletableFuture.runAsync(() -> {
                try {
                    while (check.expected < PACKETS) {
                        if (ring.poll(check, 64) > 0) {
                            continue;
                        }
                        announced[0]++;
                        if (ring.prepareToSleep()) {
                            sleeps[0]++;
                            // the loop's epoll_wait; a timeout with packets waiting = a lost wake-up
                            int ready = Native.pollOne(wake.fd(), Native.POLLIN, 10_000);
                            if (ready == 0 && !ring.isEmpty()) {
                                lost[0]++;
                            }
                            wake.drain();
                            ring.awake();
                        }
                    }
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            });
            ByteBuffer pkt = ByteBuffer.allocateDirect(2048);
            long refused = 0;
            long t0 = System.nanoTime();
            for (long seq = 0; seq < PACKETS; seq++) {
                int length = lengthOf(seq, ring.maxPacket());
                fill(pkt, seq, length);
                int sum = checksum(pkt, 0, length);
                while (!ring.offer(pkt, 0, length, sum)) {
                    refused++; // the test waits for room; a loop would drop and count
                    Thread.onSpinWait();
                }
            }
            consumer.get(100, TimeUnit.SECONDS);
            long ns = System.nanoTime() - t0;
            System.out.printf("handover ring: %d packets in %.0f ms (%.0f ns/packet incl. fill and checksums),"
                    + " %d wake-ups written, %d consumer sleeps (%d announced), %d refused while full, %d lost wake-ups%n",
                    PACKETS, ns / 1e6, (double) ns / PACKETS, ring.wakeups(), sleeps[0], announced[0], refused, lost[0]);
            assertEquals(PACKETS, check.expected, "all packets arrived");
            assertEquals(0, check.badSeq, "none lost or reordered");
            assertEquals(0, check.badLength, "lengths intact");
            assertEquals(0, check.badSum, "contents intact");
            assertEquals(0, lost[0], "never asleep with packets waiting");
            assertEquals(PACKETS, ring.offered());
            assertEquals(PACKETS, ring.taken());
            assertTrue(ring.wakeups() <= announced[0], "at most one eventfd write per announced sleep");
            assertEquals(refused, ring.full());
        }
    }

    @Test
    void aFullRingRefusesAndTakesAgainOnceRoomIsMade() throws Exception {
        try (EventFd wake = new EventFd()) {
            HandoverRing ring = new HandoverRing(4, 256, wake);
            ByteBuffer pkt = ByteBuffer.allocateDirect(512);
            for (int i = 0; i < 4; i++) {
                pkt.putInt(0, i);
                assertTrue(ring.offer(pkt, 0, 100, i));
            }
            pkt.putInt(0, 4);
            assertFalse(ring.offer(pkt, 0, 100, 4), "full");
            assertEquals(1, ring.full());
            assertFalse(ring.offer(pkt, 0, ring.maxPacket() + 1, 5), "too big for a slot");
            int[] got = new int[8];
            int[] n = {0};
            assertEquals(1, ring.poll((b, off, len, tag) -> got[n[0]++] = tag, 1));
            assertTrue(ring.offer(pkt, 0, 100, 4), "room again");
            assertEquals(4, ring.poll((b, off, len, tag) -> got[n[0]++] = b.getInt(off) == tag ? tag : -1, 16));
            assertEquals("[0, 1, 2, 3, 4]", java.util.Arrays.toString(java.util.Arrays.copyOf(got, n[0])));
            assertEquals(0, ring.wakeups(), "nobody slept");
            assertTrue(ring.prepareToSleep());
            assertTrue(ring.offer(pkt, 0, 10, 9));
            assertEquals(1, ring.wakeups(), "the sleeper was signalled");
            assertEquals(1, wake.drain());
            assertFalse(ring.prepareToSleep(), "a packet is waiting: do not sleep");
        }
    }

    /**
     * 0 bytes per packet: ThreadMXBean's allocated bytes of this thread around 1,000,000 offers
     * and polls, including a sleep announcement, an eventfd write and its drain every 64 packets.
     */
    @Test
    void offerAndPollAllocateNothing() throws Exception {
        try (EventFd wake = new EventFd()) {
            HandoverRing ring = new HandoverRing(256, HandoverRing.DEFAULT_SLOT_SIZE, wake);
            ByteBuffer pkt = ByteBuffer.allocateDirect(2048);
            long[] sum = new long[1];
            HandoverRing.Receiver receiver = (b, off, len, tag) -> sum[0] += len + b.get(off);
            com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
            long tid = Thread.currentThread().getId();
            for (int round = 0; round < 2; round++) {
                long before = mx.getThreadAllocatedBytes(tid);
                long t0 = System.nanoTime();
                for (int i = 0; i < PACKETS; i++) {
                    if ((i & 63) == 0) {
                        while (ring.poll(receiver, 64) > 0) {
                            // drain
                        }
                        ring.prepareToSleep();
                    }
                    ring.offer(pkt, 0, 1500, i);
                    if ((i & 63) == 0) {
                        wake.drain();
                    }
                }
                long ns = System.nanoTime() - t0;
                long allocated = mx.getThreadAllocatedBytes(tid) - before;
                if (round == 1) {
                    System.out.printf("handover ring: %d bytes allocated over %d offers and polls of 1,500 B"
                            + " (%.0f ns per packet on one thread, %d eventfd wake-ups)%n", allocated, PACKETS,
                            (double) ns / PACKETS, ring.wakeups());
                    assertTrue(allocated < 4096, allocated + " bytes allocated");
                    assertTrue(ring.wakeups() >= 2 * PACKETS / 64, "the wake-up path was exercised");
                }
            }
        }
    }
}
