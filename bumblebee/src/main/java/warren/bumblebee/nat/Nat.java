package warren.bumblebee.nat;

import java.util.List;
import java.util.function.BiConsumer;
import java.util.function.LongFunction;
import java.util.function.ToLongFunction;
import warren.bumblebee.env.Environment;
import warren.daemon.audit.JsonLine;
import warren.daemon.control.Call;
import warren.daemon.handoff.HandoffItem;
import warren.daemon.loop.EventLoop;
import warren.daemon.metrics.Counters;
import warren.daemon.relay.Relay;
import warren.daemon.task.Task;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.handoff.v1.BumblebeeState;
import warren.handoff.v1.RelayState;
import warren.packet.FlowKey;

/**
 * The NAT between flow sockets and the TUN, on one event loop: it builds its parts, registers the
 * TUN and the listeners, and is what the request handler sees. The parts, each with one job:
 * {@link SlotTable} (slots, free stack, quarantine, {@link AddressPlan}), {@link FlowPath} (flow
 * socket to TUN), {@link TunPath} (TUN to flow socket), {@link TcpUpgrade}, {@link UdpUpgrade},
 * {@link Downgrade}, {@link Lifecycle} (timers and the one end of a flow, typed {@link FlowEnd}),
 * {@link FlowStore} (handoff and fd store, encoded by {@link FlowTableCodec}) and
 * {@link NatCounters}. Every registration (TUN queue, listeners, flow, datagram and downgrade
 * inner sockets) and every timer (handshake, idle, linger, quarantine) of the NAT is in its
 * loop's {@link EventLoop.Group} ({@link #group}), so pausing for an upgrade in place is the
 * group's pause, O(1), and resuming delivers what came meanwhile. Loop thread unless said
 * otherwise.
 *
 * <p>With N event loops ({@link #onLoops}) there is one Nat per loop over one shared table of
 * slots: loop k owns the slots with {@code (slot + 1) % N == k} and reads and writes TUN queue k,
 * where the device's steering program puts every packet the kernel sends to one of its slots
 * (without the program, a packet read on another loop's queue is handed over to the owner:
 * {@link Handover}).
 * Requests arrive on the control loop (loop 0): {@link #upgrade} and {@link #downgrade} of another
 * loop's Nat claim the slot and start the task there, then post the rest to the owner. The
 * listeners are loop 0's: a connection to another loop's slot is answered there and its flow
 * activated by a message to the owner (once per flow).
 */
public final class Nat {
    /** Settings from BumblebeeConfig. */
    public record Settings(long quarantineMillis, long idleMillis, long handshakeMillis, long lingerMillis) {}

    /** The fd store item name of Bumblebee's flows (and the handoff item of its table). */
    public static final String STORE_ITEM = FlowStore.ITEM;
    /** The items {@link #preCopy} makes (the table's; loop 0's first chunk, with several TUN queues, also theirs). */
    public static final java.util.List<String> PRE_COPY_ITEMS = java.util.List.of(FlowStore.ITEM, FlowStore.QUEUES_ITEM);

    private final EventLoop loop;
    private final int index;
    private final Environment env;
    private final Relay relay;
    private final SlotTable slots;
    private final NatCounters counters;
    private final FlowStore store;
    private final Lifecycle life;
    private final UdpUpgrade udp;
    private final FlowPath flowPath;
    private final TunPath tunPath;
    private final TcpUpgrade tcp;
    private final Downgrade downgrade;
    /** This loop's end of the hand-over between loops (null: one loop, or a steering program). */
    private final Handover handover;
    /** Every registration and timer of this loop's NAT: paused and resumed together. */
    private final EventLoop.Group group;
    private boolean abandoned;

    public Nat(EventLoop loop, Environment env, Counters counters, Settings settings) throws NativeIoException {
        this(loop, env, counters, settings, false, false);
    }

    /**
     * With {@code paused}, the NAT starts paused (a successor adopting a table): its group and
     * relay hold everything until {@link #resume}. With {@code fdStore}, the downgrades' relay
     * pins its pipes to each pair, so a pair kept in systemd's fd store keeps its bytes in flight
     * ({@link #enableFdStore}).
     */
    public Nat(EventLoop loop, Environment env, Counters counters, Settings settings, boolean paused, boolean fdStore)
            throws NativeIoException {
        this(loop, 0, SlotTable.table(env.slots), 1, env, counters, settings, paused, fdStore, null, null);
    }

