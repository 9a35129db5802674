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
    static final String RECOVERED_ITEM = warren.daemon.TaskStore.RECOVERED_ITEM;
    private static final List<String> EXTRAS = List.of(warren.daemon.FdStoreNames.extra("netns"), queueName(0),
            warren.daemon.FdStoreNames.extra("listen4"), warren.daemon.FdStoreNames.extra("listen6"));
    /** The handoff item of every TUN queue in index order (loop 0's export; queue 0 is also the table's fd_tun). */
    static final String QUEUES_ITEM = ITEM + ".queues";

    private final Environment env;
    /** Pre-copy (old process): a copy runs, so the export at the pause is a delta; the environment went in it. */
    private boolean copying;
    private boolean environmentCopied;
    /**
     * Pre-copy (old process), while {@link #copying}: head of this loop's changed list (intrusive
     * through {@link Flow#nextChanged}, each flow once, {@link Flow#listed}): the copies that
     * moved since their copy ({@link FlowCopy#moved}), the flows begun since the copy began
     * ({@link #begun}) and the downgrades connecting when it began. With {@link #allCopied}, the
     * only flows the delta can name.
     */
    private Flow changedHead;
    /**
     * Pre-copy (old process): a {@link #preCopy} went over every slot of this loop without
     * stopping, so each flow not FREE is copied or listed from then on; until then the export at
     * the pause compares every slot, as it did before the list.
     */
    private boolean allCopied;
    /** Flows the last {@link #export} visited (the pause's work; tests and the log). */
    private long exportVisits;
    private TaskStore store; // null: no fd store
    private java.util.concurrent.Executor removeOn = Runnable::run;

    FlowStore(Environment env) {
        this.env = env;
    }

    private List<Fd> environmentFds() {
        return List.of(env.netns, env.queue(0), env.listen4, env.listen6);
    }

    /** The fd store name of TUN queue {@code k}: x.tun (queue 0, as before there were queues), x.tun1, x.tun2... */
    static String queueName(int k) {
        return warren.daemon.FdStoreNames.indexedExtra("tun", k);
    }

    // ---- the handoff

    /**
     * A paused table as handoff items: {@link #ITEM} (BumblebeeState with the namespace, TUN,
     * listeners and every flow's fds) and {@link #RELAY_ITEM} (the downgrades' relay pairs). The fds
     * are borrowed until the table is abandoned.
     */
    List<HandoffItem> export(String name, Flow[] flows, Relay relay, ToLongFunction<Call> callRef) {
        return export(name, flows, relay, callRef, true);
    }

    /**
     * The same for one loop's slots; {@code environment}: with the namespace, TUN and listeners
     * (loop 0's), and then also {@link #QUEUES_ITEM}, every TUN queue in index order. Every loop's
     * table is an item {@code name}: a successor merges them.
     */
    List<HandoffItem> export(String name, Flow[] flows, Relay relay, ToLongFunction<Call> callRef, boolean environment) {
        if (copying) { // the successor has the environment and a copy of the flows: what changed since
            List<Integer> raw = new ArrayList<>();
            BumblebeeState state = delta(flows, System.nanoTime(), raw, callRef);
            List<Fd> fds = new ArrayList<>(raw.size());
            for (int fd : raw) {
                fds.add(Fd.adopt(fd)); // views for sending only; never closed
            }
            return List.of(new HandoffItem(name, state.toByteArray(), fds), relay.export(name + ".relay", callRef));
        }
        List<Integer> raw = new ArrayList<>();
        exportVisits = flows.length;
        if (environment) {
            for (Fd fd : environmentFds()) {
                raw.add(fd.get());
            }
        }
        BumblebeeState state = FlowTableCodec.write(flows, env.mtu, System.nanoTime(), raw, callRef).toBuilder()
                .setSlots(env.slots).build();
        if (environment) {
            state = state.toBuilder().setFdNetns(0).setFdTun(1).setFdListen4(2).setFdListen6(3).build();
        }
        List<Fd> fds = new ArrayList<>(raw.size());
        for (int fd : raw) {
            fds.add(Fd.adopt(fd)); // views for sending only; never closed
        }
        List<HandoffItem> items = new ArrayList<>(List.of(new HandoffItem(name, state.toByteArray(), fds),
                relay.export(name + ".relay", callRef)));
        if (environment && env.queues() > 1) {
            List<Fd> queues = new ArrayList<>();
            for (Fd q : env.queueFds()) {
                queues.add(Fd.adopt(q.get())); // views
            }
            items.add(new HandoffItem(QUEUES_ITEM, new byte[0], queues));
        }
        return items;
    }

    /**
     * The pause's delta after a pre-copy ({@link FlowTableCodec#writeDelta}): after a pre-copy that
     * went over every slot, of the listed flows only, in slot order, O(changed); else of every slot
     * of {@code flows} (this loop's). The same delta either way. Fds borrowed into {@code raw}.
     */
    BumblebeeState delta(Flow[] flows, long nowNanos, List<Integer> raw, ToLongFunction<Call> callRef) {
        if (allCopied) { // O(changed): the listed flows, in slot order (the same delta as comparing every slot)
            Flow[] listed = listed();
            exportVisits = listed.length;
            return FlowTableCodec.writeDelta(listed, env.slots, env.mtu, nowNanos, raw, callRef);
        }
        exportVisits = flows.length; // paused before the pre-copy went over every slot: compare them all
        return FlowTableCodec.writeDelta(flows, env.slots, env.mtu, nowNanos, raw, callRef);
    }

    /**
     * Pre-copy (old process, while the table serves): the next flows of {@code flows} not copied
     * yet ({@link FlowCopy#wanted}), whole with their keys and duplicates of their sockets owned by
     * the item, at most about {@code maxFds} fds (and as many flows); with {@code environment}
     * (loop 0) the first chunk also carries duplicates of the namespace, TUN queue 0 and listeners,
     * and item {@link #QUEUES_ITEM} every queue's. Empty when all is copied. From the first call
     * on, {@link #export} writes a delta, until {@link #forgetCopy}. On failure nothing of the
     * chunk stays open (the keys recorded are forgotten when the pre-copy is given up).
     */
    List<HandoffItem> preCopy(String name, Flow[] flows, ToLongFunction<Call> taskRef, int maxFds, boolean environment)
            throws warren.fdpass.libc.NativeIoException {
        if (!copying) { // a successor's adoption leaves its pre-copied flows marked (not visited in its pause)
            changedHead = null;
            for (Flow f : flows) {
                FlowCopy.forget(f);
            }
            for (Flow f : flows) {
                if (f.state != Flow.FREE && !FlowCopy.wanted(f)) {
                    changed(f); // a downgrade still connecting: never copied, whole at the pause
                }
            }
            copying = true;
            allCopied = false;
        }
        List<Fd> fds = new ArrayList<>();
        List<Fd> queues = new ArrayList<>();
        BumblebeeState.Builder b = BumblebeeState.newBuilder().setFormat(FlowTableCodec.FORMAT).setSlots(env.slots)
                .setMtu(env.mtu).setPreCopy(true);
        try {
            if (environment && !environmentCopied) {
                for (Fd fd : environmentFds()) {
                    fds.add(FlowTableCodec.dup(fd.get()));
                }
                b.setFdNetns(0).setFdTun(1).setFdListen4(2).setFdListen6(3);
                if (env.queues() > 1) {
                    for (Fd q : env.queueFds()) {
                        queues.add(FlowTableCodec.dup(q.get()));
                    }
                }
                environmentCopied = true;
            }
            long now = System.nanoTime();
            boolean stopped = false;
            for (Flow f : flows) {
                if (fds.size() + queues.size() + 2 > maxFds || b.getFlowsCount() >= maxFds) {
                    stopped = true;
                    break;
                }
                if (FlowCopy.wanted(f)) {
                    b.addFlows(FlowTableCodec.copy(f, now, fds, taskRef));
                }
            }
            if (!stopped) {
                allCopied = true; // every flow not FREE is copied or listed from now on
            }
        } catch (warren.fdpass.libc.NativeIoException | RuntimeException e) {
            Fd.closeAll(fds);
            Fd.closeAll(queues);
            throw e;
        }
        if (fds.isEmpty() && b.getFlowsCount() == 0) {
            return List.of();
        }
        List<HandoffItem> items = new ArrayList<>(2);
        items.add(new HandoffItem(name, b.build().toByteArray(), fds));
        if (!queues.isEmpty()) {
            items.add(new HandoffItem(QUEUES_ITEM, new byte[0], queues));
        }
        return items;
    }

    /** The pre-copy was given up or the handoff failed: nothing copied, nothing tracked, a whole export again. */
    void forgetCopy(Flow[] flows) {
        if (!copying) {
            return;
        }
        for (Flow f : flows) {
            FlowCopy.forget(f);
        }
        changedHead = null;
        copying = false;
        allCopied = false;
        environmentCopied = false;
    }

    /**
     * {@code f} joins this loop's changed list (once): a watched copy that moved
     * ({@link FlowCopy#moved}), or a flow the delta names whatever it does. The hot path's cold
     * branch: nothing allocated. Loop thread.
     */
    void changed(Flow f) {
        f.watch = false;
        if (!f.listed) {
            f.listed = true;
            f.nextChanged = changedHead;
            changedHead = f;
        }
    }

    /** A flow begins (RESERVED) in this loop: while a pre-copy runs, it is listed (sent whole, or an update if copied later). */
    void begun(Flow f) {
        if (copying) {
            changed(f);
        }
    }

    /** The changed list in slot order (the order of the table, as the delta had it when every slot was compared). */
    private Flow[] listed() {
        int n = 0;
        for (Flow f = changedHead; f != null; f = f.nextChanged) {
            n++;
        }
        Flow[] out = new Flow[n];
        int i = 0;
        for (Flow f = changedHead; f != null; f = f.nextChanged) {
            out[i++] = f;
        }
        java.util.Arrays.sort(out, (a, b) -> Integer.compare(a.slot, b.slot));
        return out;
    }

    /** Flows the last {@link #export} visited: the listed ones after a whole pre-copy, else every slot. */
    long exportVisits() {
        return exportVisits;
    }

    /** True once a pre-copy went over every slot of this loop (the export then visits only the changed list; tests). */
    boolean allCopied() {
        return allCopied;
    }

    /** True from the first pre-copy chunk until {@link #forgetCopy} (tests). */
    boolean copying() {
        return copying;
    }

    /**
     * The predecessor's state from the items a successor receives: {@link #ITEM} and
     * {@link #RELAY_ITEM} after an upgrade in place, or the fd store's "fdstore" (and the relay's
     * journal, if any downgrade was stored) after a crash. Checks it carries the environment and
     * was made with {@code slots} slots (bumblebee.slots must not change across an upgrade).
     */
    static Nat.Inherited inherited(List<HandoffItem> items, int slots, int mtu)
            throws com.google.protobuf.InvalidProtocolBufferException {
        List<HandoffItem> tables = new ArrayList<>();
        List<HandoffItem> relays = new ArrayList<>();
        HandoffItem queues = null;
        HandoffItem fdStore = null;
        for (HandoffItem it : items) {
            if (it.name().equals(ITEM)) {
                tables.add(it);
            } else if (it.name().equals(RELAY_ITEM)) {
                relays.add(it);
            } else if (it.name().equals(QUEUES_ITEM)) {
                queues = it;
            } else if (it.name().equals(RECOVERED_ITEM)) {
                fdStore = it;
            } else {
                throw new IllegalArgumentException("unknown handoff item " + it.name());
            }
        }
        BumblebeeState st;
        List<Fd> fds;
        List<Integer> queueAt = new ArrayList<>(); // indices in fds of queues 1.. (queue 0 is fd_tun)
        if (tables.isEmpty() && fdStore != null) { // after a crash: the flows, and the downgrades' pairs if any
            StoredTasks stored = StoredTasks.parseFrom(fdStore.payload());
            st = fromFdStore(stored, slots, mtu);
            fds = fdStore.fds();
            for (int k = 1; stored.getExtrasList().contains(queueName(k)); k++) {
                queueAt.add(stored.getExtrasList().indexOf(queueName(k)));
            }
        } else if (tables.isEmpty() || relays.isEmpty()) {
            throw new IllegalArgumentException("expected items " + ITEM + " and " + RELAY_ITEM);
        } else {
            // one table per loop of the predecessor, one of them with the environment: merged
            BumblebeeState.Builder merged = null;
            List<BumblebeeState.Builder> parts = new ArrayList<>();
            fds = new ArrayList<>();
            for (HandoffItem t : tables) {
                BumblebeeState part = BumblebeeState.parseFrom(t.payload());
                int off = fds.size();
                fds.addAll(t.fds());
                BumblebeeState.Builder b = part.toBuilder().clearFlows();
                for (FlowState f : part.getFlowsList()) {
                    b.addFlows(offset(f, off));
                }
                if (part.hasFdNetns() && part.hasFdTun() && part.hasFdListen4() && part.hasFdListen6()) {
                    b.setFdNetns(off + part.getFdNetns()).setFdTun(off + part.getFdTun())
                            .setFdListen4(off + part.getFdListen4()).setFdListen6(off + part.getFdListen6());
                    merged = b;
                }
                if (part.getSlots() != slots) {
                    throw new IllegalArgumentException("the running table has " + part.getSlots()
                            + " slots, bumblebee.slots here is " + slots + ": keep it while upgrading in place");
                }
                parts.add(b);
            }
            if (merged == null) {
                throw new IllegalArgumentException("the Bumblebee state carries no namespace, TUN or listeners");
            }
            for (BumblebeeState.Builder b : parts) {
                if (b != merged) {
                    merged.addAllFlows(b.getFlowsList());
                }
            }
            st = merged.build();
            if (queues != null) {
                List<Fd> all = queues.fds();
                for (int k = 1; k < all.size(); k++) {
                    queueAt.add(fds.size());
                    fds.add(all.get(k));
                }
                if (!all.isEmpty()) {
                    all.get(0).close(); // queue 0 came as the table's fd_tun too
                }
            }
        }
        if (!st.hasFdNetns() || !st.hasFdTun() || !st.hasFdListen4() || !st.hasFdListen6()) {
            throw new IllegalArgumentException("the Bumblebee state carries no namespace, TUN or listeners");
        }
        if (st.getSlots() != slots) {
            throw new IllegalArgumentException("the running table has " + st.getSlots() + " slots, bumblebee.slots here is "
                    + slots + ": keep it while upgrading in place");
        }
        List<RelayState> relayStates = new ArrayList<>();
        List<List<Fd>> relayFds = new ArrayList<>();
        for (HandoffItem r : relays) {
            relayStates.add(RelayState.parseFrom(r.payload()));
            relayFds.add(r.fds());
        }
        return new Nat.Inherited(st, fds, queueAt, relayStates, relayFds);
    }

    /** What ends an adopted downgrade whose relay pair ended before the successor started it. */
    interface RelayEnded {
        void ended(Flow f, warren.control.v1.Spliced counts);
    }

    /**
     * A successor's table from the predecessor's state (into {@code table}, all FREE, shared by the
     * loops' {@code slots}): every flow in its slot with its fds and counts, each pending request
     * tied to its flow, the downgrades' relay pairs back on the relay of their flow's loop (the
     * slot's owner under this process's number of loops, whatever the predecessor's was; the
     * relays are paused, so their pairs wait for the resume). Registering the flows is the Nats'
     * ({@link Nat#adopt}). Before the loops run.
     */
    static void adopt(Flow[] table, SlotTable[] slots, Nat.Inherited in, Relay[] relays, LongFunction<Call> calls,
            BiConsumer<Call, Task> adoptTask, RelayEnded[] relayEnded) throws warren.fdpass.libc.NativeIoException {
        FlowTableCodec.read(in.state(), in.fds(), System.nanoTime(), table);
        for (SlotTable s : slots) {
            s.recount();
        }
        tieUp(table, slots.length, in.relayStates(), in.relayFds(), relays, calls, adoptTask, relayEnded);
    }

    /**
     * The adopted table's live flows tied to their calls (a TCP upgrade whose SYN reached the
     * kernel open to the control loop's accept), the downgrades' relay pairs back on the relay of
     * their flow's loop ({@code loops}: this process's).
     */
    static void tieUp(Flow[] table, int loops, List<RelayState> relayStates, List<List<Fd>> relayFds, Relay[] relays,
            LongFunction<Call> calls, BiConsumer<Call, Task> adoptTask, RelayEnded[] relayEnded)
            throws warren.fdpass.libc.NativeIoException {
        Map<Call, Flow> byCall = new HashMap<>();
        for (int i = table.length - 1; i >= 0; i--) {
            Flow f = table[i];
            if (f.live()) {
                tie(f, calls, adoptTask, byCall);
            }
        }
        adoptRelays(loops, relayStates, relayFds, relays, calls, relayEnded, byCall);
    }

    /**
     * A pre-copy's pause (successor): the same as {@link #tieUp} for the flows the delta placed or
     * updated ({@code touched}) and the pre-copied flows no {@link #preAttach} gave a call
     * ({@code unattached}), not the table: the rest were tied in the pre-copy. Each live flow still
     * without a call gets it; every touched flow's accept state follows its state now. Returns the
     * flows and relay pairs visited.
     */
    static long tieDelta(List<Flow> touched, List<Flow> unattached, int loops, List<RelayState> relayStates,
            List<List<Fd>> relayFds, Relay[] relays, LongFunction<Call> calls, BiConsumer<Call, Task> adoptTask,
            RelayEnded[] relayEnded) throws warren.fdpass.libc.NativeIoException {
        Map<Call, Flow> byCall = new HashMap<>();
        long visits = 0;
        for (Flow f : touched) {
            visits++;
            f.accept.set(Flow.ACCEPT_NONE); // an update may have moved it past its handshake
            if (f.live()) {
                if (f.call == null) {
                    tie(f, calls, adoptTask, byCall);
                } else {
                    openAccept(f); // pre-attached, updated
                }
            }
        }
        for (Flow f : unattached) {
            visits++;
            if (f.live() && f.call == null) { // not ended, not placed again whole and tied above
                tie(f, calls, adoptTask, byCall);
            }
        }
        return visits + adoptRelays(loops, relayStates, relayFds, relays, calls, relayEnded, byCall);
    }

    /**
     * Pre-copy, successor, before the pause: each live pre-copied flow in {@code unattached}
     * whose call was pre-copied too ({@code calls}: ControlServer.preCopiedCall, null if not) gets
     * it and its task ({@code attach}: ControlServer.preAdoptTask) now, and leaves the list; so do
     * the quarantined copies (no call). A downgrade stays (its relay pair comes in the pause and
     * finds its flow by call there), as do flows whose calls came later. Returns the flows tied.
     */
    static int preAttach(List<Flow> unattached, LongFunction<Call> calls, BiConsumer<Call, Task> attach) {
        int left = 0;
        int n = 0;
        for (int i = 0; i < unattached.size(); i++) {
            Flow f = unattached.get(i);
            if (!f.live()) {
                continue; // a quarantined copy: no call (an update cannot bring it back to life)
            }
            Call c = f.downgrade || f.call != null ? null : calls.apply(f.callRef);
            if (c == null) {
                unattached.set(left++, f);
                continue;
            }
            f.call = c;
            attach.accept(c, f);
            openAccept(f);
            n++;
        }
        unattached.subList(left, unattached.size()).clear();
        return n;
    }

    /** One live adopted flow given its call ({@code calls} by its ref) and task; refused if it has none. */
    private static void tie(Flow f, LongFunction<Call> calls, BiConsumer<Call, Task> adoptTask, Map<Call, Flow> byCall) {
        f.call = calls.apply(f.callRef);
        if (f.call == null) {
            throw new IllegalArgumentException("slot " + f.slot + ": no pending request (call ref " + f.callRef + ")");
        }
        if (f.downgrade) {
            byCall.put(f.call, f); // only a downgrade has a relay pair (no map entry per upgrade flow)
        }
        adoptTask.accept(f.call, f);
        openAccept(f);
    }

    /** A TCP upgrade whose SYN went to the kernel: the control loop may accept it. */
    private static void openAccept(Flow f) {
        if (f.state == Flow.RESERVED && f.haveKey && !f.udp && !f.downgrade) {
            f.openPort = f.natPort;
            f.accept.set(Flow.ACCEPT_OPEN);
        }
    }

    /** The downgrades' relay pairs back on the relay of their flow's loop; returns the pairs. */
    private static long adoptRelays(int loops, List<RelayState> relayStates, List<List<Fd>> relayFds, Relay[] relays,
            LongFunction<Call> calls, RelayEnded[] relayEnded, Map<Call, Flow> byCall)
            throws warren.fdpass.libc.NativeIoException {
        long pairs = 0;
        for (int r = 0; r < relayStates.size(); r++) {
            RelayState st = relayStates.get(r);
            List<Fd> fds = relayFds.get(r);
            Relay.check(st, fds);
            RelayState.Builder[] parts = new RelayState.Builder[loops];
            for (int k = 0; k < loops; k++) {
                parts[k] = RelayState.newBuilder().setFormat(st.getFormat());
            }
            for (warren.handoff.v1.RelayPair rp : st.getPairsList()) {
                pairs++;
                Flow f = byCall.get(calls.apply(rp.getCallRef()));
                if (f == null) {
                    throw new IllegalArgumentException("a relay pair without its active downgrade");
                }
                parts[SlotTable.owner(f.slot, loops)].addPairs(rp);
            }
            for (int k = 0; k < loops; k++) {
                if (k > 0 && parts[k].getPairsCount() == 0) {
                    continue;
                }
                RelayEnded ended = relayEnded[k];
                for (Pair p : relays[k].adopt(parts[k].build(), fds, calls, (call, a, b, counts, audit) -> {
                    Flow f = byCall.get(call);
                    a.close();
                    b.close();
                    if (f != null) {
                        f.relay = null;
                        ended.ended(f, counts);
                    }
                })) {
                    Flow f = byCall.get(p.call());
                    if (f == null || !f.downgrade || f.state != Flow.ACTIVE) {
                        throw new IllegalArgumentException("a relay pair without its active downgrade");
                    }
                    f.relay = p;
                }
            }
        }
        return pairs;
    }

    /** The pause's items after a pre-copy, every loop's merged: table deltas (fd indices into {@code fds}), relays. */
    record Delta(BumblebeeState state, List<Fd> fds, List<RelayState> relayStates, List<List<Fd>> relayFds) {}

    /** Reads the pause's items after a pre-copy: {@link #ITEM} deltas and {@link #RELAY_ITEM}s, nothing else. */
    static Delta delta(List<HandoffItem> items, int slots) throws com.google.protobuf.InvalidProtocolBufferException {
        if (items.isEmpty()) { // nothing changed (the warm-up's rehearsal; a real predecessor sends its items)
            return new Delta(BumblebeeState.newBuilder().setFormat(FlowTableCodec.FORMAT).setSlots(slots).setDelta(true)
                    .build(), List.of(), List.of(), List.of());
        }
        BumblebeeState.Builder merged = null;
        List<Fd> fds = new ArrayList<>();
        List<RelayState> relayStates = new ArrayList<>();
        List<List<Fd>> relayFds = new ArrayList<>();
        for (HandoffItem it : items) {
            if (it.name().equals(RELAY_ITEM)) {
                relayStates.add(RelayState.parseFrom(it.payload()));
                relayFds.add(it.fds());
                continue;
            }
            if (!it.name().equals(ITEM)) {
                throw new IllegalArgumentException("unknown handoff item " + it.name() + " after a pre-copy");
            }
            BumblebeeState part = BumblebeeState.parseFrom(it.payload());
            if (!part.getDelta()) {
                throw new IllegalArgumentException("a full Bumblebee table after a pre-copy (expected a delta)");
            }
            int off = fds.size();
            fds.addAll(it.fds());
            if (merged == null) {
                merged = part.toBuilder().clearFlows();
                merged.clearEnded();
            }
            if (part.getSlots() != merged.getSlots() || part.getFormat() != merged.getFormat()
                    || part.hasFdNetns() || part.hasFdTun() || part.hasFdListen4() || part.hasFdListen6()) {
                throw new IllegalArgumentException("table deltas of different formats or sizes, or with an environment");
            }
            merged.addAllEnded(part.getEndedList());
            for (FlowState f : part.getFlowsList()) {
                merged.addFlows(offset(f, off));
            }
        }
        if (merged == null || relayStates.isEmpty()) {
            throw new IllegalArgumentException("expected items " + ITEM + " and " + RELAY_ITEM + " after a pre-copy");
        }
        return new Delta(merged.build(), fds, relayStates, relayFds);
    }

    /** {@code f} with its fd indices moved by {@code off} (merging items). */
    static FlowState offset(FlowState f, int off) {
        if (off == 0) {
            return f;
        }
        FlowState.Builder fb = f.toBuilder();
        if (f.hasFdFlow()) {
            fb.setFdFlow(off + f.getFdFlow());
        }
        if (f.hasFdUdp()) {
            fb.setFdUdp(off + f.getFdUdp());
        }
        if (f.hasFdInner()) {
            fb.setFdInner(off + f.getFdInner());
        }
        if (f.hasFdSocket()) {
            fb.setFdSocket(off + f.getFdSocket());
        }
        return fb.build();
    }

    /**
     * Refuses a (checked) delta, before anything is applied, if a flow live after it has no call:
     * a flow sent whole, or updated, whose call is not in {@code hasCall} (nor, pre-attached,
     * still {@code tasked}), or a pre-copied flow of {@code unattached} neither ended nor updated
     * whose call is not in {@code hasCall}; or if a flow it ends (key ended, or updated out of
     * life) was given its call in the pre-copy and that call's task is still {@code tasked} (the
     * state at the pause did not name it gone). O(delta + unattached): the flows tied in the
     * pre-copy and untouched by the delta are not visited.
     */
    static void checkCalls(Flow[] table, BumblebeeState delta, List<Flow> unattached,
            java.util.function.LongPredicate hasCall, java.util.function.Predicate<Call> tasked) {
        java.util.BitSet touched = new java.util.BitSet(table.length);
        for (warren.handoff.v1.FlowCopyKey k : delta.getEndedList()) {
            touched.set(k.getSlot());
            endedWithCall(table[k.getSlot()], tasked);
        }
        for (FlowState s : delta.getFlowsList()) {
            touched.set(s.getSlot());
            boolean live = s.getStateValue() == Flow.RESERVED || s.getStateValue() == Flow.ACTIVE;
            Flow f = table[s.getSlot()];
            if (s.getUpdate() && f.call != null) { // given its call in the pre-copy
                if (!live) {
                    endedWithCall(f, tasked);
                } else if (!tasked.test(f.call)) {
                    throw new IllegalArgumentException("slot " + s.getSlot() + ": live, but its request (task "
                            + f.callRef + ") is gone in the state handed over");
                }
                continue;
            }
            long ref = s.getUpdate() ? f.callRef : s.getCallRef();
            if (live && !hasCall.test(ref)) {
                throw new IllegalArgumentException("slot " + s.getSlot() + ": no pending request (call ref " + ref + ")");
            }
        }
        for (Flow f : unattached) {
            if (f.copied && f.live() && !touched.get(f.slot) && !hasCall.test(f.callRef)) {
                throw new IllegalArgumentException("pre-copied slot " + f.slot + ": no pending request (call ref "
                        + f.callRef + ")");
            }
        }
    }

    private static void endedWithCall(Flow f, java.util.function.Predicate<Call> tasked) {
        if (f.call != null && tasked.test(f.call)) {
            throw new IllegalArgumentException("pre-copied slot " + f.slot + " ended, but its request (task " + f.callRef
                    + ") is still pending in the state handed over");
        }
    }

    // ---- crash survival: systemd's fd store (fdstore.proto's StoredTask, item ITEM)

    /** Keeps the namespace, TUN, listeners and every flow in systemd's fd store from now on. */
    void enableFdStore(SdNotify notify, Relay relay) {
        enableFdStore(notify, relay, true, 0, Runnable::run);
    }

    /**
     * The same for one loop's flows: with {@code environment} (loop 0) the namespace, listeners and
     * every TUN queue by index ({@link #queueName}), and the names of queues up to
     * {@code storedQueues} this process no longer has removed; a pair leaves the store through
     * {@code removeOn} (the control loop, after its answer).
     */
    void enableFdStore(SdNotify notify, Relay relay, boolean environment, int storedQueues,
            java.util.concurrent.Executor removeOn) {
        store = new TaskStore(notify, ITEM);
        this.removeOn = removeOn;
        if (environment) {
            List<Fd> fds = environmentFds();
            for (int i = 0; i < EXTRAS.size(); i++) {
                notify.fdStore(EXTRAS.get(i), List.of(fds.get(i))); // a second store of the same fd is a no-op
            }
            for (int k = 1; k < env.queues(); k++) {
                notify.fdStore(queueName(k), List.of(env.queue(k)));
            }
            for (int k = Math.max(1, env.queues()); k < storedQueues; k++) {
                notify.fdStoreRemove(queueName(k));
            }
        }
        relay.journal(new warren.daemon.relay.FdStoreJournal(notify, relay, RELAY_ITEM, removeOn)); // downgrades' pairs
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
        TaskStore s = store;
        removeOn.execute(() -> s.remove(task)); // another loop's: on the control loop, behind the answer
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
