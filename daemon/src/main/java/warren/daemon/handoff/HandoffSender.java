package warren.daemon.handoff;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Predicate;
import warren.fdpass.Fd;
import warren.fdpass.FdBatch;
import warren.fdpass.FdPassException;
import warren.fdpass.Memfd;
import warren.fdpass.SeqpacketSocket;
import warren.fdpass.libc.NativeIoException;
import warren.handoff.v1.Commit;
import warren.handoff.v1.HandoffMessage;
import warren.handoff.v1.HandoffState;
import warren.handoff.v1.Hello;
import warren.handoff.v1.Item;
import warren.handoff.v1.Offer;
import warren.handoff.v1.PreCopy;

/**
 * The old process's side of the handoff. {@link #hand} returns normally only once commit has been
 * sent: from then on the successor owns everything and the caller exits without touching the
 * items' fds again (closing its own copies is harmless; shutdown(2) or writes are not). On any
 * failure before that, {@link Source#resume} has been called, an abort was sent if the successor
 * is still listening, and the exception says why.
 *
 * <p>Pre-copy (protocol 2): before pausing anything, {@link Source#preCopy} is asked for chunks
 * of at most {@link #PRE_COPY_FDS} fds while the tasks run on; each goes out as a {@code pre_copy}
 * and waits for {@code pre_copied} (the successor built it, paused). The chunk's fds are
 * duplicates owned by the chunk and closed here once sent, so the process keeps owning and using
 * its own, and a task that ends meanwhile never has its fd number reused under the send. A failure
 * during the pre-copy calls {@link Source#preCopyAborted} (nothing was paused). The pause then
 * sends only what {@link Source#pause} says changed since.
 *
 * <p>Older and newer successors (a rollback is an upgrade to an older build): a successor that
 * says protocol 1 (builds before the pre-copy) gets no pre-copy at all, {@link Source#preCopy} is
 * never asked, so the pause exports everything whole, as protocol 1 had it; any other protocol is
 * refused, naming both. A protocol-2 successor whose hello lists the items it can pre-adopt
 * ({@code Hello.pre_copies}) gets only those (the source is told: {@link Source#preCopy(int,
 * Predicate)}; an item it returns anyway fails the pre-copy here, before it is sent); one whose
 * hello does not say (protocol-2 builds before the field) gets whatever the source copies.
 */
public final class HandoffSender {
    /** What the old process hands over. */
    public interface Source {
        /** The version of the state layout this process writes. */
        int stateVersion();

        /**
         * Stops every task at a clean point (no byte half-relayed, no packet half-processed) and
         * returns the state. The fds stay owned by the source.
         */
        List<HandoffItem> pause() throws Exception;

        /** Undoes {@link #pause}: the handoff did not happen and this process carries on. */
        void resume();

        /**
         * The next chunk of the pre-copy, taken while every task runs on: items whose fds are
         * duplicates they own (at most about {@code maxFds}; the sender closes them once sent).
         * Empty when everything is copied; the default copies nothing (all goes at the pause).
         */
        default List<HandoffItem> preCopy(int maxFds) throws Exception {
            return List.of();
        }

        /**
         * As {@link #preCopy(int)}, with only items whose name {@code takes} accepts (what the
         * successor said it can pre-adopt): what it would copy under another name is left for the
         * pause, whole. The sender asks this one; the default ignores {@code takes} (the sender
         * then fails the pre-copy on an item not taken).
         */
        default List<HandoffItem> preCopy(int maxFds, Predicate<String> takes) throws Exception {
            return preCopy(maxFds);
        }

        /** The pre-copy failed (nothing was paused): forget what was copied. */
        default void preCopyAborted() {}
    }

    /** Fds per pre-copy chunk: bounds the duplicates the old process holds at once (RLIMIT_NOFILE). */
    public static final int PRE_COPY_FDS = 1024;
    /** Chunks at most (a million fds): a pre-copy ends even if new tasks keep coming. */
    public static final int MAX_PRE_COPY_CHUNKS = 1024;

    /** How the handoff went; figures for the report. */
    /** {@code fds}: sent at the pause; {@code preCopiedFds}: sent before it, while the tasks ran. */
    public record Report(long successorPid, int items, int fds, long stateBytes, long pausedNanos,
            String successorVersion, String timings, int preCopiedFds) {}

    /** Told of each step as it is done ("pre_copied", "paused", "fds_sent", "ready", "committed"), on the handing thread. */
    @FunctionalInterface
    public interface Progress {
        Progress NONE = (phase, detail) -> { };

        void phase(String phase, String detail);
    }

    private HandoffSender() {}

