package warren.fdpass;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import warren.fdpass.libc.Native;

@Timeout(value = 120, unit = TimeUnit.SECONDS)
class MemfdAndBatchTest {

    @Test
    void aSixteenMebibytePayloadRoundTripsInASealedMemfd() throws Exception {
        byte[] payload = new byte[16 << 20];
        new Random(42).nextBytes(payload);
        int before = FdCount.now();
        SeqpacketSocket[] p = SeqpacketSocket.pair();
        try (SeqpacketSocket a = p[0]; SeqpacketSocket b = p[1]) {
            try (Fd memfd = Memfd.createSealed("test", payload)) {
                // writing to a sealed memfd must fail
                assertThrows(Exception.class, () -> Native.ftruncate(memfd.get(), 1));
                assertTrue(a.send(new byte[] {1}, List.of(memfd)));
            }
            try (Received r = b.receiveBlocking(5000); Fd got = r.take(0)) {
                assertArrayEquals(payload, Memfd.readSealed(got, 32 << 20));
                FdPassException big = assertThrows(FdPassException.class, () -> Memfd.readSealed(got, 1 << 20));
                assertEquals(FdPassException.Reason.TOO_LARGE, big.reason());
            }
        }
        assertEquals(before, FdCount.now());
    }

    /**
     * Payloads around the one-pread fast path's edge (a short read of a sealed memfd is its end;
     * 4,096 bytes and more take the fstat path) come back whole, and maxBytes holds on both paths.
     */
    @Test
    void smallAndEdgeSizedPayloadsReadBackWhole() throws Exception {
        int before = FdCount.now();
        for (int size : new int[] {0, 1, 300, 4095, 4096, 4097, 70_000}) {
            byte[] payload = new byte[size];
            for (int i = 0; i < size; i++) {
                payload[i] = (byte) (i * 31 + size);
            }
            try (Fd m = Memfd.createSealed("edge", payload)) {
                assertArrayEquals(payload, Memfd.readSealed(m, 1 << 20), size + " bytes");
                assertArrayEquals(payload, Memfd.readSealed(m, size), size + " bytes, maxBytes exactly its size");
                if (size > 0) {
                    FdPassException big = assertThrows(FdPassException.class, () -> Memfd.readSealed(m, size - 1));
                    assertEquals(FdPassException.Reason.TOO_LARGE, big.reason(), size + " bytes over maxBytes");
                }
            }
        }
        assertEquals(before, FdCount.now());
    }

    @Test
    void anUnsealedMemfdOrANonMemfdIsRefused() throws Exception {
        try (Fd unsealed = Memfd.createUnsealed("test", new byte[] {1, 2, 3})) {
            FdPassException e = assertThrows(FdPassException.class, () -> Memfd.readSealed(unsealed, 100));
            assertEquals(FdPassException.Reason.UNSEALED_MEMFD, e.reason());
            // partly sealed is still refused
            Native.fcntl(unsealed.get(), Native.F_ADD_SEALS, Native.F_SEAL_GROW | Native.F_SEAL_SHRINK);
            e = assertThrows(FdPassException.class, () -> Memfd.readSealed(unsealed, 100));
            assertEquals(FdPassException.Reason.UNSEALED_MEMFD, e.reason());
        }
        Fd[] s = TestSockets.streamPair();
        try (Fd x = s[0]; Fd y = s[1]) {
            FdPassException e = assertThrows(FdPassException.class, () -> Memfd.readSealed(x, 100));
            assertEquals(FdPassException.Reason.UNSEALED_MEMFD, e.reason());
        }
    }

    @Test
    void tenThousandFdsArriveThroughTheBatchApi() throws Exception {
        // 100 distinct sockets, each sent 100 times: the receiver gets 10,000 distinct fds
        // (the fd limit here is 20,000, so the sender cannot also hold 10,000 of its own).
        int before = FdCount.now();
        List<Fd[]> pairs = TestSockets.streamPairs(100);
        List<Fd> send = new ArrayList<>(10_000);
        for (int i = 0; i < 10_000; i++) {
            send.add(pairs.get(i % 100)[0]);
        }
        SeqpacketSocket[] p = SeqpacketSocket.pair();
        try (SeqpacketSocket a = p[0]; SeqpacketSocket b = p[1]) {
            CompletableFuture<List<Fd>> got = CompletableFuture.supplyAsync(() -> {
                try {
                    return FdBatch.receive(b, 30_000);
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            FdBatch.send(a, 77, send, 30_000);
            List<Fd> fds = got.get(60, TimeUnit.SECONDS);
            assertEquals(10_000, fds.size());
            assertEquals(10_000, fds.stream().mapToInt(Fd::get).distinct().count());
            // fd 9,999 is a duplicate of pair 99's sent end: a byte written there reaches its peer
            TestSockets.writeAll(fds.get(9_999), new byte[] {9});
            assertArrayEquals(new byte[] {9}, TestSockets.readExactly(pairs.get(99)[1], 1));
            Fd.closeAll(fds);
        } finally {
            pairs.forEach(pp -> Fd.closeAll(List.of(pp)));
        }
        assertEquals(before, FdCount.now());
    }

    @Test
    void aBatchThatBreaksItsNumberingIsRefusedAndLeaksNothing() throws Exception {
        int before = FdCount.now();
        Fd[] s = TestSockets.streamPair();
        SeqpacketSocket[] p = SeqpacketSocket.pair();
        try (SeqpacketSocket a = p[0]; SeqpacketSocket b = p[1]) {
            // a sender that claims 300 fds (2 batches) but sends batch 0 with 1 fd
            a.sendBlocking(warren.fdpass.v1.BatchFrame.newBuilder().setTransferId(5).setSeq(0).setBatchCount(2)
                    .setTotalFds(300).setFdsInBatch(253).build().toByteArray(), List.of(s[0]), 5000);
            FdPassException e = assertThrows(FdPassException.class, () -> FdBatch.receive(b, 5000));
            assertEquals(FdPassException.Reason.BATCH_FAILED, e.reason());
            try (Received ack = a.receiveBlocking(5000)) {
                assertTrue(!warren.fdpass.v1.BatchAck.parseFrom(ack.data()).getOk(), "the sender is told");
            }
        } finally {
            Fd.closeAll(List.of(s));
        }
        assertEquals(before, FdCount.now());
    }
}
