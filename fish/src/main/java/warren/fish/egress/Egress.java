package warren.fish.egress;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.function.BiConsumer;
import java.util.function.LongFunction;
import java.util.function.ToLongFunction;
import warren.daemon.Log;
import warren.daemon.audit.AuditLog;
import warren.daemon.control.Call;
import warren.daemon.handoff.HandoffItem;
import warren.daemon.loop.EventLoop;
import warren.daemon.metrics.Counters;
import warren.daemon.task.Task;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.fish.conntrack.Ctnetlink;
import warren.handoff.v1.FishState;
import warren.handoff.v1.StoredTasks;

/**
 * Fish's egress engine, on the daemon's loop: the parts wired together and their lifecycle (start,
 * pause, export, resume, abandon, adopt). Each {@code Egress} request is a client
 * ({@link Clients}): a socket of the client's raw IP packets, a soft-unicast IP and a port range.
 * A new client flow leases a port of the range, reserved in the egress namespace's conntrack table
 * ({@link PortLeases}); its packets get the soft-unicast IP and that port as their source and are
 * written to the TUN {@code fish0} in the egress namespace ({@link ClientPath}), whose kernel
 * forwards them out. Replies to the soft-unicast IP are routed to the TUN, matched by (IP,
 * protocol, port), rewritten back and written to their client's socket ({@link ReplyPath}).
 * Because the reservation's original tuple is the rewritten packet's own, the kernel's conntrack
 * for the forwarded traffic is that very entry: no NAT rule is involved and nothing can rewrite
 * the port behind Fish's back. Its state crosses processes through {@link FishStateCodec} and
 * {@link FishFdStore}.
 */
public final class Egress {
    /** Timeouts in ms (FishConfig). */
    public record Timeouts(long tcp, long tcpClose, long udp, long icmp) {}

    /** What the engine is configured with (FishConfig). */
    public record Settings(String netns, List<Prefix> softUnicastPrefixes, Timeouts timeouts, long clientIdleTimeout) {}

    /** The fd store item name of Fish's clients. */
    public static final String STORE_ITEM = FishFdStore.ITEM;

    private final EventLoop loop;
    private final EgressCounters counters;
    private final Settings settings;
    private final EgressNamespace ns;
    private final Clients clients;
    private final PortLeases leases;
    private final ClientPath clientPath;
    private final ReplyPath replyPath;
    private int tunReg = -1;
    private boolean paused;
    private boolean abandoned;

    /** A fresh engine: creates fish0 in the egress namespace (see {@link EgressNamespace}). */
    public Egress(EventLoop loop, Counters counters, AuditLog audit, Settings settings) throws Exception {
        this(loop, counters, audit, settings, EgressNamespace.create(settings.netns(), settings.softUnicastPrefixes()));
        try {
            removeStale(Set.of());
            tunReg = loop.register(ns.tun.get(), Native.EPOLLIN, ev -> replyPath.read());
        } catch (Exception | java.lang.Error e) {
            ns.close();
            throw e;
        }
    }

    /**
     * On {@code ns}; a successor's (upgrade in place) holds the predecessor's fish0, whose routes
     * and conntrack entries stay as they are, and starts paused until {@link #resume}.
     */
    private Egress(EventLoop loop, Counters counters, AuditLog audit, Settings settings, EgressNamespace ns) {
        this.loop = loop;
        this.counters = new EgressCounters(counters);
        this.settings = settings;
        this.ns = ns;
        this.clients = new Clients(loop, this.counters, ns, settings, this::readClient);
        this.leases = new PortLeases(loop, ns.ct, this.counters, audit, settings.timeouts(), clients::armIdle);
        clients.leases(leases);
        this.clientPath = new ClientPath(clients, leases, this.counters, ns.tun.get());
        this.replyPath = new ReplyPath(clients, leases, this.counters, ns.tun.get());
    }

    private void readClient(Client c) {
        clientPath.read(c);
    }

