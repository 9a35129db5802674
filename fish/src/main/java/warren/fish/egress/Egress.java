package warren.fish.egress;

import java.net.InetAddress;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.function.BiConsumer;
import java.util.function.LongFunction;
import java.util.function.ToLongFunction;
import warren.control.v1.Error;
import warren.daemon.Log;
import warren.daemon.audit.AuditLog;
import warren.daemon.audit.JsonLine;
import warren.daemon.control.Call;
import warren.daemon.handoff.DeltaCheck;
import warren.daemon.handoff.HandoffItem;
import warren.daemon.loop.EventLoop;
import warren.daemon.loop.HandoverRing;
import warren.daemon.metrics.Counters;
import warren.daemon.metrics.Families;
import warren.daemon.task.Task;
import warren.fdpass.EventFd;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.fish.conntrack.Ctnetlink;
import warren.handoff.v1.FishState;
import warren.handoff.v1.StoredTasks;
import warren.linux.net.SteeringException;
import warren.linux.net.TunSteering;

/**
 * Fish's egress engine: the parts wired together, one set per event loop ({@link Lane}), and
 * their lifecycle (start, pause, export, resume, abandon, adopt). Each {@code Egress} request is a
 * client ({@link Clients}): a socket of the client's raw IP packets, a soft-unicast IP and a port
 * range. A new client flow leases a port of the range, reserved in the egress namespace's
 * conntrack table ({@link PortLeases}); its packets get the soft-unicast IP and that port as their
 * source and are written to the TUN {@code fish0} in the egress namespace ({@link ClientPath}),
 * whose kernel forwards them out. Replies to the soft-unicast IP are routed to the TUN, matched by
 * (IP, protocol, port), rewritten back and written to their client's socket ({@link ReplyPath}).
 * Because the reservation's original tuple is the rewritten packet's own, the kernel's conntrack
 * for the forwarded traffic is that very entry: no NAT rule is involved and nothing can rewrite
 * the port behind Fish's back. Its state crosses processes through {@link FishStateCodec} and
 * {@link FishFdStore}.
 *
 * <p><b>N loops</b> (docs/fish.md, "Threads"). fish0 is multi-queue, queue i read and written by
 * loop i, with a steering program that puts a packet on queue {@code port % N} (TCP/UDP
 * destination port, echo id, an ICMP error's quoted source port). The control loop checks and
 * places each client ({@link LoopPlacement}), keeps the ranges of every soft-unicast IP (overlap
 * checks, routes) and publishes who owns which range as an immutable {@link Owners} snapshot;
 * the client then lives on its loop. A reply read on a loop whose flows do not match it is
 * looked up in the snapshot and handed over to its owner through a {@link HandoverRing} (one
 * per ordered pair of loops).
 */
public final class Egress {
    /** Timeouts in ms (FishConfig). */
    public record Timeouts(long tcp, long tcpClose, long udp, long icmp) {}

    /** What the engine is configured with (FishConfig). */
    public record Settings(String netns, List<Prefix> softUnicastPrefixes, Timeouts timeouts, long clientIdleTimeout,
            boolean tunOffload) {
        public Settings(String netns, List<Prefix> softUnicastPrefixes, Timeouts timeouts, long clientIdleTimeout) {
            this(netns, softUnicastPrefixes, timeouts, clientIdleTimeout, true);
        }
    }

    /** The fd store item name of Fish's clients. */
    public static final String STORE_ITEM = FishFdStore.ITEM;

    private final EventLoop control;
    private final EgressCounters counters;
    private final Settings settings;
    private final EgressNamespace ns;
    private final Lane[] lanes;
    private boolean abandoned;
    // control loop only: every client's range by soft-unicast IP, and the clients per lane
    private final AddressTable<List<Client>> ranges = new AddressTable<>();
    private final int[] placed;
    /** Who owns each range (copy on write, published by the control loop; read by every reply path). */
    private volatile Owners owners = Owners.EMPTY;
    /** Why fish0 has no steering program (null: it has one, or one queue needs none). */
    private volatile String steering;
    /** Queues the predecessor had (fd store names beyond ours are removed). */
    private int inheritedQueues;

    /** A fresh engine: creates fish0 with a queue per loop in the egress namespace (see {@link EgressNamespace}). */
    public Egress(EventLoop[] loops, Counters counters, AuditLog audit, Settings settings) throws Exception {
        this(loops, counters, audit, settings, EgressNamespace.create(settings.netns(), settings.softUnicastPrefixes(),
                loops.length, settings.tunOffload()));
        try {
            removeStale(Set.of());
            steer();
            for (Lane l : lanes) {
                l.register();
            }
        } catch (Exception | java.lang.Error e) {
            close();
            throw e;
        }
    }

