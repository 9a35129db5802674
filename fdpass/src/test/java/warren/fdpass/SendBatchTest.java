package warren.fdpass;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.management.ManagementFactory;
import org.junit.jupiter.api.Test;
import warren.fdpass.libc.Native;

/**
 * sendmmsg batching: messages keep their boundaries and order, a full socket gives a short count
 * then 0 (EAGAIN) and the rest can be resent from where it stopped, a gone peer is -EPIPE, and a
 * send allocates nothing.
 */
class SendBatchTest {

    @Test
    void sendsMessagesInOneCallKeepingBoundaries() throws Exception {
        int before = FdCount.now();
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
        try {
            SendBatch out = new SendBatch(8, 1500);
            RecvBatch in = new RecvBatch(8, 1500);
            for (int i = 0; i < 8; i++) {
                int len = 100 + i * 150;
                for (int k = 0; k < len; k++) {
                    out.buffer().put(out.offset(i) + k, (byte) (i * 13 + k));
                }
                out.length(i, len);
            }
            assertEquals(8, out.send(sv[0], 8));
            assertEquals(1150, out.sent(7));
            assertEquals(8, in.receive(sv[1]));
            for (int i = 0; i < 8; i++) {
                assertEquals(100 + i * 150, in.length(i));
                for (int k = 0; k < in.length(i); k++) {
                    assertEquals((byte) (i * 13 + k), in.buffer().get(in.offset(i) + k));
                }
            }
            assertEquals(3, out.send(sv[0], 5, 3), "from an index");
            assertEquals(3, in.receive(sv[1]));
            assertEquals(850, in.length(0));
            assertEquals(0, out.send(sv[0], 0), "nothing to send");
            assertThrows(IllegalArgumentException.class, () -> out.send(sv[0], 6, 3));
            assertThrows(IllegalArgumentException.class, () -> out.length(0, 1501));
        } finally {
            Native.close(sv[0]);
            Native.close(sv[1]);
        }
        assertEquals(before, FdCount.now());
    }

    @Test
    void aFullSocketGivesAShortCountThenNothingAndTheRestGoesLater() throws Exception {
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
        try {
            SendBatch out = new SendBatch(16, 1000);
            RecvBatch in = new RecvBatch(16, 1000);
            int seq = 0;
            boolean shortSeen = false;
            int sentTotal = 0;
            for (int round = 0; round < 10_000; round++) {
                for (int i = 0; i < 16; i++) {
                    out.buffer().putInt(out.offset(i), seq + i);
                    out.length(i, 1000);
                }
                int from = 0;
                int sent = out.send(sv[0], 16);
                assertTrue(sent >= 0, "sendmmsg: " + sent);
                if (sent < 16) {
                    shortSeen = true;
                    from = sent;
                    sentTotal += sent;
                    assertEquals(0, out.send(sv[0], from, 16 - from), "still full: EAGAIN reads as 0");
                    int got = 0; // drain everything, checking the order, then send the rest
                    int expect = 0;
                    while ((got = in.receive(sv[1])) > 0) {
                        for (int i = 0; i < got; i++) {
                            assertEquals(expect++, in.buffer().getInt(in.offset(i)));
                        }
                    }
                    assertEquals(sentTotal, expect);
                    assertEquals(16 - from, out.send(sv[0], from, 16 - from));
                    in.receive(sv[1]);
                    break;
                }
                sentTotal += sent;
                seq += 16;
            }
            assertTrue(shortSeen, "the socket filled up");
            Native.close(sv[1]);
            sv[1] = -1;
            assertEquals(-32, out.send(sv[0], 1), "EPIPE once the peer is gone");
        } finally {
            Native.close(sv[0]);
            if (sv[1] >= 0) {
                Native.close(sv[1]);
            }
        }
    }

    @Test
    void aBadFdIsANegativeErrnoAndSendingAllocatesNothing() throws Exception {
        SendBatch out = new SendBatch(4, 64);
        out.length(0, 10);
        assertEquals(-9, out.send(1 << 20, 1)); // EBADF
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
        try {
            RecvBatch in = new RecvBatch(4, 64);
            for (int i = 0; i < 4; i++) {
                out.length(i, 64);
            }
            com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
            long tid = Thread.currentThread().getId();
            for (int warm = 0; warm < 2; warm++) {
                long b = mx.getThreadAllocatedBytes(tid);
                for (int r = 0; r < 20_000; r++) {
                    assertEquals(4, out.send(sv[0], 4));
                    assertEquals(4, in.receive(sv[1]));
                }
                long allocated = mx.getThreadAllocatedBytes(tid) - b;
                if (warm == 1) {
                    assertTrue(allocated < 4096, allocated + " bytes allocated by 20,000 sends");
                }
            }
        } finally {
            Native.close(sv[0]);
            Native.close(sv[1]);
        }
    }
}
