package warren.daemon.handoff;

import com.google.protobuf.InvalidProtocolBufferException;
import java.util.ArrayList;
import java.util.List;
import warren.fdpass.Fd;
import warren.fdpass.FdBatch;
import warren.fdpass.FdPassException;
import warren.fdpass.Memfd;
import warren.fdpass.SeqpacketSocket;
import warren.fdpass.libc.NativeIoException;
import warren.handoff.v1.HandoffMessage;
import warren.handoff.v1.HandoffState;
import warren.handoff.v1.Hello;
import warren.handoff.v1.Item;
import warren.handoff.v1.Offer;
import warren.handoff.v1.PreCopied;
import warren.handoff.v1.PreCopy;
import warren.handoff.v1.Ready;
import warren.handoff.v1.Refuse;

/**
 * The successor's side of the handoff. {@link #receive} returns the items (their fds now owned by
 * the caller) once the old process has committed, or once it vanished after we said ready. On any
 * failure every fd received is closed (the pre-copy's too, and what the preparer built from them:
 * {@link Preparer#discard}) and nothing is returned.
 */
public final class HandoffReceiver {
    /** Largest state memfd accepted (a 10,000-flow table is a few MiB). */
    public static final long MAX_STATE_BYTES = 1L << 30;

    /**
     * Validates and prepares what arrived; throwing refuses the handoff with the message as reason.
     * {@link #preCopy} gets each pre-copy chunk (the old process still serving) and may take its
     * fds (detach them); {@link #prepare} gets the state sent at the pause. {@link #discard} is called
     * when the handoff fails after a pre-copy chunk or a prepare was accepted: it closes whatever
     * those built (the fds it did not take are closed by the receiver).
     */
    public interface Preparer {
        void prepare(int stateVersion, List<HandoffItem> items) throws Exception;

        default void preCopy(int stateVersion, List<HandoffItem> items) throws Exception {}

        default void discard() {}
    }

    /**
     * What was taken over: the items sent at the pause, and those of the pre-copy (fds the preparer
     * did not take are the caller's too).
     */
    public record Taken(int stateVersion, List<HandoffItem> items, boolean committed, String timings,
            List<HandoffItem> preCopied) {}

    private HandoffReceiver() {}

    public static Taken receive(SeqpacketSocket s, String daemon, List<Integer> acceptsStateVersions,
            Preparer preparer, long timeoutMs) throws HandoffException {
        return receive(s, daemon, warren.daemon.Version.string(), acceptsStateVersions, preparer, timeoutMs);
    }

    /** As above, saying {@code version} (the successor's build) in the hello. */
    public static Taken receive(SeqpacketSocket s, String daemon, String version, List<Integer> acceptsStateVersions,
            Preparer preparer, long timeoutMs) throws HandoffException {
        return receive(s, daemon, version, acceptsStateVersions, null, preparer, timeoutMs);
    }