    /**
     * On {@code ns}, one lane per queue of it (at most one per loop); a successor's (upgrade in
     * place) holds the predecessor's fish0, whose routes and conntrack entries stay as they are,
     * and starts paused until {@link #resume} ({@link #adopt}). Registers nothing yet.
     */
    private Egress(EventLoop[] loops, Counters counters, AuditLog audit, Settings settings, EgressNamespace ns)
            throws Exception {
        this.control = loops[0];
        this.counters = new EgressCounters(counters);
        this.settings = settings;
        this.ns = ns;
        int n = Math.min(loops.length, ns.queues.length);
        this.lanes = new Lane[n];
        this.placed = new int[n];
        HandoverRing[][] rings = new HandoverRing[n][n]; // [from][to]
        EventFd[] wakeups = new EventFd[n];
        try {
            if (n > 1) {
                for (int to = 0; to < n; to++) {
                    wakeups[to] = new EventFd();
                    for (int from = 0; from < n; from++) {
                        if (from != to) {
                            rings[from][to] = new HandoverRing(Lane.RING_SLOTS, Lane.RING_SLOT_SIZE, wakeups[to]);
                        }
                    }
                }
            }
            for (int i = 0; i < n; i++) {
                HandoverRing[] in = null;
                if (n > 1) {
                    in = new HandoverRing[n];
                    for (int from = 0; from < n; from++) {
                        in[from] = rings[from][i];
                    }
                }
                Ctnetlink own = i == 0 ? null : ns.openConntrack();
                lanes[i] = new Lane(i, n, loops[i], ns, i == 0 ? ns.ct : own, own, this.counters, audit, settings,
                        this::released, n > 1 ? rings[i] : null, in, wakeups[i], (a, len, port) -> owners.loopOf(a, len, port));
                lanes[i].clients.laneIndex = i;
            }
        } catch (Exception | java.lang.Error e) {
            for (int i = 0; i < n; i++) {
                if (lanes[i] != null) {
                    lanes[i].close();
                } else if (wakeups[i] != null) {
                    wakeups[i].close();
                }
            }
            ns.close();
            throw e;
        }
        if (n < loops.length) {
            Log.info("threads = " + loops.length + ": Fish runs its egress engine on " + n + " of them (fish0 has " + n
                    + " queue(s)); the other loops stay idle");
        }
    }

    /** The loops the engine runs on (one per queue of fish0). */
    public int lanes() {
        return lanes.length;
    }

    /** Why fish0 has no steering program with N loops, or null. */
    public String steering() {
        return steering;
    }

    /**
     * With N > 1 loops: the port program attached to fish0 (it belongs to the device: it survives
     * this process and follows its number of queues). Refused (no CAP_BPF/CAP_SYS_ADMIN in the
     * initial user namespace: EPERM) or rejected, the kernel's own flow table steers, replies of
     * another loop's client are handed over, and this says so once, in the log and in
     * {@code tun.steering_unavailable}.
     */
    private void steer() {
        if (lanes.length < 2) {
            return;
        }
        try (Fd prog = TunSteering.load("warren_fish", TunSteering.port())) {
            TunSteering.attach(ns.queues[0], prog);
            steering = null;
        } catch (SteeringException e) {
            steering = (e.notPermitted() ? "not permitted: " : "failed: ") + e.getMessage();
            counters.steeringUnavailable.increment();
            Log.warn("fish0 has no steering program (" + steering + "); replies landing on another loop than their"
                    + " client's are handed over to it (handover.packets)");
        }
    }

    /** Send buffer set on each client's packet socket (0: leave it). */
    public void clientSendBuffer(long bytes) {
        for (Lane l : lanes) {
            l.clients.sendBuffer(bytes);
        }
    }

    /** Removes the entries an earlier Fish left in the egress namespace but {@code keep}; logs and counts them. */
    private void removeStale(Set<Ctnetlink.Tuple> keep) throws NativeIoException {
        int n = ns.removeStale(settings.softUnicastPrefixes(), keep);
        if (n > 0) {
            counters.staleRemoved.add(n);
            Log.info("removed " + n + " stale conntrack entries an earlier Fish left in " + ns.path
                    + " (marked, fixed-timeout, from a soft-unicast IP, claimed by no client)");
        }
    }

