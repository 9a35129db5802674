package warren.fdpass.codec;

import com.google.protobuf.ByteString;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Message;
import com.google.protobuf.Parser;
import java.util.ArrayList;
import java.util.List;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Spilled;
import warren.fdpass.Fd;
import warren.fdpass.FdPassException;
import warren.fdpass.Memfd;
import warren.fdpass.Received;
import warren.fdpass.SeqpacketSocket;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * Encodes and decodes {@code warren.control.v1} envelopes and pairs their fd fields with the
 * attached fds (see control.proto). Decoding validates before anything is handed out:
 * <ol>
 *   <li>bytes that do not parse: MALFORMED;</li>
 *   <li>{@code spilled}: the memfd at {@code fd_memfd} must be fully sealed (UNSEALED_MEMFD) and
 *       hold a non-spilled envelope, whose fd fields index the same attached fds;</li>
 *   <li>an fd field past the attached fds: BAD_FD_INDEX; two fields naming one fd: DUPLICATE_FD;
 *       an attached fd named by no field: UNREFERENCED_FD;</li>
 *   <li>no body (or one this version does not know): UNKNOWN_REQUEST.</li>
 * </ol>
 * A request is also held to the receiver's {@link Limits}: an envelope larger than
 * {@code maxRequestBytes} (a spilled one judged by its memfd's size from fstat(2), before a byte of
 * it is read) or metadata larger than {@code maxMetadataBytes} is INVALID_ARGUMENT (the request is
 * wrong as sent; retrying cannot help), and such metadata is not echoed.
 * On any error every fd of the message is closed before {@link ProtocolException} is thrown.
 */
public final class ControlCodec {
    /** Inline envelope limit; larger ones are spilled to a sealed memfd. */
    public static final int INLINE_LIMIT = SeqpacketSocket.DEFAULT_MAX_MESSAGE;
    /** Largest spilled envelope a receiver accepts unless its {@link Limits} say less (a client reading answers). */
    public static final long MAX_SPILLED = 256L << 20;

    /**
     * What a receiver accepts: the envelope's size (inline, or the spilled memfd's) and its
     * metadata's. The control server's are {@code control.max_request_bytes} and
     * {@code control.max_metadata_bytes}, which its error messages name.
     */
    public record Limits(long maxRequestBytes, long maxMetadataBytes) {
        public static final Limits DEFAULT = new Limits(1L << 20, 64L << 10);
        public static final Limits NONE = new Limits(MAX_SPILLED, Long.MAX_VALUE);
    }

    private ControlCodec() {}

    /** A request within {@link Limits#NONE} (tests, tools); a daemon passes its own limits. */
    public static Decoded<Request> decodeRequest(Received r) throws ProtocolException {
        return decode(r, Request.parser(), true, Limits.NONE);
    }

    public static Decoded<Request> decodeRequest(Received r, Limits limits) throws ProtocolException {
        return decode(r, Request.parser(), true, limits);
    }

    public static Decoded<Response> decodeResponse(Received r) throws ProtocolException {
        return decode(r, Response.parser(), false, Limits.NONE);
    }

    public static Encoded encodeRequest(Request req, List<Fd> fds) throws NativeIoException, FdPassException {
        return encode(req, fds, INLINE_LIMIT, true);
    }

    public static Encoded encodeResponse(Response resp, List<Fd> fds) throws NativeIoException, FdPassException {
        return encode(resp, fds, INLINE_LIMIT, false);
    }

