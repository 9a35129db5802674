package warren.bumblebee.nat;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.BiConsumer;
import java.util.function.LongFunction;
import java.util.function.ToLongFunction;
import warren.bumblebee.env.Environment;
import warren.daemon.TaskStore;
import warren.daemon.control.Call;
import warren.daemon.handoff.HandoffItem;
import warren.daemon.relay.Pair;
import warren.daemon.relay.Relay;
import warren.daemon.task.Task;
import warren.fdpass.Fd;
import warren.handoff.v1.BumblebeeState;
import warren.handoff.v1.FlowState;
import warren.handoff.v1.RelayState;
import warren.handoff.v1.StoredTask;
import warren.handoff.v1.StoredTasks;
import warren.systemd.SdNotify;

/**
 * The NAT's persistence, with {@link FlowTableCodec} as its encoding: the handoff of an upgrade in
 * place (export of a paused table, adoption by the successor) and systemd's fd store (each flow
 * stored as it starts and changes, removed when it ends, the table rebuilt from the store after a
 * crash). It owns the names: the handoff items {@link #ITEM} and {@link #RELAY_ITEM}, the fd store
 * extras {@code x.netns}, {@code x.tun}, {@code x.listen4}, {@code x.listen6}. The control path: it
 * may allocate. Loop thread (adoption: before the loop runs).
 */
final class FlowStore {
    /** The handoff item of the flow table, and the fd store item of each stored flow. */
    static final String ITEM = "bumblebee.nat";
    /** The handoff item (and the fd store journal) of the downgrades' relay pairs. */
    static final String RELAY_ITEM = ITEM + ".relay";
    /** The environment's fds in the fd store, in the order {@link BumblebeeState}'s fd_* fields name them. */
    /** The item fd store recovery hands over after a crash (warren.daemon.FdStoreRecovery). */
    static final String RECOVERED_ITEM = "fdstore";
    private static final List<String> EXTRAS = List.of("x.netns", "x.tun", "x.listen4", "x.listen6");

    private final Environment env;
    private TaskStore store; // null: no fd store

    FlowStore(Environment env) {
        this.env = env;
    }

    private List<Fd> environmentFds() {
        return List.of(env.netns, env.tun, env.listen4, env.listen6);
    }

    // ---- the handoff

    /**
     * A paused table as handoff items: {@link #ITEM} (BumblebeeState with the namespace, TUN,
     * listeners and every flow's fds) and {@link #RELAY_ITEM} (the downgrades' relay pairs). The fds
     * are borrowed until the table is abandoned.
     */
    List<HandoffItem> export(String name, Flow[] flows, Relay relay, ToLongFunction<Call> callRef) {
        List<Integer> raw = new ArrayList<>();
        for (Fd fd : environmentFds()) {
            raw.add(fd.get());
        }
        BumblebeeState state = FlowTableCodec.write(flows, env.mtu, System.nanoTime(), raw, callRef)
                .toBuilder().setFdNetns(0).setFdTun(1).setFdListen4(2).setFdListen6(3).build();
        List<Fd> fds = new ArrayList<>(raw.size());
        for (int fd : raw) {
            fds.add(Fd.adopt(fd)); // views for sending only; never closed
        }
        return List.of(new HandoffItem(name, state.toByteArray(), fds), relay.export(name + ".relay", callRef));
    }

    /**
     * The predecessor's state from the items a successor receives: {@link #ITEM} and
     * {@link #RELAY_ITEM} after an upgrade in place, or the fd store's "fdstore" (and the relay's
     * journal, if any downgrade was stored) after a crash. Checks it carries the environment and
     * was made with {@code slots} slots (bumblebee.slots must not change across an upgrade).
     */
    static Nat.Inherited inherited(List<HandoffItem> items, int slots, int mtu)
            throws com.google.protobuf.InvalidProtocolBufferException {
        HandoffItem table = null;
        HandoffItem relay = null;
        HandoffItem fdStore = null;
        for (HandoffItem it : items) {
            if (it.name().equals(ITEM)) {
                table = it;
            } else if (it.name().equals(RELAY_ITEM)) {
                relay = it;
            } else if (it.name().equals(RECOVERED_ITEM)) {
                fdStore = it;
            } else {
                throw new IllegalArgumentException("unknown handoff item " + it.name());
            }
        }
        BumblebeeState st;
        RelayState relayState;
        List<Fd> relayFds;
        if (table == null && fdStore != null) { // after a crash: the flows, and the downgrades' pairs if any
            st = fromFdStore(StoredTasks.parseFrom(fdStore.payload()), slots, mtu);
            table = fdStore;
            relayState = relay != null ? RelayState.parseFrom(relay.payload()) : RelayState.newBuilder().setFormat(1).build();
            relayFds = relay != null ? relay.fds() : List.of();
        } else if (table == null || relay == null) {
            throw new IllegalArgumentException("expected items " + ITEM + " and " + RELAY_ITEM);
        } else {
            st = BumblebeeState.parseFrom(table.payload());
            relayState = RelayState.parseFrom(relay.payload());
            relayFds = relay.fds();
        }
        if (!st.hasFdNetns() || !st.hasFdTun() || !st.hasFdListen4() || !st.hasFdListen6()) {
            throw new IllegalArgumentException("the Bumblebee state carries no namespace, TUN or listeners");
        }
        if (st.getSlots() != slots) {
            throw new IllegalArgumentException("the running table has " + st.getSlots() + " slots, bumblebee.slots here is "
                    + slots + ": keep it while upgrading in place");
        }
        return new Nat.Inherited(st, table.fds(), relayState, relayFds);
    }