    /**
     * The successor's engine, from the predecessor's {@code fish.egress} items (one per loop it
     * had, in loop order: each carries fish0's queue of that index and that loop's clients, with
     * their sockets, counters, calls and flows; the conntrack entries were never touched). fish0's
     * queues are grown or shrunk to this process's loops and every client is placed again by
     * {@link LoopPlacement}. Each lane's group is paused first and everything is registered and
     * scheduled in it here, on the calling thread, so {@link #resume} is the same one call as after
     * a failed handoff. Before the successor's loops run.
     */
    public static Egress adopt(EventLoop[] loops, Counters counters, AuditLog audit, Settings settings, boolean recovered,
            List<FishState> states, List<List<Fd>> fds, LongFunction<Call> calls, BiConsumer<Call, Task> adoptTask)
            throws Exception {
        List<Fd> queues = new ArrayList<>();
        for (int i = 0; i < states.size(); i++) {
            if (!states.get(i).hasFdTun()) {
                throw new IllegalArgumentException("the Fish state carries no TUN");
            }
            FishStateCodec.check(states.get(i), fds.get(i)); // the index too, before anything is taken
        }
        for (int i = 0; i < states.size(); i++) {
            queues.add(fds.get(i).get(states.get(i).getFdTun()).transfer());
        }
        Egress e = withQueues(loops, counters, audit, settings, queues.toArray(new Fd[0]));
        try {
            for (int i = 0; i < states.size(); i++) {
                for (FishStateCodec.ClientRecord r : FishStateCodec.read(states.get(i), fds.get(i))) {
                    int k = LoopPlacement.place(r.first(), r.last(), e.placed);
                    for (Client c : FishStateCodec.restore(List.of(r), e.lanes[k].clients, e.lanes[k].leases, calls,
                            adoptTask)) {
                        e.placedOn(c, k);
                    }
                }
            }
            if (recovered) { // after a crash: entries of flows no recovered client claims are stale
                Set<Ctnetlink.Tuple> keep = new HashSet<>();
                for (Lane l : e.lanes) {
                    for (Client c : l.clients.all()) {
                        c.flows.values().forEach(f -> keep.add(f.reserved));
                    }
                }
                e.removeStale(keep);
            }
        } catch (Exception | java.lang.Error x) {
            e.close();
            throw x;
        }
        return e;
    }

    /**
     * A successor's engine on the predecessor's queues of fish0 ({@code queues}, taken; grown or
     * shrunk to this process's loops), every lane paused with its queue and rings registered, no
     * client yet. Before the loops run.
     */
    static Egress withQueues(EventLoop[] loops, Counters counters, AuditLog audit, Settings settings, Fd[] queues)
            throws Exception {
        Egress e = new Egress(loops, counters, audit, settings, EgressNamespace.adopt(settings.netns(), queues, loops.length));
        e.inheritedQueues = queues.length;
        try {
            for (Lane l : e.lanes) { // paused before anything is registered: one resume starts it all
                l.pause();
                l.register();
            }
            e.steer();
        } catch (Exception | java.lang.Error x) {
            e.close();
            throw x;
        }
        return e;
    }

    /** {@link #withQueues}, for the successor's handler (the queues of a pre-copy). */
    public static Egress adoptQueues(EventLoop[] loops, Counters counters, AuditLog audit, Settings settings, Fd[] queues)
            throws Exception {
        return withQueues(loops, counters, audit, settings, queues);
    }

    /** The clients and their flows on each of this engine's loops (logs, tests). Control path. */
    public int[] placed() {
        return placed.clone();
    }

    // ---- the control loop's part: checks, placement, ranges, routes

    /**
     * Starts a client. Refuses (INVALID_ARGUMENT) a range that is empty, reversed, out of
     * 1-65535, or that overlaps another client's range on the same soft-unicast IP, and a
     * soft-unicast IP the egress namespace may not route to Fish ({@link EgressNamespace#refusal}).
     * Then places it ({@link LoopPlacement}), starts its task and hands it to its loop. Control loop.
     */
    public void start(Call call, Fd packets, byte[] softIp, int first, int last, String tenant, boolean datagram)
            throws Exception {
        start(call, packets, softIp, first, last, tenant, datagram, false);
    }

