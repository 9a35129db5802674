package warren.daemon.testing.livefuzz;

import static org.junit.jupiter.api.Assertions.assertNotNull;

import java.io.ByteArrayOutputStream;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * The live fuzzer's WRONG_LENGTH mutation walks a request's bytes as protobuf fields, down into
 * length-delimited ones, whose content may be random bytes (metadata). There a length can be a
 * 10-byte varint that is negative as a long: the walk took it, went to a negative offset and the
 * fuzzing thread died with ArrayIndexOutOfBoundsException (CI, stop 27: "a fuzzing thread failed";
 * seed 5230965129365923859 at 50,000 messages hit it every time). Such a length ends the walk.
 */
class MessagesWrongLengthTest {
    @Test
    void aNegativeLengthInsideRandomBytesEndsTheWalk() {
        for (long negative : new long[] {-1L, Long.MIN_VALUE, 0x8000000080000000L, 0x80000000_89C3B154L}) {
            ByteArrayOutputStream inner = new ByteArrayOutputStream();
            inner.write(0x0A); // field 1, length-delimited
            writeVarint(inner, negative); // its length: 10 bytes, negative as a long
            inner.write(7);
            ByteArrayOutputStream outer = new ByteArrayOutputStream();
            outer.write(0x12); // field 2 (metadata-like bytes), length-delimited
            writeVarint(outer, inner.size());
            outer.writeBytes(inner.toByteArray());
            byte[] bytes = outer.toByteArray();
            for (int seed = 0; seed < 64; seed++) {
                assertNotNull(Messages.wrongLength(new SplittableRandom(seed), bytes));
            }
        }
    }

    private static void writeVarint(ByteArrayOutputStream out, long v) {
        while ((v & ~0x7FL) != 0) {
            out.write((int) ((v & 0x7F) | 0x80));
            v >>>= 7;
        }
        out.write((int) v);
    }
}
