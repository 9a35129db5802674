package warren.fdpass.codec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.code_intelligence.jazzer.junit.FuzzTest;
import com.google.protobuf.ByteString;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Message;
import java.io.ByteArrayOutputStream;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import warren.control.v1.Downgrade;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.control.v1.Spliced;
import warren.control.v1.Status;
import warren.control.v1.Upgrade;
import warren.fdpass.Fd;
import warren.fdpass.Memfd;
import warren.fdpass.Received;
import warren.fdpass.ReceivedForTest;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * Fuzz target for {@link ControlCodec}'s decoding: an envelope's bytes with a synthetic fd table.
 * Input layout (short input: the rest is zeros / empty):
 * <pre>
 *  0     bit 0 decode a Response (else a Request), bit 1 Limits.DEFAULT (else NONE)
 *  1     fds attached (mod 6)
 *  per fd: 1 byte kind (mod 4: 0 eventfd, 1 a socket, 2 a sealed memfd, 3 an unsealed memfd);
 *          a memfd then 2 bytes of length (big-endian) and that many bytes of content
 *  rest  the message's bytes
 * </pre>
 * Invariants: decoding ends in a {@link Decoded} or a {@link ProtocolException} (nothing else);
 * after a ProtocolException every attached fd is closed; a Decoded has a body that is not spilled,
 * metadata within the limits, every attached fd named by exactly one fd field except a spill's
 * memfd (closed), and re-encodes with the fds it named; after the handler takes and closes those,
 * nothing of the message is left open. {@code ./warren fuzz control-codec} fuzzes it.
 */
class ControlCodecFuzzTest {
    private static final int EVENTFD = 0;
    private static final int SOCKET = 1;
    private static final int SEALED = 2;
    private static final int UNSEALED = 3;

    @FuzzTest
    void decode(byte[] in) throws Exception {
        Input input = new Input(in);
        boolean response = (input.u8() & 1) != 0;
        boolean defaults = (input.last & 2) != 0;
        ControlCodec.Limits limits = defaults ? ControlCodec.Limits.DEFAULT : ControlCodec.Limits.NONE;
        int n = input.u8() % 6;
        List<Fd> fds = new ArrayList<>(n);
        try {
            for (int i = 0; i < n; i++) {
                fds.add(fd(input.u8() % 4, input));
            }
            byte[] message = input.rest();
            Received r = ReceivedForTest.of(message, fds);
            Decoded<? extends Message> d;
            try {
                d = response ? ControlCodec.decodeResponse(r) : ControlCodec.decodeRequest(r, limits);
            } catch (ProtocolException e) {
                assertNotNull(e.code());
                assertNotEquals(Error.Code.UNRECOGNIZED, e.code());
                for (Fd f : fds) {
                    assertClosed(f, "after " + e.code() + " (" + e.getMessage() + ")");
                }
                return;
            }
            try (d) {
                checkDecoded(d, fds, response, response ? ControlCodec.Limits.NONE : limits);
            }
            for (Fd f : fds) {
                assertClosed(f, "after the handler closed what it took and the message");
            }
        } finally {
            Fd.closeAll(fds);
        }
    }

    private static void checkDecoded(Decoded<? extends Message> d, List<Fd> fds, boolean response,
            ControlCodec.Limits limits) throws Exception {
        Message m = d.message();
        ByteString metadata;
        if (response) {
            Response p = (Response) m;
            assertFalse(p.getBodyCase() == Response.BodyCase.BODY_NOT_SET || p.getBodyCase() == Response.BodyCase.SPILLED,
                    "decoded a Response with body " + p.getBodyCase());
            metadata = p.getMetadata();
        } else {
            Request q = (Request) m;
            assertFalse(q.getBodyCase() == Request.BodyCase.BODY_NOT_SET || q.getBodyCase() == Request.BodyCase.SPILLED,
                    "decoded a Request with body " + q.getBodyCase());
            metadata = q.getMetadata();
        }
        assertTrue(metadata.size() <= limits.maxMetadataBytes());
        assertEquals(fds.size(), d.fdCount());
        List<FdFields.Ref> refs = FdFields.collect(m);
        boolean[] named = new boolean[fds.size()];
        List<Fd> taken = new ArrayList<>();
        for (FdFields.Ref ref : refs) {
            assertTrue(ref.index() < fds.size(), ref.path() + " = " + ref.index() + " of " + fds.size());
            assertFalse(named[(int) ref.index()], ref.path() + " names an fd twice");
            named[(int) ref.index()] = true;
        }
        for (int i = 0; i < fds.size(); i++) {
            if (!named[i]) { // only a spill's memfd, read and closed by the codec
                assertClosed(fds.get(i), "fd " + i + " named by no field");
            }
        }
        try {
            for (FdFields.Ref ref : refs) {
                Fd f = d.take((int) ref.index());
                assertEquals(fds.get((int) ref.index()).number(), f.number());
                taken.add(f);
            }
            List<Fd> inOrder = new ArrayList<>(fds.size());
            for (int i = 0; i < fds.size(); i++) {
                if (named[i]) {
                    inOrder.add(taken.get(indexOf(refs, i)));
                }
            }
            if (inOrder.size() == fds.size()) { // not spilled: it encodes again with the same fds
                try (Encoded e = ControlCodec.encode(m, inOrder, ControlCodec.INLINE_LIMIT, !response)) {
                    if (e.spill() == null) {
                        assertEquals(m, response ? Response.parseFrom(e.bytes()) : Request.parseFrom(e.bytes()));
                    }
                    assertEquals(inOrder, e.fds().subList(0, inOrder.size()));
                }
            }
        } finally {
            Fd.closeAll(taken);
        }
    }