    /** As above, for a client that declared {@code Egress.vnet_hdr} if {@code vnet}. */
    public void start(Call call, Fd packets, byte[] softIp, int first, int last, String tenant, boolean datagram,
            boolean vnet) throws Exception {
        String refused = refusal(softIp, first, last);
        if (refused != null) {
            packets.close();
            call.fail(Error.Code.INVALID_ARGUMENT, refused);
            return;
        }
        int flags = Native.fcntl(packets.get(), Native.F_GETFL, 0);
        Native.fcntl(packets.get(), Native.F_SETFL, flags | Native.O_NONBLOCK);
        lanes[0].clients.applySendBuffer(packets, vnet);
        if (ranges.get(softIp) == null) {
            ns.addRoute(softIp); // replies to it come to fish0
            ranges.put(softIp, new ArrayList<>(2));
            counters.softIpsAdded.increment();
        }
        int k = LoopPlacement.place(first, last, placed);
        Lane lane = lanes[k];
        Client c = new Client(lane.clients, lane.loop, call, packets.detach(), softIp, first, last, tenant, datagram);
        c.vnet = vnet;
        placedOn(c, k);
        call.startTask("egress", c, new JsonLine().put("tenant", tenant)
                .put("soft_unicast_ip", InetAddress.getByAddress(softIp).getHostAddress())
                .put("port_first", first).put("port_last", last).put("vnet_hdr", vnet), true);
        if (lane.loop.inLoop()) {
            lane.clients.begin(c); // with one loop, every client: at once, as before
        } else {
            lane.loop.execute(() -> lane.clients.begin(c));
        }
    }

    /** {@code c} lives on lane {@code k}: its range, its loop's count, the owners' snapshot. Control loop (or before the loops run). */
    private void placedOn(Client c, int k) {
        c.lane = k;
        List<Client> on = ranges.get(c.softIp);
        if (on == null) {
            on = new ArrayList<>(2);
            ranges.put(c.softIp, on);
        }
        on.add(c);
        placed[k]++;
        if (lanes.length > 1) {
            owners = owners.with(c.softIp, c.first, c.last, k);
        }
    }

    /** Why a client may not have this IP and range, or null. */
    private String refusal(byte[] softIp, int first, int last) throws Exception {
        if (first < 1 || last > 65535 || first > last) {
            return "port range " + first + "-" + last + " is empty, reversed or outside 1-65535";
        }
        List<Client> on = ranges.get(softIp);
        if (on == null) {
            return ns.refusal(softIp, settings.softUnicastPrefixes());
        }
        for (Client other : on) {
            if (first <= other.last && other.first <= last) {
                return "port range " + first + "-" + last + " overlaps tenant '" + other.tenant + "' (" + other.first + "-"
                        + other.last + ") on " + InetAddress.getByAddress(softIp).getHostAddress();
            }
        }
        return null;
    }

    /** A client has ended on its loop: its range goes on the control loop, and its IP's route with its last client. */
    private void released(Client c) {
        if (control.inLoop()) {
            forget(c);
        } else {
            control.execute(() -> forget(c));
        }
    }

    private void forget(Client c) {
        if (abandoned) {
            return;
        }
        List<Client> on = ranges.get(c.softIp);
        if (on == null || !on.remove(c)) {
            return;
        }
        placed[c.lane]--;
        if (lanes.length > 1) {
            owners = owners.without(c.softIp, c.first, c.last);
        }
        if (!on.isEmpty()) {
            return;
        }
        ranges.remove(c.softIp);
        counters.softIpsRemoved.increment();
        try {
            ns.removeRoute(c.softIp);
        } catch (Exception e) {
            Log.warn("route of " + Prefix.text(c.softIp) + " to fish0 not removed: " + e.getMessage());
        }
    }

    // ---- upgrade in place, loop by loop

    /**
     * Holds loop {@code i}'s part for a handoff: its lane's group pauses, so its queue, its rings and
     * its clients' sockets are not read and its timers do not fire (packets wait in the sockets and
     * the queue, handed-over replies in the rings). O(1), whatever the number of clients and flows:
     * nothing is unregistered or cancelled. On that loop.
     */
    public void pause(int i) {
        if (i < lanes.length) {
            lanes[i].pause();
        }
    }

    /**
     * Undoes {@link #pause} (the handoff failed), or starts an adopted lane: what was held is
     * delivered ({@link Lane#resume}). Not after {@link #abandon}. On that loop (or before the loops run).
     */
    public void resume(int i) {
        forgetCopy(i); // a failed handoff's pre-copy
        if (i >= lanes.length || !lanes[i].group.paused() || abandoned) {
            return;
        }
        lanes[i].resume();
    }

    /**
     * Loop {@code i}'s paused part as the {@code name} handoff item: FishState with fish0's queue
     * {@code i} and the loop's clients' sockets (borrowed: they stay this engine's until
     * {@link #abandon}); empty for a loop the engine does not use.
     */
    public List<HandoffItem> export(int i, String name, ToLongFunction<Call> callRef) {
        if (i >= lanes.length) {
            return List.of();
        }
        if (!lanes[i].group.paused()) {
            throw new IllegalStateException("export needs a paused engine");
        }
        List<Integer> raw = new ArrayList<>();
        FishState state;
        if (lanes[i].queueCopied) {
            state = delta(lanes[i], callRef, raw);
        } else {
            raw.add(lanes[i].queue);
            state = FishStateCodec.write(FishStateCodec.snapshot(lanes[i].clients.all(), callRef), raw).toBuilder()
                    .setFdTun(0).build();
        }
        List<Fd> fds = new ArrayList<>(raw.size());
        for (int fd : raw) {
            fds.add(Fd.adopt(fd)); // views for sending only; never closed
        }
        return List.of(new HandoffItem(name, state.toByteArray(), fds));
    }

