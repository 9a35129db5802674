package warren.daemon.testing;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import warren.daemon.handoff.HandoffItem;
import warren.fdpass.Fd;
import warren.fdpass.FdBatch;
import warren.fdpass.Memfd;
import warren.fdpass.Received;
import warren.fdpass.SeqpacketSocket;
import warren.handoff.v1.ControlState;
import warren.handoff.v1.HandoffMessage;
import warren.handoff.v1.HandoffState;
import warren.handoff.v1.Hello;
import warren.handoff.v1.Item;
import warren.handoff.v1.Ready;
import warren.handoff.v1.Refuse;
import warren.handoff.v1.RelayState;

/**
 * A successor of another build, for rollback tests; no build of it is needed. Protocol 1 (builds
 * before the pre-copy, commit a15a0ca): hello with protocol 1, then it expects the offer at once
 * (to such a build a pre_copy message is a protocol error), its sealed memfd and the fds, and
 * says ready or refuses, as the old receiver did. Protocol 2 with a list: a build whose hello says
 * which items it pre-adopts ({@code Hello.pre_copies}); it takes each pre-copy chunk (noting its
 * items, closing its fds) and then the offer.
 *
 * <p>As a process ({@code FakeSuccessor DAEMON 1|2 [ITEM,ITEM...] ... --handoff PATH}, the
 * command of a Restart), it takes the state and refuses it with a summary as the reason (the old
 * process serves on, and the restarter's error carries the summary): {@code fake successor:
 * pre-copied [NAMES] in C chunks with F fds; offer: items NAME(fds=N[, pairs=P keyed=K ended=E]
 * [, connections=C calls=L calls_delta=B]) ...}.
 */
public final class FakeSuccessor {
    private FakeSuccessor() {}

    /**
     * Decides on the state received ({@code preCopy}: "pre-copied [NAMES] in C chunks with F
     * fds"): null says ready, a string refuses with it as the reason.
     */
    @FunctionalInterface
    public interface Judge {
        String judge(int stateVersion, List<HandoffItem> items, String preCopy) throws Exception;
    }

    /**
     * What it got: the first message after hello (after the pre-copy for protocol 2), the items
     * (fds owned by the caller), commit or not, the names of the pre-copied items (their fds
     * closed) and their fd count.
     */
    public record Got(HandoffMessage.KindCase first, List<HandoffItem> items, boolean committed, String refused,
            List<String> preCopied, int preCopiedFds, int chunks) {}

    /** The protocol-1 receiver's side over {@code s} (see {@link #receive(SeqpacketSocket, String, int, List, Judge, long)}). */
    public static Got receive(SeqpacketSocket s, String daemon, Judge judge, long timeoutMs) throws Exception {
        return receive(s, daemon, 1, null, judge, timeoutMs);
    }

    /**
     * The receiver's side over {@code s}, speaking {@code protocol}; for protocol 2 saying it
     * pre-adopts {@code preCopies} (null: the hello does not say). Fds received at the offer are
     * returned in the items unless refused (then closed here). A message other than an offer
     * (or, protocol 2, a pre-copy chunk) ends it with no reply.
     */
    public static Got receive(SeqpacketSocket s, String daemon, int protocol, List<String> preCopies, Judge judge,
            long timeoutMs) throws Exception {
        Hello.Builder hello = Hello.newBuilder().setProtocol(protocol).setDaemon(daemon).addAcceptsStateVersions(1)
                .setPid(ProcessHandle.current().pid()).setVersion("fake successor, protocol " + protocol);
        if (preCopies != null) {
            hello.setPreCopies(warren.handoff.v1.PreCopies.newBuilder().addAllItems(preCopies));
        }
        s.sendBlocking(HandoffMessage.newBuilder().setHello(hello).build().toByteArray(), List.of(), timeoutMs);
        List<String> preCopied = new ArrayList<>();
        int preFds = 0;
        int chunks = 0;
        while (true) {
            HandoffMessage m;
            List<Fd> memfd = new ArrayList<>();
            try (Received r = s.receiveBlocking(timeoutMs)) {
                if (r.isEof()) {
                    return new Got(HandoffMessage.KindCase.KIND_NOT_SET, List.of(), false, "closed", preCopied, preFds,
                            chunks);
                }
                m = HandoffMessage.parseFrom(r.data());
                for (int i = 0; i < r.fdCount(); i++) {
                    memfd.add(r.take(i));
                }
            }
            if (protocol == 2 && m.hasPreCopy()) {
                HandoffState chunk;
                try {
                    chunk = HandoffState.parseFrom(Memfd.readSealed(memfd.get(0), 1L << 30));
                } finally {
                    Fd.closeAll(memfd);
                }
                List<Fd> fds = FdBatch.receive(s, timeoutMs);
                preFds += fds.size();
                Fd.closeAll(fds);
                for (Item it : chunk.getItemsList()) {
                    if (!preCopied.contains(it.getName())) {
                        preCopied.add(it.getName());
                    }
                }
                chunks++;
                s.sendBlocking(HandoffMessage.newBuilder().setPreCopied(warren.handoff.v1.PreCopied.getDefaultInstance())
                        .build().toByteArray(), List.of(), timeoutMs);
                continue;
            }
            if (!m.hasOffer()) {
                Fd.closeAll(memfd);
                return new Got(m.getKindCase(), List.of(), false, null, preCopied, preFds, chunks);
            }
            return offer(s, m, memfd, judge, preCopied, preFds, chunks, timeoutMs);
        }
    }

