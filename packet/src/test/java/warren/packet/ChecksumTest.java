package warren.packet;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** The 8-bytes-at-a-time sum folds exactly like the byte-wise one, at any offset, length and byte order. */
class ChecksumTest {

    @Test
    void wordSumEqualsTheBytewiseSumOnRandomData() {
        Random rnd = new Random(1071);
        ByteBuffer[] buffers = {ByteBuffer.allocate(70_000), ByteBuffer.allocateDirect(70_000),
            ByteBuffer.allocate(70_000).order(ByteOrder.LITTLE_ENDIAN),
            ByteBuffer.allocateDirect(70_000).order(ByteOrder.LITTLE_ENDIAN)};
        byte[] data = new byte[70_000];
        for (int round = 0; round < 4_000; round++) {
            rnd.nextBytes(data);
            if (round % 7 == 0) {
                java.util.Arrays.fill(data, (byte) (round % 14 == 0 ? 0 : 0xFF)); // all zeros, all ones
            }
            int off = rnd.nextInt(64);
            int len = round % 10 == 0 ? rnd.nextInt(70_000 - off) : rnd.nextInt(200);
            for (ByteBuffer b : buffers) {
                b.put(0, data);
                assertEquals(Checksum.fold(Checksum.sumBytewise(b, off, len)), Checksum.fold(Checksum.sum(b, off, len)),
                        "off " + off + " len " + len + " " + b);
            }
        }
    }

    @Test
    void sumsAddUpAcrossPieces() {
        Random rnd = new Random(3);
        ByteBuffer b = ByteBuffer.allocateDirect(4096);
        for (int i = 0; i < 4096; i++) {
            b.put(i, (byte) rnd.nextInt());
        }
        for (int cut = 0; cut <= 4096; cut += 2) {
            long parts = Checksum.sum(b, 0, cut) + Checksum.sum(b, cut, 4096 - cut);
            assertEquals(Checksum.fold(Checksum.sumBytewise(b, 0, 4096)), Checksum.fold(parts));
        }
    }

    @Test
    void sixtyFourKibIsFast() {
        ByteBuffer b = ByteBuffer.allocateDirect(65536);
        for (int i = 0; i < 65536; i++) {
            b.put(i, (byte) i);
        }
        long sink = 0;
        for (int warm = 0; warm < 2_000; warm++) {
            sink += Checksum.sum(b, 0, 65536) + Checksum.sumBytewise(b, 0, 65536);
        }
        long t0 = System.nanoTime();
        for (int i = 0; i < 2_000; i++) {
            sink += Checksum.sum(b, 1, 65535);
        }
        long t1 = System.nanoTime();
        for (int i = 0; i < 2_000; i++) {
            sink += Checksum.sumBytewise(b, 1, 65535);
        }
        long t2 = System.nanoTime();
        double fast = (t1 - t0) / 2_000.0 / 1000;
        double slow = (t2 - t1) / 2_000.0 / 1000;
        System.out.printf("Checksum.sum of 64 KiB: %.1f us (byte-wise %.1f us, %.1fx)%n", fast, slow, slow / fast);
        assertTrue(sink != 42);
    }
}
