package warren.fdpass;

import java.io.IOException;

/** A typed failure of fd passing; {@link #reason()} says which rule was broken. */
public class FdPassException extends IOException {
    public enum Reason {
        /** more than SCM_MAX_FD fds for one message */
        TOO_MANY_FDS,
        /** MSG_TRUNC or MSG_CTRUNC: bytes or fds were cut; whatever arrived was closed */
        TRUNCATED,
        /**
         * MSG_CTRUNC although the control buffer had room for SCM_MAX_FD fds: the kernel could not
         * install them in the receiver (out of fds, EMFILE/ENFILE); {@link #payload()} holds the
         * message's bytes
         */
        FDS_NOT_INSTALLED,
        /** an fd of the wrong kind */
        BAD_FD_TYPE,
        /** a memfd payload that is not fully sealed, or not a memfd */
        UNSEALED_MEMFD,
        /** a payload larger than allowed */
        TOO_LARGE,
        /** a batch transfer broke its numbering or counts, or the peer refused it */
        BATCH_FAILED,
        /** the peer closed the connection */
        CLOSED,
        /** a blocking operation ran past its deadline */
        TIMEOUT,
        /** a zero-length message (invalid in warren's protocols) */
        EMPTY_MESSAGE
    }

    private final Reason reason;
    private final byte[] payload;

    public FdPassException(Reason reason, String message) {
        this(reason, message, null);
    }

    /** With the bytes of the message that failed (to answer it by id). */
    public FdPassException(Reason reason, String message, byte[] payload) {
        super(message);
        this.reason = reason;
        this.payload = payload;
    }

    /** The message's bytes when they arrived whole, else null. */
    public byte[] payload() {
        return payload;
    }

    public Reason reason() {
        return reason;
    }
}