    /** What ends an adopted downgrade whose relay pair ended before the successor started it. */
    interface RelayEnded {
        void ended(Flow f, warren.control.v1.Spliced counts);
    }

    /**
     * A successor's table from the predecessor's state (into {@code slots}, all FREE): every flow in
     * its slot with its fds and counts, each pending request tied to its flow, the downgrades' relay
     * pairs back. Nothing is registered (the table starts paused).
     */
    void adopt(SlotTable slots, Nat.Inherited in, Relay relay, LongFunction<Call> calls,
            BiConsumer<Call, Task> adoptTask, RelayEnded relayEnded) throws warren.fdpass.libc.NativeIoException {
        Flow[] flows = slots.all();
        FlowTableCodec.read(in.state(), in.fds(), System.nanoTime(), flows);
        slots.recount();
        Map<Call, Flow> byCall = new HashMap<>();
        for (int i = flows.length - 1; i >= 0; i--) {
            Flow f = flows[i];
            if (f.live()) {
                f.call = calls.apply(f.callRef);
                if (f.call == null) {
                    throw new IllegalArgumentException("slot " + i + ": no pending request (call ref " + f.callRef + ")");
                }
                byCall.put(f.call, f);
                adoptTask.accept(f.call, f);
            }
        }
        for (Pair p : relay.adopt(in.relayState(), in.relayFds(), calls, (call, a, b, counts, audit) -> {
            Flow f = byCall.get(call);
            a.close();
            b.close();
            if (f != null) {
                f.relay = null;
                relayEnded.ended(f, counts);
            }
        })) {
            Flow f = byCall.get(p.call());
            if (f == null || !f.downgrade || f.state != Flow.ACTIVE) {
                throw new IllegalArgumentException("a relay pair without its active downgrade");
            }
            f.relay = p;
        }
    }

    // ---- crash survival: systemd's fd store (fdstore.proto's StoredTask, item ITEM)

    /** Keeps the namespace, TUN, listeners and every flow in systemd's fd store from now on. */
    void enableFdStore(SdNotify notify, Relay relay) {
        store = new TaskStore(notify, ITEM);
        List<Fd> fds = environmentFds();
        for (int i = 0; i < EXTRAS.size(); i++) {
            notify.fdStore(EXTRAS.get(i), List.of(fds.get(i))); // a second store of the same fd is a no-op
        }
        relay.journal(new warren.daemon.relay.FdStoreJournal(notify, relay, RELAY_ITEM)); // downgrades' pairs
    }

    /** Stores (again) a flow as it is now: its socket(s) and a StoredTask whose payload is its FlowState. */
    void store(Flow f) {
        if (store == null || f.call == null || f.call.task() == null || (f.downgrade && f.state != Flow.ACTIVE)) {
            return; // a downgrade is kept once its relay runs (then as a pair and as this flow)
        }
        FlowState.Builder fs = FlowTableCodec.one(f, System.nanoTime()).setFdFlow(0);
        List<Fd> fds = new ArrayList<>(2);
        fds.add(Fd.adopt(f.flowFd));
        if (f.udpFd >= 0) {
            fs.setFdUdp(1);
            fds.add(Fd.adopt(f.udpFd));
        }
        store.put(f.call, fds, fs.build().toByteString(), f.state == Flow.ACTIVE, "flow");
    }

    /** The task number a live flow is stored under (0: not stored); read before the flow ends. */
    long storedTask(Flow f) {
        return store != null && f.call != null && f.call.task() != null ? f.call.task().number() : 0;
    }

    /** Forgets an ended flow's task, once its answer is queued. */
    void remove(long task) {
        store.remove(task);
    }

    /**
     * The flow table rebuilt after a crash from the fd store's item "fdstore" (the namespace, TUN
     * and listeners as extras, each flow's socket(s) and FlowState).
     */
    static BumblebeeState fromFdStore(StoredTasks stored, int slots, int mtu) {
        List<String> x = stored.getExtrasList();
        BumblebeeState.Builder b = BumblebeeState.newBuilder().setFormat(FlowTableCodec.FORMAT).setSlots(slots).setMtu(mtu);
        for (String need : EXTRAS) {
            if (!x.contains(need)) {
                throw new IllegalArgumentException("no " + need + " in the fd store");
            }
        }
        b.setFdNetns(x.indexOf(EXTRAS.get(0))).setFdTun(x.indexOf(EXTRAS.get(1))).setFdListen4(x.indexOf(EXTRAS.get(2)))
                .setFdListen6(x.indexOf(EXTRAS.get(3)));
        int at = x.size();
        for (int i = 0; i < stored.getTasksCount(); i++) {
            StoredTask st = stored.getTasks(i);
            if (!st.getItem().equals(ITEM)) {
                throw new IllegalArgumentException("a stored task of item " + st.getItem());
            }
            FlowState fs;
            try {
                fs = FlowState.parseFrom(st.getPayload());
            } catch (com.google.protobuf.InvalidProtocolBufferException e) {
                throw new IllegalArgumentException("task " + st.getCall().getTask() + ": " + e.getMessage());
            }
            FlowState.Builder f = fs.toBuilder().setCallRef(st.getCall().getTask()).setIdleMs(0);
            if (fs.hasFdFlow()) {
                f.setFdFlow(at + fs.getFdFlow());
            }
            if (fs.hasFdUdp()) {
                f.setFdUdp(at + fs.getFdUdp());
            }
            b.addFlows(f);
            at += stored.getFdCounts(i);
        }
        return b.build();
    }
}
