package warren.bumblebee;

import java.util.Set;
import warren.bumblebee.env.Environment;
import warren.bumblebee.nat.Nat;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.daemon.Daemon;
import warren.daemon.config.Config;
import warren.daemon.control.Call;
import warren.daemon.control.RequestHandler;
import warren.fdpass.Fd;
import warren.fdpass.FdInfo;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * Serves {@code Upgrade}: checks the flow socket (an AF_UNIX SOCK_SEQPACKET or SOCK_DGRAM socket:
 * one packet per message) and hands it to the {@link Nat}.
 */
public final class UpgradeHandler implements RequestHandler, warren.daemon.handoff.Handoffable {
    private static final String ITEM = Nat.STORE_ITEM; // the handoff item of the table (and its relay's, + ".relay")
    private final Daemon daemon;
    private Nat[] nats;      // one per loop with a TUN queue; null in a successor until adopt
    private Environment env;
    private int storedQueues = 1; // the TUN queues the predecessor had (the fd store forgets the extra ones)
    private warren.bumblebee.nat.PreAdoption pre; // a successor's pre-copy, until the delta is adopted
    private long adoptVisits; // flows and relay pairs the last adoption of a delta visited (tests, the log)
    private long rehearsed; // warm-up: the flows its rehearsal pre-adopted and took through a delta (tests)

    public UpgradeHandler(Daemon d) throws Exception {
        this.daemon = d;
        if (d.warmUp()) { // tables of its own to rehearse a successor's path on (rehearsalItems), on no namespace
            Config c = d.config();
            this.env = Environment.detached(c.get(BumblebeeConfig.MTU).intValue(), c.get(BumblebeeConfig.SLOTS).intValue());
            try {
                this.nats = Nat.onLoops(d.loops(), env, d.counters(), settings(c), false, false);
            } catch (Exception e) {
                env.close();
                throw e;
            }
            return;
        }

        if (d.successor()) {
            return; // the namespace, TUN, listeners and table come from the predecessor
        }
        Config c = d.config();
        this.env = Environment.create(c.get(BumblebeeConfig.ENVIRONMENT), c.get(BumblebeeConfig.MTU).intValue(),
                c.get(BumblebeeConfig.SLOTS).intValue(), d.loops().size(), loadSteering(c),
                c.get(BumblebeeConfig.TUN_OFFLOAD));
        try {
            this.nats = Nat.onLoops(d.loops(), env, d.counters(), settings(c), false, survivesCrashes());
        } catch (Exception e) {
            env.close();
            throw e;
        }
        started();
        if (survivesCrashes()) {
            enableFdStore();
        }
    }

    /** Probes, and one line (and a counter in Status) if the loops asked for cannot all be used. */
    private void started() {
        for (Nat n : nats) {
            daemon.metrics().probe(n.eventLoop(), n::sample);
        }
        int loops = daemon.loops().size();
        if (nats.length < loops) {
            daemon.counters().increment("errors.tun_steering_unavailable");
            warren.daemon.Log.warn("threads = " + loops + ": Bumblebee runs its NAT on " + nats.length
                    + " event loop(s): " + env.oneQueueWhy() + " (docs/bumblebee.md, Threads)");
        } else if (loops > 1 && Environment.STEERING_OFF.equals(env.unsteeredWhy())) {
            warren.daemon.Log.info("Bumblebee on " + loops + " event loops: TUN " + Environment.TUN + " with " + loops
                    + " queues without a steering program (" + Environment.STEERING_OFF + "): packets read on a loop"
                    + " that does not own their slot are handed over to the owner (handover.packets)");
        } else if (loops > 1 && env.unsteeredWhy() != null) {
            daemon.counters().increment("errors.tun_steering_unavailable");
            warren.daemon.Log.warn("threads = " + loops + ": TUN " + Environment.TUN + " steering unavailable ("
                    + env.unsteeredWhy() + "), packets handed over between loops: a packet read on a loop that does"
                    + " not own its slot goes through a ring to the owner (handover.packets; docs/bumblebee.md, Threads)");
        } else if (loops > 1) {
            warren.daemon.Log.info("Bumblebee on " + loops + " event loops: TUN " + Environment.TUN + " with " + loops
                    + " queues, the kernel's packets steered to the owner of their slot");
        }
    }

    private void enableFdStore() {
        for (Nat n : nats) {
            n.enableFdStore(daemon.notifier(), storedQueues, daemon.loop());
        }
    }