    private Nat(EventLoop loop, int index, Flow[] table, int loops, Environment env, Counters counters,
            Settings settings, boolean paused, boolean fdStore, Nat[] all, Handover handover) throws NativeIoException {
        this.loop = loop;
        this.index = index;
        this.env = env;
        this.handover = handover;
        this.group = loop.group("bumblebee-nat-" + index);
        this.relay = new Relay(loop, index, counters, new Relay.Settings(256 << 10, 64, 4096, fdStore));
        if (paused) { // before anything is registered or adopted: resume starts it all, as after a pause
            group.pause();
            relay.pause();
        }
        this.slots = new SlotTable(loop, group, table, index, loops, env.mtu, settings.quarantineMillis());
        this.counters = new NatCounters(counters);
        this.store = new FlowStore(env);
        this.life = new Lifecycle(loop, group, index, settings, slots, this.counters, store);
        this.udp = new UdpUpgrade(loop, group, this.counters, life, store);
        Fd queue = env.queue(Math.min(index, env.queues() - 1)); // beyond the queues (the helper's TUN): write queue 0
        this.flowPath = new FlowPath(loop, group, queue, env.vnetHdr(), env.mtu, this.counters, life, udp);
        this.tunPath = new TunPath(queue, env.vnetHdr(), env.mtu, slots, this.counters, life,
                handover == null ? null : handover.out);
        this.tcp = new TcpUpgrade(index, loops, slots, this.counters, life, flowPath, store,
                all == null ? null : k -> all[k].tcp);
        this.downgrade = new Downgrade(loop, group, env, relay, slots, this.counters, life, flowPath, store,
                settings.idleMillis());
        registerEnvironment();
    }

    /**
     * One Nat per loop of {@code loops} over one table of {@code env.slots} slots (loop k: TUN
     * queue k, slots with {@code (slot + 1) % N == k}); N is {@code env.queues()}, loops beyond it
     * get none. Built on the calling thread before the loops run (each registers its TUN queue,
     * and loop 0 the listeners, in its loop's group, paused or not). With N > 1 and no steering
     * program on the device ({@link Environment#unsteeredWhy}), the loops hand packets read on a
     * queue that is not their slot's owner's over to the owner ({@link Handover}); their eventfds
     * are closed by {@link #close}. Then every loop runs a Nat even if the TUN has fewer queues
     * (the helper's TUN has one): loop k >= queues reads none and writes queue 0, its slots'
     * packets are read by the others and handed over.
     */
    public static Nat[] onLoops(warren.daemon.loop.Loops loops, Environment env, Counters counters, Settings settings,
            boolean paused, boolean fdStore) throws NativeIoException {
        int n = env.unsteeredWhy() != null ? loops.size() : Math.min(loops.size(), env.queues());
        Flow[] table = SlotTable.table(env.slots);
        Nat[] nats = new Nat[n];
        Handover[] handovers = n > 1 && env.unsteeredWhy() != null ? Handover.build(n, env.mtu) : null;
        try {
            for (int k = 0; k < n; k++) {
                nats[k] = new Nat(loops.get(k), k, table, n, env, counters, settings, paused, fdStore, nats,
                        handovers == null ? null : handovers[k]);
            }
        } catch (NativeIoException | RuntimeException e) {
            if (handovers != null) {
                for (Handover h : handovers) {
                    h.close();
                }
            }
            throw e;
        }
        return nats;
    }

    /** True if this loop hands packets over to (and takes them from) the other loops: no steering program. */
    public boolean handsOver() {
        return handover != null;
    }

    /**
     * What the Nat owns beyond the environment: its hand-over eventfd. After the loops stopped (or
     * never ran); the environment is closed by its owner.
     */
    public void close() {
        if (handover != null) {
            handover.close();
        }
    }

    /** The loop this Nat runs on. */
    public EventLoop eventLoop() {
        return loop;
    }

