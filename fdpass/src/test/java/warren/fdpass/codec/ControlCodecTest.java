package warren.fdpass.codec;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.control.v1.Splice;
import warren.control.v1.Spilled;
import warren.control.v1.Status;
import warren.fdpass.Fd;
import warren.fdpass.FdCount;
import warren.fdpass.Memfd;
import warren.fdpass.Received;
import warren.fdpass.SeqpacketSocket;
import warren.fdpass.TestSockets;

class ControlCodecTest {
    private SeqpacketSocket a;
    private SeqpacketSocket b;
    private final List<Fd> mine = new ArrayList<>();
    private int before;

    @BeforeEach
    void setUp() throws Exception {
        before = FdCount.now();
        SeqpacketSocket[] p = SeqpacketSocket.pair();
        a = p[0];
        b = p[1];
    }

    @AfterEach
    void tearDown() {
        Fd.closeAll(mine);
        a.close();
        b.close();
        assertEquals(before, FdCount.now(), () -> "fd count back to where it started\n" + FdCount.dump());
    }

    private List<Fd> sockets(int n) throws Exception {
        List<Fd> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            Fd[] s = TestSockets.streamPair();
            mine.add(s[0]);
            mine.add(s[1]);
            out.add(s[0]);
        }
        return out;
    }

    private Received sendRaw(byte[] bytes, List<Fd> fds) throws Exception {
        assertTrue(a.send(bytes, fds));
        return b.receiveBlocking(5000);
    }

    private ProtocolException rejected(byte[] bytes, List<Fd> fds) throws Exception {
        Received r = sendRaw(bytes, fds);
        return assertThrows(ProtocolException.class, () -> ControlCodec.decodeRequest(r));
    }

    @Test
    void aSpliceRequestPairsItsFdFieldsWithTheAttachedFds() throws Exception {
        Request req = Request.newBuilder().setId(9).setMetadata(ByteString.copyFromUtf8("m"))
                .setSplice(Splice.newBuilder().setFdA(1).setFdB(0)).build();
        List<Fd> fds = sockets(2);
        try (Encoded enc = ControlCodec.encodeRequest(req, fds);
                Decoded<Request> d = ControlCodec.decodeRequest(sendRaw(enc.bytes(), enc.fds()))) {
            assertEquals(req, d.message());
            try (Fd fdA = d.take(d.message().getSplice().getFdA())) {
                TestSockets.writeAll(fdA, new byte[] {5});
                assertArrayEquals(new byte[] {5}, TestSockets.readExactly(mine.get(3), 1), "fd_a = index 1");
            }
        }
    }

    @Test
    void garbageIsMalformed() throws Exception {
        ProtocolException e = rejected(new byte[] {(byte) 0xff, (byte) 0xff, (byte) 0xff, 0x0f}, sockets(1));
        assertEquals(Error.Code.MALFORMED, e.code());
    }

    @Test
    void aTruncatedEnvelopeIsMalformed() throws Exception {
        byte[] whole = Request.newBuilder().setId(3).setMetadata(ByteString.copyFromUtf8("metadata"))
                .setStatus(Status.getDefaultInstance()).build().toByteArray();
        byte[] cut = java.util.Arrays.copyOf(whole, whole.length - 4);
        assertEquals(Error.Code.MALFORMED, rejected(cut, List.of()).code());
    }

    @Test
    void anUnknownBodyIsUnknownRequestAndEchoesTheId() throws Exception {
        // field 99 (varint) is no body this version knows
        byte[] bytes = {0x08, 0x2a, (byte) 0x98, 0x06, 0x01};
        ProtocolException e = rejected(bytes, List.of());
        assertEquals(Error.Code.UNKNOWN_REQUEST, e.code());
        assertEquals(42, e.id());
    }

    @Test
    void fdIndexOutOfRangeDuplicateAndUnreferenced() throws Exception {
        byte[] outOfRange = Request.newBuilder().setId(1).setSplice(Splice.newBuilder().setFdA(0).setFdB(5))
                .build().toByteArray();
        ProtocolException e = rejected(outOfRange, sockets(2));
        assertEquals(Error.Code.BAD_FD_INDEX, e.code());
        assertTrue(e.getMessage().contains("splice.fd_b = 5"), e.getMessage());

        byte[] dup = Request.newBuilder().setId(2).setSplice(Splice.newBuilder().setFdA(1).setFdB(1))
                .build().toByteArray();
        assertEquals(Error.Code.DUPLICATE_FD, rejected(dup, sockets(2)).code());

        byte[] status = Request.newBuilder().setId(3).setStatus(Status.getDefaultInstance()).build().toByteArray();
        assertEquals(Error.Code.UNREFERENCED_FD, rejected(status, sockets(1)).code());

        // a huge unsigned index is out of range, not negative
        byte[] huge = Request.newBuilder().setId(4).setSplice(Splice.newBuilder().setFdA(0).setFdB(0xFFFFFFFF))
                .build().toByteArray();
        assertEquals(Error.Code.BAD_FD_INDEX, rejected(huge, sockets(2)).code());
    }

    @Test
    void theEncoderRefusesAnEnvelopeThatDoesNotMatchItsFds() throws Exception {
        Request req = Request.newBuilder().setSplice(Splice.newBuilder().setFdA(0).setFdB(1)).build();
        assertThrows(IllegalArgumentException.class, () -> ControlCodec.encodeRequest(req, sockets(1)));
    }

    @Test
    void aLargeEnvelopeSpillsToASealedMemfdAndComesBackWhole() throws Exception {
        byte[] big = new byte[200_000];
        new Random(1).nextBytes(big);
        Request req = Request.newBuilder().setId(11).setMetadata(ByteString.copyFrom(big))
                .setSplice(Splice.newBuilder().setFdA(0).setFdB(1)).build();
        List<Fd> fds = sockets(2);
        try (Encoded enc = ControlCodec.encodeRequest(req, fds)) {
            assertNotNull(enc.spill());
            assertEquals(3, enc.fds().size());
            try (Decoded<Request> d = ControlCodec.decodeRequest(sendRaw(enc.bytes(), enc.fds()))) {
                assertEquals(req, d.message());
                d.take(0).close();
                d.take(1).close();
            }
        }
    }

    @Test
    void aSpilledEnvelopeInAnUnsealedMemfdIsRefused() throws Exception {
        byte[] inner = Request.newBuilder().setId(12).setStatus(Status.getDefaultInstance()).build().toByteArray();
        try (Fd memfd = Memfd.createUnsealed("x", inner)) {
            byte[] outer = Request.newBuilder().setId(12).setSpilled(Spilled.newBuilder().setFdMemfd(0)
                    .setLength(inner.length)).build().toByteArray();
            ProtocolException e = rejected(outer, List.of(memfd));
            assertEquals(Error.Code.UNSEALED_MEMFD, e.code());
            assertEquals(12, e.id());
        }
    }

    @Test
    void aSeededRandomLoopOfHostileEnvelopesNeverThrowsAnythingElseNorLeaks() throws Exception {
        Random rnd = new Random(20261126);
        byte[] valid = Request.newBuilder().setId(77).setMetadata(ByteString.copyFromUtf8("abc"))
                .setSplice(Splice.newBuilder().setFdA(0).setFdB(1)).build().toByteArray();
        for (int i = 0; i < 2000; i++) {
            byte[] m = valid.clone();
            int flips = 1 + rnd.nextInt(4);
            for (int f = 0; f < flips; f++) {
                m[rnd.nextInt(m.length)] = (byte) rnd.nextInt(256);
            }
            if (rnd.nextBoolean()) {
                m = java.util.Arrays.copyOf(m, 1 + rnd.nextInt(m.length));
            }
            List<Fd> fds = i % 3 == 0 ? List.of() : sockets(rnd.nextInt(3));
            Received r = sendRaw(m, fds);
            try (Decoded<Request> d = ControlCodec.decodeRequest(r)) {
                assertNotNull(d.message());
            } catch (ProtocolException expected) {
                assertNotNull(expected.code());
            }
            Fd.closeAll(mine);
            mine.clear();
        }
    }
}