    /** Send buffer set on each client's packet socket (0: leave it). */
    public void clientSendBuffer(long bytes) {
        clients.sendBuffer(bytes);
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
     * The successor's engine, from the predecessor's {@code fish.egress} item: the TUN, every
     * client (socket, counters, call) and every flow with its reservation (the conntrack entries
     * were never touched). Paused until {@link #resume}. Before the successor's loop runs.
     */
    public static Egress adopt(EventLoop loop, Counters counters, AuditLog audit, Settings settings, boolean recovered,
            FishState state, List<Fd> fds, LongFunction<Call> calls, BiConsumer<Call, Task> adoptTask) throws Exception {
        if (!state.hasFdTun()) {
            throw new IllegalArgumentException("the Fish state carries no TUN");
        }
        Egress e = new Egress(loop, counters, audit, settings,
                EgressNamespace.adopt(settings.netns(), fds.get(state.getFdTun()).transfer()));
        e.paused = true;
        e.clients.pause();
        try {
            FishStateCodec.restore(FishStateCodec.read(state, fds), e.clients, e.leases, calls, adoptTask);
            if (recovered) { // after a crash: entries of flows no recovered client claims are stale
                Set<Ctnetlink.Tuple> keep = new HashSet<>();
                for (Client c : e.clients.all()) {
                    c.flows.values().forEach(f -> keep.add(f.reserved));
                }
                e.removeStale(keep);
            }
        } catch (Exception | java.lang.Error x) {
            e.close();
            throw x;
        }
        return e;
    }

    /** Stops reading clients and the TUN and stops the flows' timers, for a handoff. Loop thread. */
    public void pause() {
        if (paused) {
            return;
        }
        paused = true;
        loop.unregister(tunReg);
        tunReg = -1;
        clients.pause();
    }

    /** Undoes {@link #pause} (the handoff failed), or starts an adopted engine. Loop thread. */
    public void resume() throws NativeIoException {
        if (!paused || abandoned) {
            return;
        }
        paused = false;
        tunReg = loop.register(ns.tun.get(), Native.EPOLLIN, ev -> replyPath.read());
        clients.resume();
    }

    /**
     * The paused engine as the {@code name} handoff item: FishState with the TUN and every
     * client's socket (borrowed: they stay this engine's until {@link #abandon}).
     */
    public HandoffItem export(String name, ToLongFunction<Call> callRef) {
        if (!paused) {
            throw new IllegalStateException("export needs a paused engine");
        }
        List<Integer> raw = new ArrayList<>();
        raw.add(ns.tun.get());
        FishState state = FishStateCodec.write(snapshot(callRef), raw).toBuilder().setFdTun(0).build();
        List<Fd> fds = new ArrayList<>(raw.size());
        for (int fd : raw) {
            fds.add(Fd.adopt(fd)); // views for sending only; never closed
        }
        return new HandoffItem(name, state.toByteArray(), fds);
    }

    /**
     * The handoff committed: the successor owns every client and reservation. Nothing is ended,
     * answered or deleted from conntrack here; closing this process's copies of the fds is harmless.
     */
    public void abandon() {
        abandoned = true;
        clients.abandon();
    }

    /** Starts a client ({@link Clients#start}: its refusals). */
    public void start(Call call, Fd packets, byte[] softIp, int first, int last, String tenant, boolean datagram)
            throws Exception {
        clients.start(call, packets, softIp, first, last, tenant, datagram);
    }

    /** Keeps the TUN and every client in systemd's fd store from now on. */
    public void enableFdStore(warren.systemd.SdNotify notify) {
        clients.store(new FishFdStore(notify, ns.tun));
    }

    /** Fish's state rebuilt after a crash from the fd store and the egress namespace's conntrack ({@link FishFdStore#recover}). */
    public static FishState fromFdStore(StoredTasks stored, String netnsPath) throws Exception {
        return FishFdStore.recover(stored, netnsPath);
    }

    /** Fish's part of a metrics sample ({@link Clients#sample}). Loop thread. */
    public void sample(warren.daemon.metrics.Sample s) {
        clients.sample(s);
    }

    /** The table in handoff records. Loop thread. */
    public List<FishStateCodec.ClientRecord> snapshot(ToLongFunction<Call> callRef) {
        return FishStateCodec.snapshot(clients.all(), callRef);
    }

    public void close() {
        ns.close();
    }
}