    /** Under systemd (systemd.fd_store) with the namespace in this process (not the helper's). */
    @Override
    public boolean survivesCrashes() {
        return daemon.fdStore() && (env == null || env.inProcess());
    }

    /** {@code bumblebee.tun_steering}: auto loads the steering program (hand-over if that fails), off never. */
    private static boolean loadSteering(Config c) {
        return !"off".equals(c.get(BumblebeeConfig.TUN_STEERING));
    }

    private static Nat.Settings settings(Config c) {
        return new Nat.Settings(c.get(BumblebeeConfig.QUARANTINE), c.get(BumblebeeConfig.IDLE_TIMEOUT),
                c.get(BumblebeeConfig.HANDSHAKE_TIMEOUT), c.get(BumblebeeConfig.CLOSE_LINGER));
    }

    /** The namespace, TUN and listeners go once every flow has ended. */
    @Override
    public void close() {
        if (nats != null) {
            for (Nat n : nats) {
                n.close();
            }
        }
        if (env != null) {
            env.close();
        }
    }

    /** Every loop's Nat (tests: pause and resume them as the upgrade coordinator does). */
    Nat[] nats() {
        return nats;
    }

    /** The loop's Nat with the most free slots (the first of equals: with one loop, always loop 0's). */
    private Nat mostFree() {
        Nat best = nats[0];
        int most = best.freeShared();
        for (int i = 1; i < nats.length; i++) {
            int f = nats[i].freeShared();
            if (f > most) {
                best = nats[i];
                most = f;
            }
        }
        return best;
    }

    // ---- upgrade in place: the environment and the flow/NAT table are the whole state; each loop
    // pauses and exports its own slots (item ITEM each, loop 0's with the environment), a successor
    // merges them and gives every flow to its slot's owner under its own number of loops

    @Override
    public int stateVersion() {
        return 1;
    }

    @Override
    public java.util.List<Integer> acceptsStateVersions() {
        return java.util.List.of(1);
    }

    @Override
    public void pauseLoop(int index) {
        if (index < nats.length) {
            nats[index].pause();
        }
    }

    @Override
    public java.util.List<warren.daemon.handoff.HandoffItem> exportLoop(int index,
            java.util.function.ToLongFunction<Call> callRef) {
        if (index >= nats.length) {
            return java.util.List.of();
        }
        nats[index].pause();
        boolean delta = nats[index].copying();
        long t0 = System.nanoTime();
        java.util.List<warren.daemon.handoff.HandoffItem> items = nats[index].export(ITEM, callRef);
        if (delta && !daemon.warmUp()) {
            warren.daemon.Log.info(String.format("upgrade: loop %d's table delta written in %.1f ms (%d flows visited)",
                    index, (System.nanoTime() - t0) / 1e6, nats[index].exportVisits()));
        }
        return items;
    }

    /** Flows the last export of every loop visited (old side: the changed lists after a pre-copy). Tests. */
    long exportVisits() {
        long n = 0;
        for (Nat nat : nats) {
            n += nat.exportVisits();
        }
        return n;
    }

    /** Warm-up: the flows its rehearsal pre-adopted and took through a delta (0: it rehearsed nothing). Tests. */
    long rehearsed() {
        return rehearsed;
    }

    @Override
    public void resumeLoop(int index) throws NativeIoException {
        if (index < nats.length) {
            nats[index].resume();
        }
    }

    @Override
    public void abandonLoop(int index) {
        if (index < nats.length) {
            nats[index].abandon();
        }
    }

    /** Every loop at once, on the calling thread (a daemon whose loops do not run). */
    @Override
    public java.util.List<warren.daemon.handoff.HandoffItem> pauseAndExport(
            java.util.function.ToLongFunction<Call> callRef) {
        java.util.List<warren.daemon.handoff.HandoffItem> items = new java.util.ArrayList<>();
        for (int i = 0; i < nats.length; i++) {
            items.addAll(exportLoop(i, callRef));
        }
        return items;
    }

    @Override
    public void resume() throws NativeIoException {
        for (Nat n : nats) {
            n.resume();
        }
    }

    @Override
    public void abandon() {
        for (Nat n : nats) {
            n.abandon();
        }
    }

