package warren.daemon.handoff;

import com.google.protobuf.InvalidProtocolBufferException;
import java.util.Collections;
import java.util.List;
import warren.fdpass.Fd;
import warren.fdpass.FdPassException;
import warren.fdpass.Received;
import warren.fdpass.SeqpacketSocket;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.NativeIoException;
import warren.handoff.v1.Abort;
import warren.handoff.v1.HandoffMessage;

/** Message framing shared by both sides: one HandoffMessage per SEQPACKET message. */
final class Wire {
    /** 2: pre-copy (pre_copy, pre_copied) before the offer. A sender refuses a successor speaking another. */
    static final int PROTOCOL = 2;
    /**
     * 1: builds before the pre-copy (commit a15a0ca): hello, offer, fds, ready, commit. A sender
     * still hands over to one (a rollback), with no pre-copy; a receiver always says {@link #PROTOCOL}.
     */
    static final int PROTOCOL_NO_PRE_COPY = 1;

    private Wire() {}

    static void send(SeqpacketSocket s, HandoffMessage m, List<Fd> fds, long timeoutMs) throws HandoffException {
        try {
            s.sendBlocking(m.toByteArray(), fds, timeoutMs);
        } catch (NativeIoException | FdPassException e) {
            throw failure("sending " + m.getKindCase().name().toLowerCase(java.util.Locale.ROOT), e);
        }
    }

    static void send(SeqpacketSocket s, HandoffMessage m, long timeoutMs) throws HandoffException {
        send(s, m, Collections.emptyList(), timeoutMs);
    }

    /** Best effort: the peer may already be gone. */
    static void abort(SeqpacketSocket s, String why, long timeoutMs) {
        try {
            s.sendBlocking(HandoffMessage.newBuilder().setAbort(Abort.newBuilder().setReason(why)).build()
                    .toByteArray(), Collections.emptyList(), timeoutMs);
        } catch (NativeIoException | FdPassException e) {
            // nothing to tell a peer that is gone
        }
    }

    /** The next message; fds that came with it are returned through {@code fdsOut} (or closed). */
    static HandoffMessage receive(SeqpacketSocket s, String waitingFor, long timeoutMs, List<Fd> fdsOut)
            throws HandoffException {
        Received r;
        try {
            r = s.receiveBlocking(timeoutMs);
        } catch (NativeIoException | FdPassException e) {
            throw failure("waiting for " + waitingFor, e);
        }
        try (r) {
            if (r.isEof()) {
                throw new HandoffException(HandoffException.Reason.CLOSED,
                        "the other side closed the connection while we waited for " + waitingFor);
            }
            HandoffMessage m;
            try {
                m = HandoffMessage.parseFrom(r.data());
            } catch (InvalidProtocolBufferException e) {
                throw new HandoffException(HandoffException.Reason.PROTOCOL,
                        "not a HandoffMessage while waiting for " + waitingFor + ": " + e.getMessage());
            }
            if (fdsOut != null) {
                fdsOut.addAll(r.takeAll());
            }
            return m;
        }
    }

    static HandoffException failure(String what, Exception e) {
        if (e instanceof FdPassException t && t.reason() == FdPassException.Reason.TIMEOUT) {
            return new HandoffException(HandoffException.Reason.TIMEOUT, "timed out " + what, e);
        }
        if (e instanceof FdPassException f && f.reason() == FdPassException.Reason.CLOSED) {
            return new HandoffException(HandoffException.Reason.CLOSED, what + ": " + e.getMessage(), e);
        }
        if (e instanceof NativeIoException n && (n.errno() == Errno.EPIPE || n.errno() == Errno.ECONNRESET)) {
            return new HandoffException(HandoffException.Reason.CLOSED, "the other side is gone (" + what + ")", e);
        }
        return new HandoffException(HandoffException.Reason.LOCAL, what + ": " + e.getMessage(), e);
    }
}
