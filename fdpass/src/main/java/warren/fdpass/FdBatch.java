package warren.fdpass;

import com.google.protobuf.InvalidProtocolBufferException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.fdpass.v1.BatchAck;
import warren.fdpass.v1.BatchFrame;

/**
 * Transfers any number of fds over a SEQPACKET connection as numbered batches of at most
 * {@link Native#SCM_MAX_FD}, each acknowledged (proto {@code warren.fdpass.v1.BatchFrame} /
 * {@code BatchAck}). The receiver gets all of them or an error; on error it closes everything it
 * received for the transfer. Used by the upgrade handoff, which is a control path: both sides
 * block with a deadline.
 */
public final class FdBatch {
    private FdBatch() {}

    /** Batches sent ahead of their acknowledgement (4 x 253 fds in flight at most). */
    static final int WINDOW = 4;

    /**
     * Sends {@code fds} (borrowed: the caller still owns and closes them), up to {@link #WINDOW}
     * batches ahead of the acknowledgements, and returns once every batch is acknowledged in
     * order. A refusal or an ack out of order fails the transfer; batches still queued are closed
     * by the kernel with the receiver's socket.
     */
    public static void send(SeqpacketSocket s, long transferId, List<Fd> fds, long timeoutMs)
            throws NativeIoException, FdPassException {
        int total = fds.size();
        int batches = Math.max(1, (total + Native.SCM_MAX_FD - 1) / Native.SCM_MAX_FD);
        int acked = 0;
        for (int seq = 0; seq < batches; seq++) {
            int from = seq * Native.SCM_MAX_FD;
            int to = Math.min(total, from + Native.SCM_MAX_FD);
            BatchFrame frame = BatchFrame.newBuilder().setTransferId(transferId).setSeq(seq)
                    .setBatchCount(batches).setTotalFds(total).setFdsInBatch(to - from).build();
            s.sendBlocking(frame.toByteArray(), fds.subList(from, to), timeoutMs);
            while (seq + 1 - acked >= WINDOW) {
                awaitAck(s, transferId, acked++, batches, timeoutMs);
            }
        }
        while (acked < batches) {
            awaitAck(s, transferId, acked++, batches, timeoutMs);
        }
    }

    private static void awaitAck(SeqpacketSocket s, long transferId, int seq, int batches, long timeoutMs)
            throws NativeIoException, FdPassException {
        try (Received r = s.receiveBlocking(timeoutMs)) {
            if (r.isEof()) {
                throw new FdPassException(FdPassException.Reason.CLOSED,
                        "peer closed during batch " + seq + " of " + batches);
            }
            BatchAck ack = parseAck(r);
            if (ack.getTransferId() != transferId || ack.getSeq() != seq || !ack.getOk()) {
                throw new FdPassException(FdPassException.Reason.BATCH_FAILED,
                        "batch " + seq + " of " + batches + " refused: "
                                + (ack.getError().isEmpty() ? "ack out of order" : ack.getError()));
            }
        }
    }

    /** Tells a receiver that the sender gives up (best effort). */
    public static void abort(SeqpacketSocket s, long transferId, long timeoutMs) {
        try {
            s.sendBlocking(BatchFrame.newBuilder().setTransferId(transferId).setAbort(true).build()
                    .toByteArray(), Collections.emptyList(), timeoutMs);
        } catch (NativeIoException | FdPassException e) {
            // the peer is gone: nothing to tell
        }
    }

    /** Receives one whole transfer; the returned fds are owned by the caller. */
    public static List<Fd> receive(SeqpacketSocket s, long timeoutMs) throws NativeIoException, FdPassException {
        List<Fd> got = new ArrayList<>();
        long transferId = 0;
        int batches = -1;
        long total = -1;
        try {
            for (int seq = 0; batches < 0 || seq < batches; seq++) {
                Received r = s.receiveBlocking(timeoutMs);
                try {
                    if (r.isEof()) {
                        throw new FdPassException(FdPassException.Reason.CLOSED,
                                "peer closed after " + got.size() + " fds");
                    }
                    BatchFrame f;
                    try {
                        f = BatchFrame.parseFrom(r.data());
                    } catch (InvalidProtocolBufferException e) {
                        throw refuse(s, transferId, seq, "not a BatchFrame: " + e.getMessage(), timeoutMs);
                    }
                    if (f.getAbort()) {
                        throw new FdPassException(FdPassException.Reason.BATCH_FAILED, "sender aborted the transfer");
                    }
                    if (seq == 0) {
                        transferId = f.getTransferId();
                        batches = f.getBatchCount();
                        total = f.getTotalFds();
                        long expected = Math.max(1, (total + Native.SCM_MAX_FD - 1) / Native.SCM_MAX_FD);
                        if (batches != expected) {
                            throw refuse(s, transferId, seq, "batch_count " + batches + " does not fit total_fds "
                                    + total, timeoutMs);
                        }
                    }
                    long wantHere = Math.min(Native.SCM_MAX_FD, total - (long) seq * Native.SCM_MAX_FD);
                    if (f.getTransferId() != transferId || f.getSeq() != seq || f.getBatchCount() != batches
                            || f.getTotalFds() != total || f.getFdsInBatch() != wantHere
                            || r.fdCount() != wantHere) {
                        throw refuse(s, transferId, seq, "batch " + f.getSeq() + " with " + r.fdCount()
                                + " fds does not match the expected batch " + seq + " with " + wantHere, timeoutMs);
                    }
                    got.addAll(r.takeAll());
                } finally {
                    r.close();
                }
                s.sendBlocking(BatchAck.newBuilder().setTransferId(transferId).setSeq(seq).setOk(true).build()
                        .toByteArray(), Collections.emptyList(), timeoutMs);
            }
            return got;
        } catch (NativeIoException | FdPassException | RuntimeException e) {
            Fd.closeAll(got);
            throw e;
        }
    }

    private static FdPassException refuse(SeqpacketSocket s, long transferId, int seq, String why, long timeoutMs) {
        try {
            s.sendBlocking(BatchAck.newBuilder().setTransferId(transferId).setSeq(seq).setOk(false)
                    .setError(why).build().toByteArray(), Collections.emptyList(), timeoutMs);
        } catch (NativeIoException | FdPassException e) {
            // the sender will time out or see the connection close
        }
        return new FdPassException(FdPassException.Reason.BATCH_FAILED, why);
    }

    private static BatchAck parseAck(Received r) throws FdPassException {
        if (r.fdCount() != 0) {
            throw new FdPassException(FdPassException.Reason.BATCH_FAILED, "ack carried fds");
        }
        try {
            return BatchAck.parseFrom(r.data());
        } catch (InvalidProtocolBufferException e) {
            throw new FdPassException(FdPassException.Reason.BATCH_FAILED, "not a BatchAck: " + e.getMessage());
        }
    }
}