    /** One pre-copy chunk: its state in a sealed memfd, then its fds; returns the fds sent. */
    private static int sendState(SeqpacketSocket s, String daemon, int version, List<HandoffItem> items, long pid,
            int chunk, long timeoutMs) throws HandoffException, NativeIoException {
        HandoffState.Builder state = HandoffState.newBuilder().setStateVersion(version);
        List<Fd> fds = new ArrayList<>();
        for (HandoffItem it : items) {
            state.addItems(Item.newBuilder().setName(it.name())
                    .setPayload(com.google.protobuf.ByteString.copyFrom(it.payload())).setFdCount(it.fds().size()));
            fds.addAll(it.fds());
        }
        byte[] bytes = state.build().toByteArray();
        try (Fd memfd = Memfd.createSealed("warren-precopy-" + daemon, bytes)) {
            Wire.send(s, HandoffMessage.newBuilder().setPreCopy(PreCopy.newBuilder().setStateVersion(version)
                    .setStateBytes(bytes.length).setTotalFds(fds.size()).setChunk(chunk)).build(), List.of(memfd),
                    timeoutMs);
        }
        try {
            FdBatch.send(s, pid, fds, timeoutMs);
        } catch (FdPassException e) {
            throw Wire.failure("sending " + fds.size() + " pre-copied fds", e);
        } catch (NativeIoException e) {
            throw Wire.failure("sending " + fds.size() + " pre-copied fds", e);
        }
        return fds.size();
    }

    /**
     * What the successor's hello says it pre-adopts: the items listed in {@code pre_copies}, or
     * anything when the field is absent (a protocol-2 build from before it).
     */
    static Predicate<String> takes(Hello hello) {
        if (!hello.hasPreCopies()) {
            return name -> true;
        }
        java.util.Set<String> names = java.util.Set.copyOf(hello.getPreCopies().getItemsList());
        return names::contains;
    }

    public static Report hand(SeqpacketSocket s, String daemon, Source source, long timeoutMs)
            throws HandoffException {
        return hand(s, daemon, source, timeoutMs, Progress.NONE);
    }