    /** Encodes with an explicit inline limit (tests). */
    public static Encoded encode(Message envelope, List<Fd> fds, int inlineLimit, boolean request)
            throws NativeIoException, FdPassException {
        List<Fd> attached = fds == null ? List.of() : fds;
        checkRefs(FdFields.collect(envelope), attached.size(), -1);
        byte[] bytes = envelope.toByteArray();
        if (bytes.length <= inlineLimit && bytes.length > 0) {
            return new Encoded(bytes, attached, null);
        }
        if (attached.size() + 1 > Native.SCM_MAX_FD) {
            throw new FdPassException(FdPassException.Reason.TOO_MANY_FDS,
                    "a spilled envelope needs one fd more than the " + attached.size() + " attached");
        }
        Fd memfd = Memfd.createSealed("warren-envelope", bytes);
        Spilled spilled = Spilled.newBuilder().setFdMemfd(attached.size()).setLength(bytes.length).build();
        byte[] outer = request
                ? Request.newBuilder().setId(idOf(envelope)).setSpilled(spilled).build().toByteArray()
                : Response.newBuilder().setId(idOf(envelope)).setSpilled(spilled).build().toByteArray();
        List<Fd> withMemfd = new ArrayList<>(attached);
        withMemfd.add(memfd);
        return new Encoded(outer, withMemfd, memfd);
    }

    private static long idOf(Message m) {
        return m instanceof Request ? ((Request) m).getId() : ((Response) m).getId();
    }

    private static void checkRefs(List<FdFields.Ref> refs, int attached, int preUsed) {
        boolean[] used = new boolean[attached];
        if (preUsed >= 0) {
            used[preUsed] = true;
        }
        for (FdFields.Ref ref : refs) {
            if (ref.index() >= attached || used[(int) ref.index()]) {
                throw new IllegalArgumentException("envelope field " + ref.path() + " = " + ref.index()
                        + " does not name a distinct fd of the " + attached + " attached");
            }
            used[(int) ref.index()] = true;
        }
        for (int i = 0; i < attached; i++) {
            if (!used[i]) {
                throw new IllegalArgumentException("attached fd " + i + " is named by no field");
            }
        }
    }

    @SuppressWarnings("unchecked")
    private static <T extends Message> Decoded<T> decode(Received r, Parser<T> parser, boolean request, Limits limits)
            throws ProtocolException {
        long id = 0;
        ByteString metadata = ByteString.EMPTY;
        try {
            T outer;
            try {
                outer = parser.parseFrom(r.data());
            } catch (InvalidProtocolBufferException e) {
                throw new ProtocolException(Error.Code.MALFORMED,
                        "not a valid " + (request ? "Request" : "Response") + " envelope (" + r.data().length
                                + " bytes): " + e.getMessage(), 0, null);
            }
            id = idOf(outer);
            if (r.data().length > limits.maxRequestBytes()) {
                throw new ProtocolException(Error.Code.INVALID_ARGUMENT, tooLarge("request", r.data().length,
                        limits.maxRequestBytes(), "control.max_request_bytes"), id, ByteString.EMPTY);
            }
            checkMetadata(outer, limits, id);
            metadata = metadataOf(outer);
            T envelope = outer;
            int memfdIndex = -1;
            Spilled spilled = spilledOf(outer);
            if (spilled != null) {
                memfdIndex = spilled.getFdMemfd();
                if (Integer.toUnsignedLong(memfdIndex) >= r.fdCount()) {
                    throw new ProtocolException(Error.Code.BAD_FD_INDEX, "spilled.fd_memfd = "
                            + Integer.toUnsignedLong(memfdIndex) + " but " + r.fdCount() + " fds attached", id, metadata);
                }
                byte[] inner;
                long max = Math.min(MAX_SPILLED, limits.maxRequestBytes());
                try {
                    inner = Memfd.readSealed(r.fds().get(memfdIndex), max); // refuses from fstat's size, unread
                } catch (FdPassException e) {
                    if (e.reason() == FdPassException.Reason.TOO_LARGE) {
                        throw new ProtocolException(Error.Code.INVALID_ARGUMENT, tooLarge("spilled "
                                + (request ? "request" : "response"), sizeOf(r.fds().get(memfdIndex)), max, request ? "control.max_request_bytes"
                                : null), id, metadata);
                    }
                    throw new ProtocolException(Error.Code.UNSEALED_MEMFD, e.getMessage(), id, metadata);
                } catch (NativeIoException e) {
                    throw new ProtocolException(Error.Code.MALFORMED, "cannot read the spilled envelope: "
                            + e.getMessage(), id, metadata, e.errno());
                }
                try {
                    envelope = parser.parseFrom(inner);
                } catch (InvalidProtocolBufferException e) {
                    throw new ProtocolException(Error.Code.MALFORMED, "spilled envelope does not parse: "
                            + e.getMessage(), id, metadata);
                }
                id = idOf(envelope);
                checkMetadata(envelope, limits, id);
                metadata = metadataOf(envelope);
                if (spilledOf(envelope) != null) {
                    throw new ProtocolException(Error.Code.MALFORMED, "a spilled envelope may not spill again",
                            id, metadata);
                }
                r.fds().get(memfdIndex).close(); // read: not needed any more; counted as referenced
            }
            validateRefs(FdFields.collect(envelope), r.fdCount(), memfdIndex, id, metadata);
            if (!hasBody(envelope)) {
                throw new ProtocolException(Error.Code.UNKNOWN_REQUEST,
                        "no " + (request ? "request" : "response") + " body this version knows (unknown or empty)",
                        id, metadata);
            }
            return new Decoded<>(envelope, r);
        } catch (ProtocolException | RuntimeException e) {
            r.close();
            throw e;
        }
    }