    private static Got offer(SeqpacketSocket s, HandoffMessage m, List<Fd> memfd, Judge judge, List<String> preCopied,
            int preFds, int chunks, long timeoutMs) throws Exception {
        HandoffState state;
        try {
            state = HandoffState.parseFrom(Memfd.readSealed(memfd.get(0), 1L << 30));
        } finally {
            Fd.closeAll(memfd);
        }
        List<Fd> fds = FdBatch.receive(s, timeoutMs);
        List<HandoffItem> items = new ArrayList<>();
        int at = 0;
        for (Item it : state.getItemsList()) {
            items.add(new HandoffItem(it.getName(), it.getPayload().toByteArray(), fds.subList(at, at + it.getFdCount())));
            at += it.getFdCount();
        }
        String why = at != fds.size() || fds.size() != m.getOffer().getTotalFds()
                ? "items declare " + at + " fds, offer " + m.getOffer().getTotalFds() + ", received " + fds.size()
                : judge.judge(state.getStateVersion(), items, "pre-copied " + preCopied + " in " + chunks + " chunks with "
                        + preFds + " fds");
        if (why != null) {
            Fd.closeAll(fds);
            s.sendBlocking(HandoffMessage.newBuilder().setRefuse(Refuse.newBuilder().setReason(why)).build()
                    .toByteArray(), List.of(), timeoutMs);
            return new Got(HandoffMessage.KindCase.OFFER, List.of(), false, why, preCopied, preFds, chunks);
        }
        s.sendBlocking(HandoffMessage.newBuilder().setReady(Ready.getDefaultInstance()).build().toByteArray(), List.of(),
                timeoutMs);
        boolean committed;
        try (Received r = s.receiveBlocking(timeoutMs)) {
            committed = !r.isEof() && HandoffMessage.parseFrom(r.data()).hasCommit();
        }
        return new Got(HandoffMessage.KindCase.OFFER, items, committed, null, preCopied, preFds, chunks);
    }

    /** A one-line summary of a state: per item its fds, and for the control and relay items what they hold. */
    public static String summary(List<HandoffItem> items) throws Exception {
        StringBuilder b = new StringBuilder("items");
        for (HandoffItem it : items) {
            b.append(' ').append(it.name()).append("(fds=").append(it.fds().size());
            if (it.name().equals("control")) {
                ControlState cs = ControlState.parseFrom(it.payload());
                int calls = 0;
                for (var c : cs.getConnectionsList()) {
                    calls += c.getCallsCount();
                }
                b.append(", connections=").append(cs.getConnectionsCount()).append(" calls=").append(calls)
                        .append(" calls_delta=").append(cs.getCallsDelta());
            } else if (it.name().endsWith(".relay")) {
                RelayState rs = RelayState.parseFrom(it.payload());
                int keyed = 0;
                for (var p : rs.getPairsList()) {
                    keyed += p.getKey() != 0 || p.getUpdate() ? 1 : 0;
                }
                b.append(", pairs=").append(rs.getPairsCount()).append(" keyed=").append(keyed).append(" ended=")
                        .append(rs.getEndedCount());
            }
            b.append(')');
        }
        return b.toString();
    }

    public static void main(String[] args) throws Exception {
        Path handoff = null;
        for (int i = 0; i < args.length - 1; i++) {
            if (args[i].equals("--handoff")) {
                handoff = Path.of(args[i + 1]);
            }
        }
        int protocol = Integer.parseInt(args[1]);
        List<String> preCopies = protocol == 2 && args.length > 2 && !args[2].startsWith("--")
                ? List.of(args[2].split(",")) : null;
        try (SeqpacketSocket s = SeqpacketSocket.connect(handoff)) {
            Got g = receive(s, args[0], protocol, preCopies, (v, items, pre) -> "fake successor: " + pre + "; offer: "
                    + summary(items), 60_000);
            if (g.first() != HandoffMessage.KindCase.OFFER) {
                System.err.println("fake successor: got " + g.first() + " where an offer was due");
                System.exit(4);
            }
        }
        System.exit(3);
    }
}