    // ---- pre-copy (handoff protocol 2; docs/upgrade.md "Pre-copy"), old side

    /**
     * Pre-copy, on loop {@code i} while it serves: the next chunk of its lane as the {@code name}
     * item (FishState with pre_copy set), whose fds are duplicates owned by the item (the sender
     * closes them once sent): the first time a duplicate of its queue of fish0 (with its index and
     * the number of queues), then clients not copied yet, each with a duplicate of its socket, its
     * key (its task number, {@code taskRef}: the ref its call has at the pause) and its flows (no
     * fds: their conntrack entries are never touched), as long as they fit in {@code maxFds}. From
     * its copy on a client is tracked ({@link Client#copyKey}): {@link #export} at the pause sends
     * only what changed. Empty when all is copied.
     */
    public List<HandoffItem> preCopy(int i, String name, ToLongFunction<Call> taskRef, int maxFds) throws NativeIoException {
        if (i >= lanes.length) {
            return List.of();
        }
        Lane l = lanes[i];
        List<Fd> fds = new ArrayList<>();
        FishState.Builder st = FishState.newBuilder();
        try {
            if (!l.queueCopied) {
                fds.add(Fd.adopt(Native.fcntl(l.queue, Native.F_DUPFD_CLOEXEC, 0)));
                st.setFdTun(0).setQueueIndex(i).setQueues(lanes.length);
                l.queueCopied = true;
            }
            long now = System.nanoTime();
            List<FishStateCodec.ClientRecord> records = new ArrayList<>();
            for (Client c : l.clients.all()) {
                if (fds.size() + 1 > Math.max(1, maxFds)) {
                    break;
                }
                if (c.copyKey != 0 || c.ended) {
                    continue;
                }
                Fd dup = Fd.adopt(Native.fcntl(c.fd, Native.F_DUPFD_CLOEXEC, 0));
                fds.add(dup);
                long key = taskRef.applyAsLong(c.call);
                c.copyKey = key;
                c.copiedAt = now;
                c.dirty = false;
                c.endedCopies = null;
                for (Flow f : c.flows.values()) {
                    f.copied = true;
                }
                FishStateCodec.ClientRecord r = FishStateCodec.record(c, now, key, key);
                records.add(new FishStateCodec.ClientRecord(r.tenant(), r.softIp(), r.first(), r.last(), dup.get(),
                        r.identity(), r.nextPort(), r.packetsOut(), r.packetsIn(), r.bytesOut(), r.bytesIn(), r.requestId(),
                        r.metadata(), r.flows(), r.callRef(), r.vnet(), key));
            }
            if (fds.isEmpty()) {
                return List.of();
            }
            List<Integer> raw = new ArrayList<>();
            if (st.hasFdTun()) {
                raw.add(fds.get(0).get());
            }
            FishState w = FishStateCodec.write(records, raw);
            st.mergeFrom(w).setPreCopy(true);
            return List.of(new HandoffItem(name, st.build().toByteArray(), fds));
        } catch (NativeIoException | RuntimeException e) {
            Fd.closeAll(fds); // the copy is given up (preCopyAborted): the keys are forgotten then
            throw e;
        }
    }

    /**
     * The paused lane's delta after a pre-copy: clients begun since (whole, with their sockets
     * into {@code raw}), an update of each copied client that moved since its copy (a packet
     * either way, a flow added or ended: {@link FishStateCodec#update}), the keys of copied clients
     * that ended. An idle copied client costs a few comparisons and nothing in the state.
     */
    private static FishState delta(Lane l, ToLongFunction<Call> callRef, List<Integer> raw) {
        long now = System.nanoTime();
        List<FishStateCodec.ClientRecord> whole = new ArrayList<>();
        List<warren.handoff.v1.FishClient> updates = new ArrayList<>();
        for (Client c : l.clients.all()) {
            if (c.copyKey == 0) {
                whole.add(FishStateCodec.record(c, now, callRef.applyAsLong(c.call), 0));
            } else if (c.dirty || c.lastPacket >= c.copiedAt || c.endedCopies != null) {
                updates.add(FishStateCodec.update(c, now));
            }
        }
        return FishStateCodec.write(whole, raw).toBuilder().addAllClients(updates).addAllEnded(l.clients.endedCopies)
                .build();
    }