    /** This loop's NAT group: every registration and timer of it (tests, logs). */
    public EventLoop.Group group() {
        return group;
    }

    /** True between {@link #pause} and {@link #resume} (or from a paused construction to its resume). */
    public boolean paused() {
        return group.paused();
    }

    /** Free slots of this loop's share; any thread (placement). */
    public int freeShared() {
        return slots.freeShared();
    }

    /**
     * This loop's TUN queue, (loop 0) the listeners and (no steering program) the hand-over rings'
     * eventfd, for the NAT's life: a pause holds their events.
     */
    private void registerEnvironment() throws NativeIoException {
        if (index < env.queues()) {
            loop.register(env.queue(index).get(), Native.EPOLLIN, ev -> tunPath.fromTun(), group);
        }
        if (index == 0) {
            loop.register(env.listen4.get(), Native.EPOLLIN, ev -> tcp.accept(env.listen4), group);
            loop.register(env.listen6.get(), Native.EPOLLIN, ev -> tcp.accept(env.listen6), group);
        }
        if (handover != null) {
            handover.register(loop, group, tunPath);
        }
    }

    // ---- requests

    /**
     * Starts an upgrade: claims a slot for the flow socket (taken from the call) and waits for its
     * SYN. Answers RESOURCE_EXHAUSTED when no slot is free.
     */
    public void upgrade(Call call, Fd flowSocket) {
        upgrade(call, flowSocket, 0);
    }

    /** As {@link #upgrade(Call, Fd)}, with the flow's own MTU (0: the TUN's); MSS is clamped to the smaller. */
    public void upgrade(Call call, Fd flowSocket, int mtu) {
        upgrade(call, flowSocket, mtu, false);
    }

    /**
     * As {@link #upgrade(Call, Fd, int)}; with {@code vnetHdr} ({@code Upgrade.vnet_hdr}) every
     * message on the flow socket both ways carries a virtio_net_hdr and may be a super-packet.
     */
    public void upgrade(Call call, Fd flowSocket, int mtu, boolean vnetHdr) {
        if (loop.inLoop()) {
            tcp.upgrade(call, flowSocket, mtu, vnetHdr);
            return;
        }
        // on the control loop for another loop's Nat: the slot and the task here, the rest there
        Flow f = tcp.claim(call, flowSocket, mtu, vnetHdr);
        if (f != null) {
            call.startTask("upgrade", f, new JsonLine().put("slot", f.slot), false);
            loop.execute(() -> tcp.begin(f, flowSocket));
        }
    }

    /**
     * Starts a downgrade: the handed-in {@code socket} becomes a raw flow on {@code flowSocket} with
     * the 5-tuple {@code tuple}; the final answer {@code Downgraded} comes when it ends.
     */
    public void downgrade(Call call, Fd socket, Fd flowSocket, FlowKey tuple) {
        if (loop.inLoop()) {
            downgrade.downgrade(call, socket, flowSocket, tuple);
            return;
        }
        Flow f = downgrade.claim(call, socket, flowSocket);
        if (f != null) {
            call.startTask("downgrade", f, new JsonLine().put("slot", f.slot).put("tuple", tuple.toString()), true);
            loop.execute(() -> downgrade.begin(f, socket, flowSocket, tuple));
        }
    }

    // ---- upgrade in place

    /**
     * Stops everything at a clean point (between packets, the loop runs one handler at a time): the
     * NAT's group is paused, so the TUN, the listeners and every flow's sockets stay in epoll but
     * their events are held (a level-triggered registration is disarmed at its first held event)
     * and timers that come due are held; the downgrades' relay pauses the same way. Nothing is
     * lost: unread packets wait in their sockets and the TUN queue, unaccepted handshakes in the
     * listeners' queues. Requests that reach this loop meanwhile (posted before the control
     * server paused) register and arm into the paused group. O(1), whatever the number of flows.
     */
    public void pause() {
        if (!env.inProcess()) {
            throw new IllegalStateException("bumblebee.environment = helper cannot be upgraded in place: the namespace"
                    + " belongs to the helper process (use in-process, the default as root)");
        }
        group.pause();
        relay.pause();
    }