    private static long sizeOf(Fd fd) {
        try {
            return Native.fstat(fd.get())[1];
        } catch (NativeIoException e) {
            return -1;
        }
    }

    private static String tooLarge(String what, long size, long max, String key) {
        return "a " + what + " of " + size + " bytes; at most " + max + " bytes are accepted"
                + (key == null ? "" : " (" + key + ")") + ": send less (large metadata belongs elsewhere)";
    }

    private static void checkMetadata(Message m, Limits limits, long id) throws ProtocolException {
        int size = metadataOf(m).size();
        if (size > limits.maxMetadataBytes()) {
            throw new ProtocolException(Error.Code.INVALID_ARGUMENT, "metadata of " + size + " bytes; at most "
                    + limits.maxMetadataBytes() + " bytes are accepted (control.max_metadata_bytes); not echoed",
                    id, ByteString.EMPTY);
        }
    }

    private static void validateRefs(List<FdFields.Ref> refs, int attached, int memfdIndex, long id,
            ByteString metadata) throws ProtocolException {
        boolean[] used = new boolean[attached];
        if (memfdIndex >= 0) {
            used[memfdIndex] = true;
        }
        for (FdFields.Ref ref : refs) {
            if (ref.index() >= attached) {
                throw new ProtocolException(Error.Code.BAD_FD_INDEX, ref.path() + " = " + ref.index()
                        + " but " + attached + " fds attached", id, metadata);
            }
            if (used[(int) ref.index()]) {
                throw new ProtocolException(Error.Code.DUPLICATE_FD, ref.path() + " = " + ref.index()
                        + " names an fd that another field already names", id, metadata);
            }
            used[(int) ref.index()] = true;
        }
        for (int i = 0; i < attached; i++) {
            if (!used[i]) {
                throw new ProtocolException(Error.Code.UNREFERENCED_FD, "attached fd " + i + " of " + attached
                        + " is named by no field", id, metadata);
            }
        }
    }

    private static ByteString metadataOf(Message m) {
        return m instanceof Request ? ((Request) m).getMetadata() : ((Response) m).getMetadata();
    }

    private static Spilled spilledOf(Message m) {
        if (m instanceof Request) {
            Request q = (Request) m;
            return q.getBodyCase() == Request.BodyCase.SPILLED ? q.getSpilled() : null;
        }
        Response p = (Response) m;
        return p.getBodyCase() == Response.BodyCase.SPILLED ? p.getSpilled() : null;
    }

    private static boolean hasBody(Message m) {
        return m instanceof Request ? ((Request) m).getBodyCase() != Request.BodyCase.BODY_NOT_SET
                : ((Response) m).getBodyCase() != Response.BodyCase.BODY_NOT_SET;
    }
}