    @Override
    public void adopt(int stateVersion, java.util.List<warren.daemon.handoff.HandoffItem> items,
            java.util.function.LongFunction<Call> calls,
            java.util.function.BiConsumer<Call, warren.daemon.task.Task> adoptTask) throws Exception {
        Config c = daemon.config();
        if (pre != null) { // after a pre-copy: the tables hold the copies, the items are the delta
            if (nats == null) {
                if (pre.environment() == null) {
                    throw new IllegalArgumentException("a pre-copy without the Bumblebee environment");
                }
                build(pre.environment(), pre.queues());
            }
            boolean rehearsal = daemon.warmUp() || !daemon.successor(); // tables of its own, no predecessor
            if (items.isEmpty() && rehearsal && pre.placed() > 0) {
                items = rehearsalDelta(); // the warm-up's: a real delta's path, not an empty one's
            }
            long t0 = System.nanoTime();
            warren.daemon.task.TaskRegistry tasks = daemon.tasks();
            adoptVisits = pre.adoptDelta(nats, items, calls, adoptTask,
                    call -> call.task() != null && tasks.byNumber(call.task().number()) == call.task());
            String what = String.format("%d pre-copied flows in %d chunks (%d tied to their calls during the pre-copy),"
                    + " the delta applied in %.1f ms (%d flows and pairs visited)", pre.placed(), pre.chunks(),
                    pre.attached(), (System.nanoTime() - t0) / 1e6, adoptVisits);
            if (daemon.warmUp()) { // not "upgrade:": the bench and people read those lines as a real pause's
                rehearsed = pre.placed();
                warren.daemon.Log.debug("warm-up: Bumblebee's rehearsal adopted " + what);
            } else {
                warren.daemon.Log.info("upgrade: " + what);
            }
            pre = null;
            if (rehearsal) {
                return; // the warm-up's rehearsal on a daemon that started its tables itself
            }
        } else {
            Nat.Inherited in = Nat.inherited(items, c.get(BumblebeeConfig.SLOTS).intValue(),
                    c.get(BumblebeeConfig.MTU).intValue());
            build(in.environment(), in.queues());
            Nat.adopt(nats, in, calls, adoptTask);
        }
        started();
        if (survivesCrashes()) {
            enableFdStore();
        }
    }

    /**
     * A successor's tables, paused, on the predecessor's environment {@code e} of {@code queues}
     * TUN queues: more queues attached for this process's loops (fewer after the commit:
     * {@link #startAdopted}), steered or handing over (a predecessor's rings are not inherited).
     */
    private void build(warren.bumblebee.env.Environment e, int queues) throws Exception {
        Config c = daemon.config();
        env = e;
        storedQueues = queues;
        // steered (the program attached before any queue is added: Environment.steer), or the loops
        // hand packets over (a predecessor's rings are not inherited)
        env.steer(loadSteering(c), daemon.loops().size());
        if (env.resize(daemon.loops().size(), false) < 2) { // more queues now; fewer after the commit (startAdopted)
            env.steer(loadSteering(c)); // a device that could not grow (no IFF_MULTI_QUEUE): one queue, as before
        }
        nats = Nat.onLoops(daemon.loops(), env, daemon.counters(), settings(c), true, survivesCrashes());
    }

    // ---- pre-copy (handoff protocol 2, docs/upgrade.md): each loop's flows copied while it serves

    @Override
    public java.util.List<String> preCopyItems() {
        return Nat.PRE_COPY_ITEMS;
    }

    /** The next chunk of loop {@code index}'s flows (loop 0's first with the environment): Nat.preCopy. */
    @Override
    public java.util.List<warren.daemon.handoff.HandoffItem> preCopyLoop(int index,
            java.util.function.ToLongFunction<Call> taskRef, int maxFds) throws Exception {
        return index < nats.length ? nats[index].preCopy(ITEM, taskRef, maxFds) : java.util.List.of();
    }

    @Override
    public void preCopyAbortedLoop(int index) {
        if (index < nats.length) {
            nats[index].forgetCopy();
        }
    }

    /**
     * Successor: a pre-copy chunk. The environment comes first (loop 0's first chunk); the tables
     * are built paused on it as soon as it came, and every chunk's flows placed into them,
     * registered and armed; with more loops here than the predecessor's TUN queues the chunks wait
     * for the pause ({@link warren.bumblebee.nat.PreAdoption}).
     */
    @Override
    public void preAdopt(int stateVersion, java.util.List<warren.daemon.handoff.HandoffItem> items) throws Exception {
        if (pre == null) {
            pre = new warren.bumblebee.nat.PreAdoption(daemon.config().get(BumblebeeConfig.SLOTS).intValue());
        }
        pre.add(items, nats != null);
        if (nats == null && pre.environment() != null && daemon.loops().size() <= pre.queues()) {
            build(pre.environment(), pre.queues());
        }
        if (nats != null) {
            pre.placeInto(nats);
        }
    }