    /**
     * Undoes {@link #pause} (the handoff failed), or starts an adopted table (built paused, every
     * flow registered and armed into the paused group by {@link #adopt}): the events held meanwhile
     * are delivered, held timers fire in the next cycle, the relay resumes. A pause does not age a
     * flow: idle time and a handshake's period count from this resume at the earliest
     * ({@link Lifecycle#resumed}). Nothing after {@link #abandon}.
     */
    public void resume() throws NativeIoException {
        store.forgetCopy(slots.all()); // a failed handoff's pre-copy (a successor's copies are adopted by now)
        if (!group.paused() || abandoned) {
            return;
        }
        life.resumed(System.nanoTime());
        group.resume();
        relay.resume();
    }

    /**
     * The paused table as handoff items: {@code name} (BumblebeeState with the namespace, TUN,
     * listeners and every flow's fds) and {@code name + ".relay"} (the downgrades' relay pairs).
     * The fds are borrowed until {@link #abandon}.
     */
    public List<HandoffItem> export(String name, ToLongFunction<Call> callRef) {
        if (!group.paused()) {
            throw new IllegalStateException("export needs a paused table");
        }
        return store.export(name, slots.all(), relay, callRef, index == 0);
    }

    /**
     * The handoff committed: forget every flow without ending or answering anything, closing only
     * this process's fds of its sockets (as the relay's abandon does; a warm-up's rehearsal flows
     * would otherwise stay open in the successor). The group stays paused for good (its registrations and timers are the successor's business now;
     * this process exits), so nothing of the table moves here again.
     */
    public void abandon() {
        abandoned = true;
        relay.abandon();
        for (Flow f : slots.all()) {
            if (f.live()) {
                closeCopy(f); // this process's fds only: the successor holds its own of each socket
                if (f.innerFd >= 0) {
                    loop.unregister(f.innerReg);
                    Native.close(f.innerFd);
                    f.innerFd = -1;
                }
                if (f.socket != null) {
                    f.socket.close();
                    f.socket = null;
                }
            }
            f.state = Flow.FREE;
            f.call = null;
        }
    }

    // ---- pre-copy (handoff protocol 2): FlowCopy, FlowStore#preCopy, PreAdoption

    /**
     * Pre-copy, while this loop serves: the next chunk of its flows not copied yet, whole with
     * their keys and duplicates of their sockets (owned by the items), loop 0's first chunk with
     * the environment's; empty when all is copied. The export at the pause is then a delta
     * ({@link FlowTableCodec#writeDelta}). Loop thread.
     */
    public List<HandoffItem> preCopy(String name, ToLongFunction<Call> taskRef, int maxFds) throws NativeIoException {
        if (!env.inProcess()) {
            return List.of(); // the pause refuses such a table (see pause)
        }
        return store.preCopy(name, slots.all(), taskRef, maxFds, index == 0);
    }

    /** The pre-copy was given up: nothing copied, nothing tracked. Loop thread. */
    public void forgetCopy() {
        store.forgetCopy(slots.all());
    }

    /** Flows the last {@link #export} visited: the changed list after a whole pre-copy, else every slot of this loop. */
    public long exportVisits() {
        return store.exportVisits();
    }

    /** True while a pre-copy runs here (tests). */
    public boolean copying() {
        return store.copying();
    }

    /**
     * Flows whose copy this loop holds (old process: copied; successor: pre-copied, and after the
     * adoption those the delta did not touch, until this process's own first pre-copy). Tests.
     */
    public int copies() {
        int n = 0;
        for (Flow f : slots.all()) {
            n += f.copied ? 1 : 0;
        }
        return n;
    }

