package warren.fdpass;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Test;
import warren.fdpass.libc.Native;

/** recvmmsg batching keeps message boundaries, reports EAGAIN as 0 and end of file as length 0. */
class RecvBatchTest {

    @Test
    void receivesMessagesInBatchesKeepingBoundaries() throws Exception {
        int before = FdCount.now();
        int[] sv = Native.socketpair(Native.AF_UNIX,
                Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
        try {
            RecvBatch batch = new RecvBatch(4, 256);
            assertEquals(0, batch.receive(sv[1]), "nothing queued reads as 0, not an error");
            ByteBuffer out = ByteBuffer.allocateDirect(256);
            Pointer outPtr = Pointer.wrap(Native.RUNTIME, out);
            for (int m = 0; m < 6; m++) {
                for (int k = 0; k <= m * 10; k++) {
                    out.put(k, (byte) (m + k));
                }
                assertEquals(m * 10 + 1, Native.send(sv[0], outPtr, m * 10 + 1, 0));
            }
            int seen = 0;
            for (int round = 0; round < 2; round++) {
                int got = batch.receive(sv[1]);
                assertEquals(round == 0 ? 4 : 2, got);
                for (int i = 0; i < got; i++, seen++) {
                    assertEquals(seen * 10 + 1, batch.length(i));
                    for (int k = 0; k <= seen * 10; k++) {
                        assertEquals((byte) (seen + k), batch.buffer().get(batch.offset(i) + k));
                        assertEquals((byte) (seen + k), batch.pointer(i).getByte(k));
                    }
                }
            }
            Native.shutdown(sv[0], 1);
            // at end of file recvmmsg fills slots with zero-length messages: callers stop at the first
            assertTrue(batch.receive(sv[1]) >= 1);
            assertEquals(0, batch.length(0), "end of file is a zero-length message");
        } finally {
            Native.close(sv[0]);
            Native.close(sv[1]);
        }
        assertEquals(before, FdCount.now());
    }

    @Test
    void aHeadroomPutsEachMessageThatFarIntoItsSlotAndCanChangeBetweenReceives() throws Exception {
        int[] sv = Native.socketpair(Native.AF_UNIX,
                Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
        try {
            RecvBatch batch = new RecvBatch(2, 64);
            ByteBuffer out = ByteBuffer.allocateDirect(64);
            Pointer outPtr = Pointer.wrap(Native.RUNTIME, out);
            for (int headroom : new int[] {10, 0, 10, 60}) {
                for (int m = 0; m < 2; m++) {
                    for (int k = 0; k < 64; k++) {
                        out.put(k, (byte) (headroom + m + k));
                    }
                    assertEquals(64, Native.send(sv[0], outPtr, 64, 0));
                }
                batch.buffer().put(0, new byte[128]);
                assertEquals(2, batch.receive(sv[1], headroom));
                assertEquals(headroom, batch.headroom());
                for (int i = 0; i < 2; i++) {
                    assertEquals(64 - headroom, batch.length(i), "the rest of the slot: a longer message is cut");
                    assertEquals(0, batch.buffer().get(batch.offset(i)) & (headroom > 0 ? 0xFF : 0), "headroom left alone");
                    for (int k = 0; k < 64 - headroom; k++) {
                        assertEquals((byte) (headroom + i + k), batch.buffer().get(batch.offset(i) + headroom + k));
                    }
                }
            }
        } finally {
            Native.close(sv[0]);
            Native.close(sv[1]);
        }
    }

    @Test
    void aBadFdIsANegativeErrno() {
        assertEquals(-9, new RecvBatch(2, 64).receive(1 << 20)); // EBADF
    }
}