    private static int indexOf(List<FdFields.Ref> refs, int fd) {
        for (int i = 0; i < refs.size(); i++) {
            if (refs.get(i).index() == fd) {
                return i;
            }
        }
        throw new AssertionError("fd " + fd + " not named");
    }

    private static void assertClosed(Fd f, String when) {
        assertFalse(f.isOpen(), () -> f + " still open " + when);
        try {
            Native.fstat(f.number());
            fail(f + " is closed in its handle but the fd number is open " + when + " (leaked or moved)");
        } catch (NativeIoException expected) {
            // EBADF
        }
    }

    private static Fd fd(int kind, Input input) throws NativeIoException {
        switch (kind) {
            case EVENTFD:
                return Fd.adopt(Native.eventfd(0, Native.EFD_CLOEXEC));
            case SOCKET: {
                int[] p = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                Native.close(p[1]);
                return Fd.adopt(p[0]);
            }
            default: {
                byte[] content = input.bytes(input.u16());
                return kind == SEALED ? Memfd.createSealed("fuzz", content) : Memfd.createUnsealed("fuzz", content);
            }
        }
    }

    /** Reads the input's fields; past its end every field is 0 or empty. */
    private static final class Input {
        private final byte[] in;
        private int at;
        int last;

        Input(byte[] in) {
            this.in = in;
        }

        int u8() {
            last = at < in.length ? in[at++] & 0xFF : 0;
            return last;
        }

        int u16() {
            return (u8() << 8) | u8();
        }

        byte[] bytes(int n) {
            int k = Math.min(n, in.length - at);
            byte[] out = java.util.Arrays.copyOfRange(in, at, at + k);
            at += k;
            return out;
        }

        byte[] rest() {
            return bytes(in.length - at);
        }
    }

    // ---- seeds: envelopes from the real encoder, with their fd tables

    /** A seed: the flags, then per fd its kind (and a memfd's content), then the message. */
    static byte[] seed(boolean response, boolean defaults, int[] kinds, byte[][] contents, byte[] message) {
        ByteArrayOutputStream o = new ByteArrayOutputStream();
        o.write((response ? 1 : 0) | (defaults ? 2 : 0));
        o.write(kinds.length);
        for (int i = 0; i < kinds.length; i++) {
            o.write(kinds[i]);
            if (kinds[i] == SEALED || kinds[i] == UNSEALED) {
                o.write(contents[i].length >>> 8);
                o.write(contents[i].length);
                o.writeBytes(contents[i]);
            }
        }
        o.writeBytes(message);
        return o.toByteArray();
    }

    static Map<String, byte[]> seeds() throws Exception {
        Map<String, byte[]> s = new LinkedHashMap<>();
        Request splice = Request.newBuilder().setId(7).setMetadata(ByteString.copyFromUtf8("tenant-a"))
                .setSplice(Splice.newBuilder().setFdA(1).setFdB(0)).build();
        s.put("splice", seed(false, true, new int[] {SOCKET, SOCKET}, new byte[2][], splice.toByteArray()));
        s.put("status", seed(false, true, new int[0], new byte[0][],
                Request.newBuilder().setId(1).setStatus(Status.getDefaultInstance()).build().toByteArray()));
        s.put("upgrade", seed(false, false, new int[] {SOCKET}, new byte[1][],
                Request.newBuilder().setId(2).setUpgrade(Upgrade.newBuilder().setFdFlow(0).setMtu(1500)).build()
                        .toByteArray()));
        s.put("downgrade-duplicate-fd", seed(false, false, new int[] {SOCKET, EVENTFD}, new byte[2][],
                Request.newBuilder().setId(3).setDowngrade(Downgrade.newBuilder().setFdSocket(1).setFdFlow(1)).build()
                        .toByteArray()));
        s.put("response-spliced", seed(true, false, new int[] {SOCKET, SOCKET}, new byte[2][],
                Response.newBuilder().setId(7).setSpliced(Spliced.newBuilder().setFdA(0).setFdB(1)).build()
                        .toByteArray()));
        // a spilled Splice, as encode makes it for an envelope past the inline limit (here: limit 8)
        List<Fd> two = new ArrayList<>();
        try {
            for (int i = 0; i < 2; i++) {
                two.add(Fd.adopt(Native.eventfd(0, Native.EFD_CLOEXEC)));
            }
            try (Encoded e = ControlCodec.encode(splice, two, 8, true)) {
                byte[] inner = Memfd.readSealed(e.spill(), 1 << 20);
                s.put("spilled-splice", seed(false, true, new int[] {SOCKET, SOCKET, SEALED},
                        new byte[][] {null, null, inner}, e.bytes()));
                s.put("spilled-unsealed", seed(false, true, new int[] {SOCKET, SOCKET, UNSEALED},
                        new byte[][] {null, null, inner}, e.bytes()));
            }
        } finally {
            Fd.closeAll(two);
        }
        return s;
    }

    @Test
    void seedsAreInTheCorpus() throws Exception {
        Map<String, byte[]> s = seeds();
        for (byte[] in : s.values()) {
            decode(in);
        }
        warren.fdpass.FuzzSupport.writeOrCheck(ControlCodecFuzzTest.class, "decode", s);
    }

    static {
        try {
            Request.parseFrom(new byte[0]); // load protobuf before the first timed input
        } catch (InvalidProtocolBufferException e) {
            throw new ExceptionInInitializerError(e);
        }
    }
}
