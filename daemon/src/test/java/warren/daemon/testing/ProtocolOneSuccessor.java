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
 * A successor of a build before the pre-copy (handoff protocol 1, before commit a15a0ca), for
 * rollback tests: hello with protocol 1, then it expects the offer at once (a pre_copy message is
 * a protocol error to such a build), its sealed memfd and the fds, and says ready or refuses. The
 * real old receiver did exactly this; no build of it is needed.
 *
 * <p>As a process ({@code ProtocolOneSuccessor DAEMON ... --handoff PATH}, the command of a
 * Restart), it takes the whole state and refuses it with a summary as the reason (the old process
 * serves on, and the restarter's error carries the summary): {@code protocol-1 check: offer first;
 * items NAME(fds=N[, pairs=P keyed=K ended=E][, connections=C calls=L calls_delta=B]) ...}.
 */
public final class ProtocolOneSuccessor {
    private ProtocolOneSuccessor() {}

    /** Decides on the state received: null says ready, a string refuses with it as the reason. */
    @FunctionalInterface
    public interface Judge {
        String judge(int stateVersion, List<HandoffItem> items) throws Exception;
    }

    /** What a protocol-1 receiver got: the first message after hello, the items (fds owned by the caller), commit or not. */
    public record Got(HandoffMessage.KindCase first, List<HandoffItem> items, boolean committed, String refused) {}

    /**
     * The protocol-1 receiver's side over {@code s}. Fds received are returned in the items
     * unless refused (then closed here). A first message other than an offer ends it (no reply).
     */
    public static Got receive(SeqpacketSocket s, String daemon, Judge judge, long timeoutMs) throws Exception {
        s.sendBlocking(HandoffMessage.newBuilder().setHello(Hello.newBuilder().setProtocol(1).setDaemon(daemon)
                .addAcceptsStateVersions(1).setPid(ProcessHandle.current().pid()).setVersion("protocol-1 fake"))
                .build().toByteArray(), List.of(), timeoutMs);
        HandoffMessage m;
        List<Fd> memfd;
        try (Received r = s.receiveBlocking(timeoutMs)) {
            if (r.isEof()) {
                return new Got(HandoffMessage.KindCase.KIND_NOT_SET, List.of(), false, "closed");
            }
            m = HandoffMessage.parseFrom(r.data());
            memfd = new ArrayList<>();
            for (int i = 0; i < r.fdCount(); i++) {
                memfd.add(r.take(i));
            }
        }
        if (!m.hasOffer()) {
            Fd.closeAll(memfd);
            return new Got(m.getKindCase(), List.of(), false, null);
        }
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
                : judge.judge(state.getStateVersion(), items);
        if (why != null) {
            Fd.closeAll(fds);
            s.sendBlocking(HandoffMessage.newBuilder().setRefuse(Refuse.newBuilder().setReason(why)).build()
                    .toByteArray(), List.of(), timeoutMs);
            return new Got(HandoffMessage.KindCase.OFFER, List.of(), false, why);
        }
        s.sendBlocking(HandoffMessage.newBuilder().setReady(Ready.getDefaultInstance()).build().toByteArray(), List.of(),
                timeoutMs);
        boolean committed;
        try (Received r = s.receiveBlocking(timeoutMs)) {
            committed = !r.isEof() && HandoffMessage.parseFrom(r.data()).hasCommit();
        }
        return new Got(HandoffMessage.KindCase.OFFER, items, committed, null);
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
        try (SeqpacketSocket s = SeqpacketSocket.connect(handoff)) {
            Got g = receive(s, args[0], (v, items) -> "protocol-1 check: offer first; " + summary(items), 60_000);
            if (g.first() != HandoffMessage.KindCase.OFFER) {
                System.err.println("protocol-1 successor: got " + g.first() + " before any offer");
                System.exit(4);
            }
        }
        System.exit(3);
    }
}