    /**
     * The pre-copy was given up, or the handoff failed after it: loop {@code i}'s clients forget
     * their copy and nothing is tracked. On that loop.
     */
    public void forgetCopy(int i) {
        if (i < lanes.length && lanes[i].queueCopied) {
            lanes[i].queueCopied = false;
            lanes[i].clients.forgetCopy();
        }
    }

    // ---- pre-copy, successor side

    /** Successor: pre-copied clients by key, without their call until {@link #adoptDelta}. */
    private final java.util.HashMap<Long, Client> copies = new java.util.HashMap<>();

    /** Successor: clients pre-copied and not adopted yet (tests, logs). */
    public int copies() {
        return copies.size();
    }

    /**
     * Successor, a pre-copy chunk's clients (a {@link #withQueues} engine, paused, before the loops
     * run): each placed by {@link LoopPlacement}, registered and its checks scheduled in its lane's
     * paused group, kept by key without a call. The chunk is checked whole first (a refused one has
     * taken no fd); a key pre-copied before is refused.
     */
    public int preAdopt(FishState st, List<Fd> fds) throws Exception {
        if (!st.getPreCopy()) {
            throw new IllegalArgumentException("a pre-copy chunk without pre_copy");
        }
        FishStateCodec.check(st, fds);
        for (warren.handoff.v1.FishClient c : st.getClientsList()) {
            if (copies.containsKey(c.getKey())) {
                throw new IllegalArgumentException("client key " + c.getKey() + " pre-copied twice");
            }
        }
        List<FishStateCodec.ClientRecord> records = FishStateCodec.read(st, fds);
        for (int i = 0; i < records.size(); i++) {
            FishStateCodec.ClientRecord r = records.get(i);
            int k = LoopPlacement.place(r.first(), r.last(), placed);
            Client c;
            try {
                c = FishStateCodec.restoreOne(r, lanes[k].clients, lanes[k].leases, null);
            } catch (Exception | java.lang.Error x) {
                for (int j = i + 1; j < records.size(); j++) {
                    Native.close(records.get(j).fd()); // taken from the chunk, owned by no client
                }
                throw x;
            }
            copies.put(r.key(), c);
            placedOn(c, k);
        }
        return records.size();
    }

    /**
     * Successor, at the pause: the delta after a pre-copy ({@code states}, one per loop of the
     * predecessor, with their fds). Checked whole before anything changes: an end or update of a
     * key never pre-copied, a key ended twice, or both ended and updated, an update that does not
     * fit its client (ports, families, a flow ended twice or never copied, a port held by another
     * flow), a client with no pending request: refused (IllegalArgumentException), nothing
     * applied. Then: ended copies dropped ({@link Clients#dropCopy}), updates applied, clients
     * begun since built whole, and every copy left tied to its call ({@code adoptTask}).
     */
    public void adoptDelta(List<FishState> states, List<List<Fd>> fds, LongFunction<Call> calls,
            BiConsumer<Call, Task> adoptTask) throws Exception {
        DeltaCheck delta = new DeltaCheck(copies::containsKey, k -> "client key " + k);
        java.util.Map<Long, warren.handoff.v1.FishClient> updates = new java.util.HashMap<>();
        int begun = 0;
        int flows = 0;
        int endedFlows = 0;
        for (int i = 0; i < states.size(); i++) {
            FishState s = states.get(i);
            if (s.getPreCopy() || s.hasFdTun()) {
                throw new IllegalArgumentException("after a pre-copy the pause's state names a queue of fish0 or is a chunk");
            }
            FishStateCodec.check(s, fds.get(i));
            for (long key : s.getEndedList()) {
                delta.ended(key);
            }
        }
        for (FishState s : states) {
            for (warren.handoff.v1.FishClient u : s.getClientsList()) {
                if (!u.getUpdate()) {
                    begun++;
                    if (calls.apply(u.getCallRef()) == null) {
                        throw new IllegalArgumentException("tenant '" + u.getTenant() + "': no pending Egress request"
                                + " (call ref " + u.getCallRef() + ")");
                    }
                    continue;
                }
                delta.updated(u.getKey());
                updates.put(u.getKey(), u);
                checkUpdate(copies.get(u.getKey()), u);
                flows += u.getFlowsCount();
                endedFlows += u.getEndedFlowsCount();
            }
        }
        for (java.util.Map.Entry<Long, Client> e : copies.entrySet()) {
            if (!delta.isEnded(e.getKey()) && calls.apply(e.getKey()) == null) {
                throw new IllegalArgumentException("pre-copied client key " + e.getKey() + " (tenant '"
                        + e.getValue().tenant + "'): no pending Egress request");
            }
        }
        for (FishState s : states) {
            for (long key : s.getEndedList()) { // each once (checked)
                Client c = copies.remove(key);
                lanes[c.lane].clients.dropCopy(c);
                unplace(c);
            }
        }
        for (warren.handoff.v1.FishClient u : updates.values()) {
            applyUpdate(copies.get(u.getKey()), u);
        }
        for (int i = 0; i < states.size(); i++) {
            for (FishStateCodec.ClientRecord r : FishStateCodec.read(states.get(i), fds.get(i))) {
                int k = LoopPlacement.place(r.first(), r.last(), placed);
                for (Client c : FishStateCodec.restore(List.of(r), lanes[k].clients, lanes[k].leases, calls, adoptTask)) {
                    placedOn(c, k);
                }
            }
        }
        for (java.util.Map.Entry<Long, Client> e : copies.entrySet()) {
            Client c = e.getValue();
            c.call = calls.apply(e.getKey());
            adoptTask.accept(c.call, c);
        }
        Log.info("upgrade: Fish's delta after the pre-copy: " + copies.size() + " pre-copied clients adopted, " + begun
                + " begun since, " + updates.size() + " updated (" + flows + " flows, " + endedFlows + " flows ended), "
                + delta.endedCount() + " ended");
        copies.clear();
    }