    /**
     * Successor, after each pre-copy chunk's {@link #preAdopt}: the placed flows whose calls were
     * pre-copied get them and their tasks now (not in the pause); with the chunks kept aside (more
     * loops than the predecessor's queues) nothing is placed yet, and the pause ties them all.
     */
    @Override
    public void preAttach(java.util.function.LongFunction<Call> calls,
            java.util.function.BiConsumer<Call, warren.daemon.task.Task> attach) {
        if (pre != null && nats != null) {
            pre.attach(calls, attach);
        }
    }

    /** Flows and relay pairs the last adoption of a pre-copy's delta visited: O(delta), not O(flows). Tests. */
    long adoptVisits() {
        return adoptVisits;
    }

    @Override
    public void startAdopted() throws Exception {
        int had = env.queues();
        env.resize(nats.length, true); // the predecessor's extra queues detached and closed (their unread packets go)
        if (survivesCrashes()) {
            Nat.forgetStoredQueues(daemon.notifier(), env.queues(), had);
        }
        for (Nat n : nats) {
            n.resume();
        }
    }

    /**
     * The warm-up's rehearsal (a throwaway daemon of its own: tables built on
     * {@link Environment#detached}, or a serving daemon's own, tests): one
     * pre-copy chunk of {@code n} live flows over {@code fds} (at most the table's slots), every
     * other one a UDP flow with its datagram socket, the rest TCP with a flow socket only (the
     * unused fds stay the caller's), call refs 1..n. The warm-up gives it to {@link #preAdopt},
     * an empty delta to {@link #adopt}, then pauses, exports and abandons: the code of a
     * successor's pause runs compiled when it counts.
     */
    @Override
    public java.util.List<warren.daemon.handoff.HandoffItem> rehearsalItems(int n, java.util.List<Fd> fds) {
        if (nats == null || !env.inProcess()) {
            return java.util.List.of(); // a helper's namespace cannot pause (Nat.pause)
        }
        int slots = daemon.config().get(BumblebeeConfig.SLOTS).intValue();
        warren.handoff.v1.BumblebeeState.Builder b = warren.handoff.v1.BumblebeeState.newBuilder().setFormat(1)
                .setSlots(slots).setMtu(env.mtu).setPreCopy(true);
        java.util.List<Fd> used = new java.util.ArrayList<>();
        for (int i = 0; i < Math.min(n, slots) && 2 * i + 1 < fds.size(); i++) {
            warren.handoff.v1.FlowState.Builder f = warren.handoff.v1.FlowState.newBuilder().setSlot(i).setGeneration(1)
                    .setStateValue(2).setCallRef(i + 1).setFdFlow(used.size()).setPacketsIn(1).setNatPort(20000);
            used.add(fds.get(2 * i));
            if (i % 2 == 1) {
                f.setUdp(true).setFdUdp(used.size());
                used.add(fds.get(2 * i + 1));
            }
            b.addFlows(f);
        }
        return java.util.List.of(new warren.daemon.handoff.HandoffItem(ITEM, b.build().toByteArray(), used));
    }

    /**
     * The delta the warm-up's rehearsal adopts (it hands in none): what a real predecessor sends
     * for an idle table, one table delta with an update of the first rehearsal flow (slot 0,
     * generation 1: its packets moved) and an empty relay item, so the pause's code (the relay
     * state's parsing and adoption, the update, the tie-up) runs once before it counts. The
     * warm-up's daemon ({@code Daemon.warmUp}) builds its own tables on
     * {@link Environment#detached} for this (a daemon built as a successor builds none).
     */
    private java.util.List<warren.daemon.handoff.HandoffItem> rehearsalDelta() {
        int slots = daemon.config().get(BumblebeeConfig.SLOTS).intValue();
        warren.handoff.v1.BumblebeeState delta = warren.handoff.v1.BumblebeeState.newBuilder().setFormat(1)
                .setSlots(slots).setMtu(env.mtu).setDelta(true).addFlows(warren.handoff.v1.FlowState.newBuilder()
                        .setSlot(0).setGeneration(1).setUpdate(true).setStateValue(2).setPacketsIn(2).setNatPort(20000))
                .build();
        return java.util.List.of(new warren.daemon.handoff.HandoffItem(ITEM, delta.toByteArray(), java.util.List.of()),
                new warren.daemon.handoff.HandoffItem(ITEM + ".relay", warren.handoff.v1.RelayState.newBuilder()
                        .setFormat(1).build().toByteArray(), java.util.List.of()));
    }