    /**
     * Successor, before the loops run: one pre-copy chunk ({@link FlowTableCodec#checkCopy}ed
     * whole first: a refused one takes nothing) into the shared table of {@code nats} (built
     * paused), each flow in its slot's owner's table, its sockets registered and its timer armed
     * in the owner's paused group, held as a copy (its call comes with {@link #preAttach}, or the
     * delta), and added to {@code placed}. Returns the flows placed.
     */
    static int preAdopt(Nat[] nats, BumblebeeState chunk, List<Fd> fds, List<Flow> placed)
            throws NativeIoException {
        Flow[] table = nats[0].slots.table();
        FlowTableCodec.checkCopy(chunk, fds, table, true);
        long now = System.nanoTime();
        for (warren.handoff.v1.FlowState s : chunk.getFlowsList()) {
            Flow f = table[s.getSlot()];
            FlowTableCodec.readOne(s, fds, now, f);
            f.generation = s.getGeneration();
            f.copied = true;
            f.copiedGen = s.getGeneration();
            nats[SlotTable.owner(f.slot, nats.length)].place(f);
            placed.add(f);
        }
        for (Nat n : nats) {
            n.slots.recount(); // O(slots) per chunk, while the predecessor serves
        }
        return chunk.getFlowsCount();
    }

    /**
     * Successor, after each pre-copy chunk, before the pause: every live flow of {@code unattached}
     * (placed, no call yet) whose call was pre-copied gets it and its task now
     * ({@link FlowStore#preAttach}), so that the pause ties only what came or changed since.
     * Returns the flows tied.
     */
    static int preAttach(List<Flow> unattached, LongFunction<Call> calls, BiConsumer<Call, Task> attach) {
        return FlowStore.preAttach(unattached, calls, attach);
    }

    /**
     * Successor, the pause's delta after a pre-copy ({@code items}: every loop's table delta and
     * relay item): checked whole first (keys, updates, slots, fds, and that every flow left live
     * has its call, in {@code calls} or tied in the pre-copy and still {@code tasked}, and that no
     * flow it ends holds a call still {@code tasked}); then the ended copies are closed and freed,
     * updates applied (a copy that ended meanwhile closes its duplicates and rests in quarantine; a
     * live one's timer starts over for its state), flows begun since placed, each flow the delta
     * touched and each of {@code unattached} (pre-copied, not tied in the pre-copy) tied to its
     * call, the downgrades' relay pairs adopted. O(delta + unattached + loops): the flows tied in
     * the pre-copy that did not change are not visited, their copy marks stay (the next pre-copy
     * clears them first, {@link FlowStore#preCopy}). Returns the flows and relay pairs visited.
     */
    static long adoptDelta(Nat[] nats, List<HandoffItem> items, LongFunction<Call> calls,
            BiConsumer<Call, Task> adoptTask, List<Flow> unattached, java.util.function.Predicate<Call> tasked)
            throws Exception {
        Flow[] table = nats[0].slots.table();
        FlowStore.Delta d = FlowStore.delta(items, table.length);
        FlowTableCodec.checkCopy(d.state(), d.fds(), table, false);
        FlowStore.checkCalls(table, d.state(), unattached, ref -> calls.apply(ref) != null, tasked);
        long now = System.nanoTime();
        long visits = 0;
        for (warren.handoff.v1.FlowCopyKey k : d.state().getEndedList()) {
            visits++;
            Flow f = table[k.getSlot()];
            nats[SlotTable.owner(f.slot, nats.length)].dropCopy(f);
        }
        List<Flow> touched = new java.util.ArrayList<>(d.state().getFlowsCount());
        for (warren.handoff.v1.FlowState s : d.state().getFlowsList()) {
            Flow f = table[s.getSlot()];
            Nat owner = nats[SlotTable.owner(f.slot, nats.length)];
            int was = f.state;
            if (s.getUpdate()) {
                owner.update(f, s, d.fds(), now);
            } else {
                FlowTableCodec.readOne(s, d.fds(), now, f);
                owner.place(f);
            }
            owner.slots.moved(f, was);
            touched.add(f);
        }
        for (Flow f : touched) {
            FlowCopy.forget(f);
        }
        Relay[] relays = new Relay[nats.length];
        FlowStore.RelayEnded[] ended = new FlowStore.RelayEnded[nats.length];
        for (int k = 0; k < nats.length; k++) {
            relays[k] = nats[k].relay;
            ended[k] = nats[k].downgrade::relayEnded;
        }
        visits += FlowStore.tieDelta(touched, unattached, nats.length, d.relayStates(), d.relayFds(), relays, calls,
                adoptTask, ended);
        unattached.clear();
        return visits;
    }