    /** Whether the update {@code u} fits its pre-copied client {@code c}; throws if not. Changes nothing. */
    private static void checkUpdate(Client c, warren.handoff.v1.FishClient u) {
        String t = "tenant '" + c.tenant + "' (client key " + u.getKey() + "): ";
        int alen = c.softIp.length;
        if (!u.getIdentity().isEmpty() && u.getIdentity().size() != alen) {
            throw new IllegalArgumentException(t + "an identity of " + u.getIdentity().size() + " bytes");
        }
        long next = Integer.toUnsignedLong(u.getNextPort());
        if (next < c.first || next > c.last) {
            throw new IllegalArgumentException(t + "next port " + next + " outside " + c.first + "-" + c.last);
        }
        java.util.Set<warren.packet.FlowKey> gone = new HashSet<>();
        for (warren.control.v1.FiveTuple e : u.getEndedFlowsList()) {
            warren.packet.FlowKey k = FishStateCodec.flowKey(e);
            if (e.getSrcIp().size() != alen || !c.flows.containsKey(k) || !gone.add(k)) {
                throw new IllegalArgumentException(t + "flow " + k + " ended twice, never pre-copied or of another family");
            }
        }
        java.util.Set<warren.packet.FlowKey> seen = new HashSet<>();
        java.util.Set<Integer> ports = new HashSet<>();
        for (warren.handoff.v1.FishFlow f : u.getFlowsList()) {
            warren.packet.FlowKey k = FishStateCodec.flowKey(f.getClient());
            long port = Integer.toUnsignedLong(f.getEgressPort());
            if (f.getClient().getSrcIp().size() != alen || port < c.first || port > c.last) {
                throw new IllegalArgumentException(t + "flow " + k + " of another family or outside the range (port " + port
                        + ")");
            }
            int proto = Flow.protoIndex(k.protocol);
            if (!seen.add(k) || !ports.add(proto << 16 | (int) port)) {
                throw new IllegalArgumentException(t + "flow " + k + " or port " + port + " twice in the update");
            }
            Flow old = c.flows.get(k);
            if (old != null && !gone.contains(k)) {
                if (old.port != port) {
                    throw new IllegalArgumentException(t + "flow " + k + " moved from port " + old.port + " to " + port);
                }
                continue;
            }
            Flow holder = c.soft.flows.get(proto, (int) port);
            if (holder != null && (holder.client != c || !gone.contains(holder.key))) {
                throw new IllegalArgumentException(t + "flow " + k + ": port " + port + " is held by flow " + holder.key);
            }
        }
    }

    /** Applies a checked update ({@link #checkUpdate}) to its pre-copied client. Before the loops run. */
    private void applyUpdate(Client c, warren.handoff.v1.FishClient u) throws Exception {
        long now = System.nanoTime();
        if (!u.getIdentity().isEmpty()) {
            u.getIdentity().copyTo(c.identity, 0);
            c.haveIdentity = true;
        }
        c.nextPort = u.getNextPort();
        c.packetsOut = u.getPacketsOut();
        c.packetsIn = u.getPacketsIn();
        c.bytesOut = u.getBytesOut();
        c.bytesIn = u.getBytesIn();
        PortLeases leases = lanes[c.lane].leases;
        for (warren.control.v1.FiveTuple e : u.getEndedFlowsList()) {
            leases.drop(c.flows.get(FishStateCodec.flowKey(e)));
        }
        for (warren.handoff.v1.FishFlow ff : u.getFlowsList()) {
            warren.packet.FlowKey k = FishStateCodec.flowKey(ff.getClient());
            Flow f = c.flows.get(k);
            if (f == null) {
                f = leases.restore(c, k, ff.getEgressPort());
                FishStateCodec.setFlow(f, FishStateCodec.flowRecord(ff), now);
                leases.adopted(f);
            } else {
                FishStateCodec.setFlow(f, FishStateCodec.flowRecord(ff), now);
            }
        }
    }