    /**
     * As above, saying in the hello which items the preparer can pre-adopt ({@code preCopies},
     * {@code Hello.pre_copies}): the old process pre-copies only those, and a chunk with another
     * item is refused here. Null: the hello does not say (the old process pre-copies what it would).
     */
    public static Taken receive(SeqpacketSocket s, String daemon, String version, List<Integer> acceptsStateVersions,
            List<String> preCopies, Preparer preparer, long timeoutMs) throws HandoffException {
        Hello.Builder hello = Hello.newBuilder().setProtocol(Wire.PROTOCOL).setDaemon(daemon)
                .addAllAcceptsStateVersions(acceptsStateVersions).setPid(ProcessHandle.current().pid()).setVersion(version);
        if (preCopies != null) {
            hello.setPreCopies(warren.handoff.v1.PreCopies.newBuilder().addAllItems(preCopies));
        }
        Wire.send(s, HandoffMessage.newBuilder().setHello(hello).build(), timeoutMs);
        List<Fd> memfds = new ArrayList<>(1);
        List<Fd> fds = new ArrayList<>();
        List<Fd> preFds = new ArrayList<>();
        List<HandoffItem> preItems = new ArrayList<>();
        boolean handedOut = false;
        boolean prepared = false;
        try {
            long tCopy = System.nanoTime();
            HandoffMessage m = Wire.receive(s, "offer", timeoutMs, memfds);
            int chunks = 0;
            while (m.hasPreCopy()) { // the old process serves on meanwhile
                PreCopy pc = m.getPreCopy();
                List<Fd> chunkFds = new ArrayList<>();
                HandoffState state = readState(s, pc.getStateVersion(), memfds, chunkFds, preFds,
                        pc.getTotalFds(), acceptsStateVersions, timeoutMs);
                List<HandoffItem> items = itemsOrRefuse(s, state, chunkFds, timeoutMs);
                if (preCopies != null) {
                    for (HandoffItem it : items) {
                        if (!preCopies.contains(it.name())) {
                            throw refuse(s, HandoffException.Reason.PROTOCOL, "pre-copy chunk " + pc.getChunk()
                                    + " holds item '" + it.name() + "', not one this successor takes (" + preCopies
                                    + ")", timeoutMs);
                        }
                    }
                }
                prepared = true;
                try {
                    preparer.preCopy(state.getStateVersion(), items);
                } catch (Exception e) {
                    throw refuse(s, HandoffException.Reason.REFUSED, "pre-copy chunk " + pc.getChunk() + ": "
                            + e.getMessage(), timeoutMs);
                }
                preItems.addAll(items);
                chunks++;
                Wire.send(s, HandoffMessage.newBuilder().setPreCopied(PreCopied.getDefaultInstance()).build(),
                        timeoutMs);
                m = Wire.receive(s, "offer", timeoutMs, memfds);
            }
            long tOffer = System.nanoTime(); // the old process paused just before sending it
            if (m.hasAbort()) {
                throw new HandoffException(HandoffException.Reason.ABORTED, "the old process aborted: "
                        + m.getAbort().getReason());
            }
            if (!m.hasOffer()) {
                throw refuse(s, HandoffException.Reason.PROTOCOL, "expected an offer with one memfd, got "
                        + m.getKindCase() + " with " + memfds.size() + " fds", timeoutMs);
            }
            Offer offer = m.getOffer();
            HandoffState state = readState(s, offer.getStateVersion(), memfds, fds, null, offer.getTotalFds(),
                    acceptsStateVersions, timeoutMs);
            long tFds = System.nanoTime();
            List<HandoffItem> items = itemsOrRefuse(s, state, fds, timeoutMs);
            prepared = true;
            try {
                preparer.prepare(state.getStateVersion(), items);
            } catch (Exception e) {
                throw refuse(s, HandoffException.Reason.REFUSED, String.valueOf(e.getMessage()), timeoutMs);
            }
            long tPrepared = System.nanoTime();
            Wire.send(s, HandoffMessage.newBuilder().setReady(Ready.getDefaultInstance()).build(), timeoutMs);
            boolean committed;
            try {
                HandoffMessage last = Wire.receive(s, "commit", timeoutMs, null);
                if (last.hasAbort()) {
                    throw new HandoffException(HandoffException.Reason.ABORTED, "the old process aborted: "
                            + last.getAbort().getReason());
                }
                if (!last.hasCommit()) {
                    throw new HandoffException(HandoffException.Reason.PROTOCOL, "expected commit, got " + last.getKindCase());
                }
                committed = true;
            } catch (HandoffException e) {
                if (e.reason() != HandoffException.Reason.CLOSED) {
                    throw e;
                }
                committed = false; // the old process died after we said ready: its fds live only here now
            }
            handedOut = true;
            long tEnd = System.nanoTime();
            String timings = String.format("pre-copy: %d fds in %d chunks in %.1f ms; after the offer: %d fds, %d state"
                    + " bytes, fds in %.1f ms, rebuilt in %.1f ms, commit after %.1f ms", preFds.size(), chunks,
                    (tOffer - tCopy) / 1e6, fds.size(), offer.getStateBytes(), (tFds - tOffer) / 1e6,
                    (tPrepared - tFds) / 1e6, (tEnd - tPrepared) / 1e6);
            return new Taken(state.getStateVersion(), items, committed, timings, preItems);
        } finally {
            Fd.closeAll(memfds);
            if (!handedOut) {
                if (prepared) {
                    preparer.discard(); // what the preparer built from them (their fds detached)
                }
                Fd.closeAll(fds); // the ones no one took
                Fd.closeAll(preFds);
            }
        }
    }