    /** A placed flow's sockets into this loop's (paused) group and its timer: its state's, starting over. */
    private void place(Flow f) throws NativeIoException {
        if (f.live()) {
            if (f.flowFd >= 0) {
                flowPath.register(f);
            }
            if (f.udpFd >= 0) {
                udp.register(f);
            }
            if (f.innerFd >= 0) {
                downgrade.registerInner(f);
            }
            life.rearm(f);
        } else if (f.state == Flow.QUARANTINED) {
            slots.armQuarantine(f);
        }
    }

    /** Successor: an update of a held copy; the copy's sockets go if it ended, its timer starts over. */
    private void update(Flow f, warren.handoff.v1.FlowState s, List<Fd> fds, long now) throws NativeIoException {
        boolean hadUdp = f.udpFd >= 0;
        cancelTimers(f);
        FlowTableCodec.applyUpdate(s, fds, now, f);
        if (!f.live()) {
            closeCopy(f);
            f.call = null; // a call tied in the pre-copy is gone (checkCalls), its task forgotten
            slots.armQuarantine(f);
            return;
        }
        if (f.udpFd >= 0 && !hadUdp) {
            udp.register(f);
        }
        life.rearm(f);
    }

    /** Successor: a held copy whose flow ended before the pause (slot freed or reused): closed, FREE. */
    private void dropCopy(Flow f) {
        cancelTimers(f);
        closeCopy(f);
        int was = f.state;
        f.state = Flow.FREE;
        f.call = null; // one tied in the pre-copy is gone (checkCalls), its task forgotten
        f.accept.set(Flow.ACCEPT_NONE);
        f.copied = false;
        slots.moved(f, was);
    }

    private static void cancelTimers(Flow f) {
        if (f.timer != null) {
            f.timer.cancel();
            f.timer = null;
        }
        if (f.quarantine != null) {
            f.quarantine.cancel();
            f.quarantine = null;
        }
    }

    /** A copy's duplicates unregistered and closed (nothing answered: the call is the old process's business). */
    private void closeCopy(Flow f) {
        if (f.flowFd >= 0) {
            loop.unregister(f.flowReg);
            Native.close(f.flowFd);
        }
        if (f.udpFd >= 0) {
            loop.unregister(f.udpReg);
            Native.close(f.udpFd);
        }
        f.flowFd = -1;
        f.flowReg = -1;
        f.udpFd = -1;
        f.udpReg = -1;
    }

    /**
     * What a successor inherits: the table's state with its fds (the environment's among them) and
     * the downgrades' relay pairs with theirs.
     */
    public record Inherited(BumblebeeState state, List<Fd> fds, List<Integer> queueAt, List<RelayState> relayStates,
            List<List<Fd>> relayFds) {
        /**
         * The predecessor's namespace, TUN queues and listeners, moved out of the received fds;
         * bb0 keeps its format (TUNGETIFF: with or without IFF_VNET_HDR, whatever this
         * process's {@code bumblebee.tun_offload}).
         */
        public Environment environment() throws NativeIoException {
            List<Fd> queues = new java.util.ArrayList<>();
            queues.add(fds.get(state.getFdTun()).transfer());
            for (int at : queueAt) {
                queues.add(fds.get(at).transfer());
            }
            return Environment.adopt(fds.get(state.getFdNetns()).transfer(), queues,
                    fds.get(state.getFdListen4()).transfer(), fds.get(state.getFdListen6()).transfer(), state.getMtu(),
                    state.getSlots());
        }

        /** The TUN queues the predecessor had. */
        public int queues() {
            return 1 + queueAt.size();
        }
    }

    /**
     * Reads what a successor received (the handoff's items, or fd store recovery's after a crash);
     * IllegalArgumentException if it is not a Bumblebee table of {@code slots} slots.
     */
    public static Inherited inherited(List<HandoffItem> items, int slots, int mtu)
            throws com.google.protobuf.InvalidProtocolBufferException {
        return FlowStore.inherited(items, slots, mtu);
    }