    /** A dropped copy's place: its range and its lane's count (its IP's route is the old process's business). */
    private void unplace(Client c) {
        List<Client> on = ranges.get(c.softIp);
        if (on == null || !on.remove(c)) {
            return;
        }
        placed[c.lane]--;
        if (lanes.length > 1) {
            owners = owners.without(c.softIp, c.first, c.last);
        }
        if (on.isEmpty()) {
            ranges.remove(c.softIp);
        }
    }

    /**
     * Successor, the handoff failed (or a test gives a pre-copy up): every pre-copied client not
     * adopted yet is dropped and its duplicate closed. {@link #close} then closes the rest.
     */
    public void discardCopies() {
        for (Client c : copies.values()) {
            lanes[c.lane].clients.dropCopy(c);
            unplace(c);
        }
        copies.clear();
    }

    /**
     * Successor, a handoff given up after its state was adopted (tests; a real successor exits):
     * every client is dropped as {@link #discardCopies} does (its fd closed; nothing answered, no
     * conntrack entry touched), then the engine is closed. Before the loops run.
     */
    public void discard() {
        discardCopies();
        for (Lane l : lanes) {
            for (Client c : l.clients.all()) {
                l.clients.dropCopy(c);
                unplace(c);
            }
        }
        close();
    }

    /** The configuration this engine runs with (tests). */
    public Settings settings() {
        return settings;
    }

    /** Every client's flows by tenant, each "tenant: n flows, packets out p" (tests). Before the loops run, or on loop 0 with one loop. */
    public java.util.SortedMap<String, String> describe() {
        java.util.SortedMap<String, String> out = new java.util.TreeMap<>();
        for (Lane l : lanes) {
            for (Client c : l.clients.all()) {
                long packets = 0;
                for (Flow f : c.flows.values()) {
                    packets += f.packets;
                }
                out.put(c.tenant, c.flows.size() + " flows, " + packets + " flow packets, " + c.packetsOut + " out");
            }
        }
        return out;
    }

    /**
     * The handoff committed: the successor owns loop {@code i}'s clients and reservations. Nothing
     * is ended, answered, closed or deleted from conntrack here: the lane forgets its clients and
     * its group stays paused for the rest of this process (no event or timer of it runs again).
     */
    public void abandon(int i) {
        abandoned = true;
        if (i < lanes.length) {
            lanes[i].clients.abandon();
        }
    }

    /** Keeps fish0's queues and every client in systemd's fd store from now on. */
    public void enableFdStore(warren.systemd.SdNotify notify) {
        for (int k = ns.queues.length; k < inheritedQueues; k++) {
            notify.fdStoreRemove(FishFdStore.queueName(k)); // closed by this successor: systemd's copy must go too
        }
        FishFdStore store = new FishFdStore(notify, ns.queues, control);
        for (Lane l : lanes) {
            l.clients.store(store);
        }
    }

    /**
     * Fish's state rebuilt after a crash from the fd store and the egress namespace's conntrack
     * ({@link FishFdStore#recover}): one FishState per queue stored, in index order, the clients in
     * the first.
     */
    public static List<FishState> fromFdStore(StoredTasks stored, String netnsPath) throws Exception {
        return FishFdStore.recover(stored, netnsPath);
    }

    /** Loop {@code i}'s part of a metrics sample ({@link Clients#sample}). On that loop. */
    public void sample(int i, warren.daemon.metrics.Sample s) {
        if (i < lanes.length) {
            lanes[i].clients.sample(s);
            s.gauge(Families.FISH_CLIENTS, lanes[i].clients.size(), Integer.toString(i));
        }
    }

    /** The control loop's part of a metrics sample: the soft-unicast IPs in use. */
    public void sampleControl(warren.daemon.metrics.Sample s) {
        s.gauge(Families.SOFT_IPS, ranges.size());
    }

    public void close() {
        for (Lane l : lanes) {
            if (l != null) {
                l.close();
            }
        }
        ns.close();
    }
}