    /**
     * The state in the one memfd that came with an offer or a pre-copy chunk, and the fds that
     * follow it (added to {@code into} and, if given, {@code alsoInto}); refuses a version not
     * accepted, an unreadable state, or a count that does not match.
     */
    private static HandoffState readState(SeqpacketSocket s, int declared, List<Fd> memfds, List<Fd> into,
            List<Fd> alsoInto, long totalFds, List<Integer> accepts, long timeoutMs) throws HandoffException {
        try {
            if (memfds.size() != 1) {
                throw refuse(s, HandoffException.Reason.PROTOCOL, "expected one memfd with the state, got "
                        + memfds.size(), timeoutMs);
            }
            if (!accepts.contains(declared)) {
                throw refuse(s, HandoffException.Reason.VERSION_REFUSED, "state version " + declared + " is not one of "
                        + accepts, timeoutMs);
            }
            HandoffState state;
            try {
                state = HandoffState.parseFrom(Memfd.readSealed(memfds.get(0), MAX_STATE_BYTES));
            } catch (InvalidProtocolBufferException | FdPassException | NativeIoException e) {
                throw refuse(s, HandoffException.Reason.PROTOCOL, "unreadable state: " + e.getMessage(), timeoutMs);
            }
            List<Fd> got;
            try {
                got = FdBatch.receive(s, timeoutMs);
            } catch (NativeIoException | FdPassException e) {
                throw Wire.failure("receiving fds", e);
            }
            into.addAll(got);
            if (alsoInto != null) {
                alsoInto.addAll(got);
            }
            if (state.getStateVersion() != declared || got.size() != totalFds) {
                throw refuse(s, HandoffException.Reason.PROTOCOL, "state version " + state.getStateVersion()
                        + " / offer " + declared + ", offer " + totalFds + " fds, received " + got.size(), timeoutMs);
            }
            return state;
        } finally {
            Fd.closeAll(memfds);
            memfds.clear();
        }
    }

    private static List<HandoffItem> itemsOrRefuse(SeqpacketSocket s, HandoffState state, List<Fd> fds,
            long timeoutMs) throws HandoffException {
        try {
            return items(state, fds);
        } catch (IllegalArgumentException e) {
            throw refuse(s, HandoffException.Reason.PROTOCOL, e.getMessage(), timeoutMs);
        }
    }

    /**
     * The items of {@code state}, each with its share of {@code fds} (views, in order). Refuses
     * (IllegalArgumentException) a state whose items' fd counts, uint32 read unsigned, do not add up
     * to the fds that arrived: a count past 2^31 read as a negative int would otherwise cancel
     * another out and cut a sublist backwards.
     */
    static List<HandoffItem> items(HandoffState state, List<Fd> fds) {
        long declared = 0;
        for (Item it : state.getItemsList()) {
            declared += Integer.toUnsignedLong(it.getFdCount());
        }
        if (declared != fds.size()) {
            throw new IllegalArgumentException("items declare " + declared + " fds, received " + fds.size());
        }
        List<HandoffItem> items = new ArrayList<>(state.getItemsCount());
        int at = 0;
        for (Item it : state.getItemsList()) {
            items.add(new HandoffItem(it.getName(), it.getPayload().toByteArray(), fds.subList(at, at + it.getFdCount())));
            at += it.getFdCount();
        }
        return items;
    }

    private static HandoffException refuse(SeqpacketSocket s, HandoffException.Reason reason, String why, long timeoutMs) {
        try {
            Wire.send(s, HandoffMessage.newBuilder().setRefuse(Refuse.newBuilder().setReason(why)).build(),
                    Math.min(timeoutMs, 1000));
        } catch (HandoffException e) {
            // the old process is gone or not listening; it resumes on its own
        }
        return new HandoffException(reason, why);
    }
}