    /**
     * A successor's table from the predecessor's state (this Nat built paused on the adopted
     * environment): every flow in its slot with its fds and counts, each pending request tied to
     * its flow, the downgrades' relay pairs back; every flow's sockets registered and its timer
     * armed in the paused group, so that {@link #resume} starts it. Before the successor's loop
     * runs, on the calling thread.
     */
    public void adopt(Inherited in, LongFunction<Call> calls, BiConsumer<Call, Task> adoptTask)
            throws NativeIoException {
        adopt(new Nat[] {this}, in, calls, adoptTask);
    }

    /**
     * The same for the Nats of every loop ({@link #onLoops}, built paused): each flow goes to its
     * slot's owner under this process's number of loops, whatever the predecessor's was.
     */
    public static void adopt(Nat[] nats, Inherited in, LongFunction<Call> calls, BiConsumer<Call, Task> adoptTask)
            throws NativeIoException {
        SlotTable[] tables = new SlotTable[nats.length];
        Relay[] relays = new Relay[nats.length];
        FlowStore.RelayEnded[] ended = new FlowStore.RelayEnded[nats.length];
        for (int k = 0; k < nats.length; k++) {
            tables[k] = nats[k].slots;
            relays[k] = nats[k].relay;
            ended[k] = nats[k].downgrade::relayEnded;
        }
        for (Nat n : nats) {
            if (!n.group.paused()) {
                throw new IllegalStateException("adopt needs the tables built paused");
            }
        }
        FlowStore.adopt(nats[0].slots.table(), tables, in, relays, calls, adoptTask, ended);
        for (Nat n : nats) {
            n.armAdopted();
        }
    }

    /**
     * The adopted flows of this loop into its paused group: each live flow's sockets registered
     * and its timer armed (its handshake, idle or linger period starts over), each quarantined
     * slot's quarantine. Their events and timers wait for {@link #resume}.
     */
    private void armAdopted() throws NativeIoException {
        for (Flow f : slots.all()) {
            place(f);
        }
    }

    // ---- crash survival: systemd's fd store

    /** Keeps the namespace, TUN, listeners and every upgrade flow in systemd's fd store from now on. */
    public void enableFdStore(warren.systemd.SdNotify notify) {
        store.enableFdStore(notify, relay);
    }

    /**
     * The same for this loop's flows: loop 0 also stores the namespace, listeners and TUN queues
     * (and forgets stored queues from {@code env.queues()} up to {@code storedQueues});
     * {@code control} is the control loop, where another loop's stored entries are removed.
     */
    public void enableFdStore(warren.systemd.SdNotify notify, int storedQueues, EventLoop control) {
        store.enableFdStore(notify, relay, index == 0, storedQueues, index == 0 ? Runnable::run : control::execute);
    }

    // ---- observation

    /**
     * The NAT's part of a metrics sample: slots by state, the bytes of live flows (so the byte
     * counters move while flows last) and the downgrades' relay. Loop thread, at scrape time.
     */
    public void sample(warren.daemon.metrics.Sample s) {
        long out = 0;
        long in = 0;
        for (Flow f : slots.all()) {
            if (f.live()) {
                out += f.bytesIn; // Flow's "in" is flow -> kernel: out of the socket handed in
                in += f.bytesOut;
            }
        }
        s.addCounter(NatCounters.BYTES_OUT, out);
        s.addCounter(NatCounters.BYTES_IN, in);
        slots.sample(s);
        relay.sample(s);
    }

    /** This loop's slots holding a live (RESERVED or ACTIVE) flow. Tests; loop thread (or the loop not running). */
    public int liveFlows() {
        int n = 0;
        for (Flow f : slots.all()) {
            n += f.live() ? 1 : 0;
        }
        return n;
    }

    public int slotsFree() {
        return slots.free();
    }

    /** Removes the fd store's TUN queues {@code from}..{@code to - 1} (a successor with fewer loops). */
    public static void forgetStoredQueues(warren.systemd.SdNotify notify, int from, int to) {
        for (int k = Math.max(1, from); k < to; k++) {
            notify.fdStoreRemove(FlowStore.queueName(k));
        }
    }

    /** The loop that owns {@code slot} among {@code loops}. */
    public static int ownerOf(int slot, int loops) {
        return SlotTable.owner(slot, loops);
    }

    public int slotsQuarantined() {
        return slots.quarantined();
    }
}
