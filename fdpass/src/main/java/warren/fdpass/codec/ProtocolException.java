package warren.fdpass.codec;

import com.google.protobuf.ByteString;
import warren.control.v1.Error;

/**
 * A message that broke the control contract. Carries the machine code for the {@code Error}
 * answer and, when the envelope could be read that far, the request id and metadata to echo.
 * By the time it is thrown every fd that arrived with the message has been closed.
 */
public final class ProtocolException extends Exception {
    private final Error.Code code;
    private final long id;
    private final ByteString metadata;
    private final int errno;

    public ProtocolException(Error.Code code, String message, long id, ByteString metadata) {
        this(code, message, id, metadata, 0);
    }

    public ProtocolException(Error.Code code, String message, long id, ByteString metadata, int errno) {
        super(message, null, false, false);
        this.code = code;
        this.id = id;
        this.metadata = metadata == null ? ByteString.EMPTY : metadata;
        this.errno = errno;
    }

    public Error.Code code() {
        return code;
    }

    public long id() {
        return id;
    }

    public ByteString metadata() {
        return metadata;
    }

    public int errno() {
        return errno;
    }

    /** The {@code Error} body for the answer. */
    public Error toError() {
        return Error.newBuilder().setCode(code).setMessage(getMessage()).setErrno(errno).build();
    }
}