    public static Report hand(SeqpacketSocket s, String daemon, Source source, long timeoutMs, Progress progress)
            throws HandoffException {
        HandoffMessage m = Wire.receive(s, "hello", timeoutMs, null);
        if (!m.hasHello()) {
            Wire.abort(s, "expected hello, got " + m.getKindCase(), timeoutMs);
            throw new HandoffException(HandoffException.Reason.PROTOCOL, "expected hello, got " + m.getKindCase());
        }
        Hello hello = m.getHello();
        int version = source.stateVersion();
        boolean known = hello.getProtocol() == Wire.PROTOCOL || hello.getProtocol() == Wire.PROTOCOL_NO_PRE_COPY;
        if (!known || !hello.getDaemon().equals(daemon) || !hello.getAcceptsStateVersionsList().contains(version)) {
            String why = "successor (pid " + hello.getPid() + ") is " + hello.getDaemon() + " speaking handoff protocol "
                    + hello.getProtocol() + " and accepts state versions " + hello.getAcceptsStateVersionsList()
                    + "; this is " + daemon + ", protocol " + Wire.PROTOCOL + " (also speaks "
                    + Wire.PROTOCOL_NO_PRE_COPY + "), state version " + version;
            Wire.abort(s, why, timeoutMs);
            throw new HandoffException(HandoffException.Reason.VERSION_REFUSED, why);
        }
        // protocol 1: no pre-copy at all, the source is never asked, so the pause exports everything whole
        boolean preCopy = hello.getProtocol() == Wire.PROTOCOL;
        Predicate<String> takes = takes(hello);
        long tCopy = System.nanoTime();
        int chunks = 0;
        int copiedFds = 0;
        try {
            // tasks begun during a chunk are copied by the next one; the bound stops a copy that new
            // tasks outrun (what is left then goes whole in the pause)
            for (List<HandoffItem> chunk = preCopy ? source.preCopy(PRE_COPY_FDS, takes) : List.of(); !chunk.isEmpty();
                    chunk = chunks < MAX_PRE_COPY_CHUNKS ? source.preCopy(PRE_COPY_FDS, takes) : List.of()) {
                try {
                    for (HandoffItem it : chunk) {
                        if (!takes.test(it.name())) {
                            throw new HandoffException(HandoffException.Reason.LOCAL, "the pre-copy made item '"
                                    + it.name() + "', which the successor does not take (it takes "
                                    + hello.getPreCopies().getItemsList() + ")");
                        }
                    }
                    copiedFds += sendState(s, daemon, version, chunk, hello.getPid(), chunks, timeoutMs);
                } finally {
                    for (HandoffItem it : chunk) {
                        Fd.closeAll(it.fds()); // our duplicates: the tasks keep their own
                    }
                }
                HandoffMessage a = Wire.receive(s, "pre_copied", timeoutMs, null);
                if (a.hasRefuse()) {
                    throw new HandoffException(HandoffException.Reason.REFUSED,
                            "successor refused the pre-copy: " + a.getRefuse().getReason());
                }
                if (a.hasAbort()) {
                    throw new HandoffException(HandoffException.Reason.ABORTED,
                            "successor aborted during the pre-copy: " + a.getAbort().getReason());
                }
                if (!a.hasPreCopied()) {
                    throw new HandoffException(HandoffException.Reason.PROTOCOL, "expected pre_copied, got "
                            + a.getKindCase());
                }
                chunks++;
            }
        } catch (Exception e) {
            Wire.abort(s, "pre-copy failed: " + e.getMessage(), Math.min(timeoutMs, 1000));
            source.preCopyAborted();
            if (e instanceof HandoffException h) {
                throw h;
            }
            throw new HandoffException(HandoffException.Reason.LOCAL, "pre-copy: " + e, e);
        }
        long copyNanos = System.nanoTime() - tCopy;
        if (!preCopy) {
            progress.phase("pre_copied", "none: the successor speaks handoff protocol " + hello.getProtocol()
                    + " (everything goes in the pause)");
        } else if (chunks > 0) {
            progress.phase("pre_copied", String.format("%d fds in %d chunk%s in %.1f ms, tasks running", copiedFds,
                    chunks, chunks == 1 ? "" : "s", copyNanos / 1e6));
        }
        long pausedAt = System.nanoTime();
        long pausedDone = pausedAt;
        List<HandoffItem> items;
        try {
            items = source.pause();
            pausedDone = System.nanoTime();
        } catch (Exception e) {
            source.resume();
            Wire.abort(s, "the old process could not pause: " + e.getMessage(), timeoutMs);
            throw new HandoffException(HandoffException.Reason.LOCAL, "pausing tasks: " + e.getMessage(), e);
        }
        progress.phase("paused", String.format("%d items in %.1f ms", items.size(), (pausedDone - pausedAt) / 1e6));
        try {
            HandoffState.Builder state = HandoffState.newBuilder().setStateVersion(version);
            List<Fd> fds = new ArrayList<>();
            for (HandoffItem it : items) {
                state.addItems(Item.newBuilder().setName(it.name())
                        .setPayload(com.google.protobuf.ByteString.copyFrom(it.payload()))
                        .setFdCount(it.fds().size()));
                fds.addAll(it.fds());
            }
            byte[] bytes = state.build().toByteArray();
            long tEncoded = System.nanoTime();
            try (Fd memfd = Memfd.createSealed("warren-handoff-" + daemon, bytes)) {
                Wire.send(s, HandoffMessage.newBuilder().setOffer(Offer.newBuilder().setStateVersion(version)
                        .setStateBytes(bytes.length).setTotalFds(fds.size())).build(), List.of(memfd), timeoutMs);
            }
            try {
                FdBatch.send(s, hello.getPid(), fds, timeoutMs);
            } catch (NativeIoException | FdPassException e) {
                throw Wire.failure("sending " + fds.size() + " fds", e);
            }
            long tSent = System.nanoTime();
            int batches = Math.max(1, (fds.size() + warren.fdpass.libc.Native.SCM_MAX_FD - 1)
                    / warren.fdpass.libc.Native.SCM_MAX_FD);
            progress.phase("fds_sent", String.format("%d fds in %d batch%s, %d state bytes, in %.1f ms", fds.size(),
                    batches, batches == 1 ? "" : "es", bytes.length, (tSent - tEncoded) / 1e6));
            HandoffMessage answer = Wire.receive(s, "ready", timeoutMs, null);
            String timings = String.format("pre-copied %d fds in %d chunks in %.1f ms (running); paused in %.1f ms, state encoded in %.1f ms, sent with %d fds"
                    + " in %.1f ms, ready %.1f ms later", copiedFds, chunks, copyNanos / 1e6, (pausedDone - pausedAt) / 1e6, (tEncoded - pausedDone) / 1e6,
                    fds.size(), (tSent - tEncoded) / 1e6, (System.nanoTime() - tSent) / 1e6);
            if (answer.hasRefuse()) {
                throw new HandoffException(HandoffException.Reason.REFUSED,
                        "successor refused the state: " + answer.getRefuse().getReason());
            }
            if (answer.hasAbort()) {
                throw new HandoffException(HandoffException.Reason.ABORTED,
                        "successor aborted: " + answer.getAbort().getReason());
            }
            if (!answer.hasReady()) {
                throw new HandoffException(HandoffException.Reason.PROTOCOL, "expected ready, got " + answer.getKindCase());
            }
            progress.phase("ready", String.format("pid %d validated the state in %.1f ms", hello.getPid(),
                    (System.nanoTime() - tSent) / 1e6));
            Wire.send(s, HandoffMessage.newBuilder().setCommit(Commit.getDefaultInstance()).build(), timeoutMs);
            long paused = System.nanoTime() - pausedAt;
            progress.phase("committed", String.format("pid %d serves; tasks were paused %.1f ms", hello.getPid(),
                    paused / 1e6));
            return new Report(hello.getPid(), items.size(), fds.size(), bytes.length, paused, hello.getVersion(),
                    timings, copiedFds);
        } catch (HandoffException | RuntimeException | NativeIoException e) {
            Wire.abort(s, e.getMessage(), Math.min(timeoutMs, 1000));
            source.resume();
            if (e instanceof HandoffException h) {
                throw h;
            }
            throw new HandoffException(HandoffException.Reason.LOCAL, e.toString(), e);
        }
    }
}
