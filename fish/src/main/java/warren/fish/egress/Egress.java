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
            queues.add(fds.get(i).get(states.get(i).getFdTun()).transfer());
        }
        Egress e = new Egress(loops, counters, audit, settings,
                EgressNamespace.adopt(settings.netns(), queues.toArray(new Fd[0]), loops.length));
        e.inheritedQueues = queues.size();
        try {
            for (Lane l : e.lanes) { // paused before anything is registered: one resume starts it all
                l.pause();
                l.register();
            }
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
            e.steer();
        } catch (Exception | java.lang.Error x) {
            e.close();
            throw x;
        }
        return e;
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
        raw.add(lanes[i].queue);
        FishState state = FishStateCodec.write(FishStateCodec.snapshot(lanes[i].clients.all(), callRef), raw).toBuilder()
                .setFdTun(0).build();
        List<Fd> fds = new ArrayList<>(raw.size());
        for (int fd : raw) {
            fds.add(Fd.adopt(fd)); // views for sending only; never closed
        }
        return List.of(new HandoffItem(name, state.toByteArray(), fds));
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