    private static final Set<Request.BodyCase> SERVES = Set.of(Request.BodyCase.UPGRADE, Request.BodyCase.DOWNGRADE);

    @Override
    public Set<Request.BodyCase> serves() {
        return SERVES; // asked for every request the control server dispatches
    }

    @Override
    public void handle(Call call) throws NativeIoException {
        if (call.request().getBodyCase() == Request.BodyCase.DOWNGRADE) {
            downgrade(call);
            return;
        }
        int idx = call.request().getUpgrade().getFdFlow();
        if (!flowSocketOk(call, idx)) {
            return;
        }
        int mtu = call.request().getUpgrade().getMtu();
        if (mtu != 0 && (mtu < 576 || mtu > 65535)) {
            call.fail(Error.Code.INVALID_ARGUMENT, "mtu " + mtu + " is outside 576-65535 (0 = the default)");
            return;
        }
        Fd flow = call.takeFd(idx);
        mostFree().upgrade(call, flow, mtu, call.request().getUpgrade().getVnetHdr());
    }

    private void downgrade(Call call) throws NativeIoException {
        warren.control.v1.Downgrade d = call.request().getDowngrade();
        try {
            FdInfo.requireConnectedStream(call.peekFd(d.getFdSocket()), "fd_socket", true);
        } catch (warren.fdpass.FdPassException e) {
            call.fail(Error.Code.BAD_FD_TYPE, e.getMessage());
            return;
        }
        if (!flowSocketOk(call, d.getFdFlow())) {
            return;
        }
        warren.control.v1.FiveTuple t = d.getTuple();
        int len = t.getSrcIp().size();
        if (t.getProtocol() != 6 || (len != 4 && len != 16) || t.getDstIp().size() != len || t.getSrcPort() < 1
                || t.getSrcPort() > 65535 || t.getDstPort() < 1 || t.getDstPort() > 65535) {
            call.fail(Error.Code.INVALID_ARGUMENT, "tuple must be TCP (protocol 6) with two addresses of the same family"
                    + " (4 or 16 bytes) and ports 1-65535; got " + t.toString().replace('\n', ' '));
            return;
        }
        warren.packet.FlowKey k = new warren.packet.FlowKey();
        k.version = len == 4 ? 4 : 6;
        k.protocol = 6;
        t.getSrcIp().copyTo(k.src, 0);
        t.getDstIp().copyTo(k.dst, 0);
        k.srcPort = t.getSrcPort();
        k.dstPort = t.getDstPort();
        mostFree().downgrade(call, call.takeFd(d.getFdSocket()), call.takeFd(d.getFdFlow()), k);
    }

    /**
     * The flow socket is a connected AF_UNIX SOCK_SEQPACKET or SOCK_DGRAM socket, else BAD_FD_TYPE.
     * The same checks as {@link FdInfo#of} in 2-3 syscalls instead of 5 (issue 15: each upgrade
     * pays them): getsockopt(SO_TYPE) fails with ENOTSOCK on anything but a socket (fstat's
     * S_IFSOCK), SO_PROTOCOL is not checked, and only a SOCK_SEQPACKET socket can listen (a
     * SOCK_DGRAM one never has SO_ACCEPTCONN). A refusal describes the fd with {@link FdInfo}.
     */
    private static boolean flowSocketOk(Call call, int idx) throws NativeIoException {
        int fd = call.peekFd(idx).get();
        boolean ok;
        try {
            int type = Native.getsockoptInt(fd, Native.SOL_SOCKET, Native.SO_TYPE);
            ok = (type == Native.SOCK_SEQPACKET || type == Native.SOCK_DGRAM)
                    && Native.getsockoptInt(fd, Native.SOL_SOCKET, Native.SO_DOMAIN) == Native.AF_UNIX
                    && (type == Native.SOCK_DGRAM || Native.getsockoptInt(fd, Native.SOL_SOCKET, Native.SO_ACCEPTCONN) == 0);
        } catch (NativeIoException e) {
            ok = false; // ENOTSOCK: FdInfo says what it is (or throws as before, e.g. EBADF)
        }
        if (!ok) {
            FdInfo info = FdInfo.of(call.peekFd(idx));
            call.fail(Error.Code.BAD_FD_TYPE, "fd_flow is " + info.describe()
                    + ", expected a connected AF_UNIX SOCK_SEQPACKET or SOCK_DGRAM socket (one packet per message)");
            return false;
        }
        return true;
    }
}
