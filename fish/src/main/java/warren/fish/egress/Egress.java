package warren.fish.egress;

import java.net.InetAddress;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import jnr.ffi.Pointer;
import warren.control.v1.EgressEnded;
import warren.control.v1.EndReason;
import warren.control.v1.Error;
import warren.control.v1.Response;
import warren.daemon.Log;
import warren.daemon.audit.AuditLog;
import warren.daemon.audit.JsonLine;
import warren.daemon.control.Call;
import warren.daemon.loop.EventLoop;
import warren.daemon.metrics.Counters;
import warren.daemon.task.Task;
import warren.daemon.trace.TraceRing;
import warren.daemon.trace.Traceable;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.fish.conntrack.Ctnetlink;
import warren.linux.net.Netns;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.IcmpError;
import warren.packet.Ip;
import warren.packet.PacketView;

/**
 * Fish's egress engine, on the daemon's loop. Each {@code Egress} request is a client: a socket of
 * the client's raw IP packets, a soft-unicast IP and a port range. For each new client flow, a port
 * of the range is reserved in the egress namespace's conntrack table with create-exclusive
 * semantics (the entry's reply tuple is the egress 5-tuple, so a port anyone else uses there fails
 * with EEXIST and the next is tried, never a silent rewrite). The packet's source becomes the
 * soft-unicast IP and that port and it is written to the TUN {@code fish0} in the egress
 * namespace, whose kernel forwards it out. Replies to the soft-unicast IP are routed to the TUN,
 * matched by (IP, protocol, port) in a table indexed by port, rewritten back and written to their
 * client's socket.
 *
 * <pre>
 * flow: NEW (port reserved) --packets--> ACTIVE --FIN both ways / RST / idle timeout--> EXPIRED
 *       (conntrack entry deleted, port free) ; all flows of a client end when its socket closes
 * </pre>
 * Because the reservation's original tuple is the rewritten packet's own, the kernel's conntrack
 * for the forwarded traffic is that very entry: no NAT rule is involved and nothing can rewrite
 * the port behind Fish's back.
 */
public final class Egress {
    /** Timeouts in ms (FishConfig). */
    public record Timeouts(long tcp, long tcpClose, long udp, long icmp) {}

    /** Send buffer set on each client's packet socket (0: leave it). */
    private long clientSndbuf;

    public void clientSendBuffer(long bytes) {
        clientSndbuf = bytes;
    }

    private static final int SO_SNDBUFFORCE = 32;
    private static final int TCP = 0;
    private static final int UDP = 1;
    private static final int ICMP = 2;

    /**
     * A soft-unicast IP in use: its route to fish0, its clients and the flow holding each
     * (protocol, port). It lives exactly as long as its last client ({@link #releaseIfUnused});
     * its table is sized to the ports in use.
     */
    private static final class SoftIp {
        final byte[] addr;
        final PortTable<Flow> flows = new PortTable<>();
        final List<Client> clients = new ArrayList<>(2);

        SoftIp(byte[] addr) {
            this.addr = addr;
        }
    }

    /** One client (one Egress request). */
    final class Client implements Task, Traceable {
        final Call call;
        final int fd;
        int reg;
        final SoftIp soft;
        final int first;
        final int last;
        final String tenant;
        /** SOCK_DGRAM: its peer's close is invisible, so it ends when idle ({@link #armIdle}). */
        final boolean datagram;
        /** When the client last sent or was sent a packet (System.nanoTime). */
        long lastPacket = System.nanoTime();
        EventLoop.Timer idleTimer;
        final Map<FlowKey, Flow> flows = new HashMap<>();
        final byte[] identity = new byte[16];
        boolean haveIdentity;
        long packetsOut;
        long packetsIn;
        long bytesOut;
        long bytesIn;
        int nextPort;
        boolean ended;
        /** While a Trace watches this client: where its packets are copied (null: nothing copied). */
        TraceRing trace;
        /** "no free port" is per dropped packet: at most a few lines per interval per client, then a count. */
        final Log.Limited exhaustedLog = Log.limited("fish.port_range_exhausted");

        Client(Call call, int fd, SoftIp soft, int first, int last, String tenant, boolean datagram) {
            this.call = call;
            this.datagram = datagram;
            this.fd = fd;
            this.soft = soft;
            this.first = first;
            this.last = last;
            this.tenant = tenant;
            this.nextPort = first;
        }

        @Override
        public void cancel() {
            loop.execute(() -> endClient(this, EndReason.CANCELLED));
        }

        @Override
        public void stop() {
            loop.execute(() -> endClient(this, EndReason.SHUTDOWN));
        }

        @Override
        public String state() {
            return flows.size() + " flows";
        }

        @Override
        public String startTrace(TraceRing ring) {
            if (ended) {
                return "the client has ended";
            }
            if (trace != null) {
                return "it is traced already";
            }
            trace = ring;
            return null;
        }

        @Override
        public void stopTrace(TraceRing ring) {
            if (trace == ring) {
                trace = null;
            }
        }

        /**
         * List: the client's packets and bytes each way (out = from the client), and of up to
         * {@link #LISTED_FLOWS} live flows the tuple as the client sent it and as it left.
         */
        @Override
        public void traffic(warren.control.v1.TaskInfo.Builder info) {
            info.setPacketsOut(packetsOut).setBytesOut(bytesOut).setPacketsIn(packetsIn).setBytesIn(bytesIn);
            int n = 0;
            for (Flow f : flows.values()) {
                if (n++ == LISTED_FLOWS) {
                    break;
                }
                info.addTuples(fiveTuple(f.key.protocol, f.key.src, f.key.addressLength(), f.key.srcPort, f.key.dst,
                        f.key.dstPort));
                info.addTuples(fiveTuple(f.key.protocol, f.reserved.src().getAddress(), f.key.addressLength(), f.port,
                        f.reserved.dst().getAddress(), f.key.dstPort));
            }
        }
    }

    /** Flows of one client whose tuples List shows (a client may have thousands). */
    static final int LISTED_FLOWS = 4;

    private static warren.control.v1.FiveTuple fiveTuple(int protocol, byte[] src, int len, int srcPort, byte[] dst,
            int dstPort) {
        return warren.control.v1.FiveTuple.newBuilder().setProtocol(protocol)
                .setSrcIp(com.google.protobuf.ByteString.copyFrom(src, 0, len)).setSrcPort(srcPort)
                .setDstIp(com.google.protobuf.ByteString.copyFrom(dst, 0, len)).setDstPort(dstPort).build();
    }

    /** One client flow and its reservation. */
    static final class Flow {
        final Client client;
        final FlowKey key; // as the client sent it
        final int proto;   // TCP, UDP, ICMP index
        final int port;    // egress port (ICMP: echo id)
        final Ctnetlink.Tuple reserved;
        long lastActive;
        boolean replied; // a packet came back: no longer half-open
        boolean finOut;
        boolean finIn;
        boolean closing;
        long packets;
        long bytes;
        EventLoop.Timer timer;

        Flow(Client client, FlowKey key, int proto, int port, Ctnetlink.Tuple reserved) {
            this.client = client;
            this.key = key;
            this.proto = proto;
            this.port = port;
            this.reserved = reserved;
        }
    }

    private static final Log.Limited RESERVATION_FAILED = Log.every("fish.reservation_failed");
    private static final Log.Limited DELETE_FAILED = Log.every("fish.conntrack_delete_failed");
    /** What the engine is configured with (FishConfig). */
    public record Settings(String netns, List<Prefix> softUnicastPrefixes, Timeouts timeouts, long clientIdleTimeout) {}

    private final EventLoop loop;
    private final Counters counters;
    private final AuditLog audit;
    private final Timeouts timeouts;
    private final Settings settings;
    private final EgressNamespace ns;
    private final Fd tun;
    private final Ctnetlink ct;
    private final AddressTable<SoftIp> softIps = new AddressTable<>();
    private final ByteBuffer buf = ByteBuffer.allocateDirect(65536 + 64);
    private final Pointer bufPtr = Pointer.wrap(Native.RUNTIME, buf);
    private final ByteBuffer scratch = ByteBuffer.allocateDirect(32);
    private final PacketView view = new PacketView();
    private final FlowKey key = new FlowKey();

    /** A fresh engine: creates fish0 in the egress namespace (see {@link EgressNamespace}). */
    public Egress(EventLoop loop, Counters counters, AuditLog audit, Settings settings) throws Exception {
        this(loop, counters, audit, settings, EgressNamespace.create(settings.netns(), settings.softUnicastPrefixes()));
        try {
            removeStale(java.util.Set.of());
            tunReg = loop.register(tun.get(), Native.EPOLLIN, ev -> fromTun());
        } catch (Exception | java.lang.Error e) {
            ns.close();
            throw e;
        }
    }

    /** Removes the entries an earlier Fish left in the egress namespace but {@code keep}; logs and counts them. */
    private void removeStale(java.util.Set<Ctnetlink.Tuple> keep) throws NativeIoException {
        int n = ns.removeStale(settings.softUnicastPrefixes(), keep);
        if (n > 0) {
            counters.counter("reservations.stale_removed").add(n);
            Log.info("removed " + n + " stale conntrack entries an earlier Fish left in " + ns.path
                    + " (marked, fixed-timeout, from a soft-unicast IP, claimed by no client)");
        }
    }

    /**
     * On {@code ns}; a successor's (upgrade in place) holds the predecessor's fish0, whose routes
     * and conntrack entries stay as they are, and starts paused until {@link #resume}.
     */
    private Egress(EventLoop loop, Counters counters, AuditLog audit, Settings settings, EgressNamespace ns) {
        this.loop = loop;
        this.counters = counters;
        this.audit = audit;
        this.settings = settings;
        this.timeouts = settings.timeouts();
        this.ns = ns;
        this.tun = ns.tun;
        this.ct = ns.ct;
        this.kernelMulticast = counters.counter("tun.kernel_multicast");
    }

    private int tunReg = -1;
    private boolean paused;
    private boolean abandoned;

    /**
     * The successor's engine, from the predecessor's {@code fish.egress} item: the TUN, every
     * client (socket, counters, call) and every flow with its reservation (the conntrack entries
     * were never touched). Paused until {@link #resume}. Before the successor's loop runs.
     */
    public static Egress adopt(EventLoop loop, Counters counters, AuditLog audit, Settings settings, boolean recovered,
            warren.handoff.v1.FishState state, List<Fd> fds, java.util.function.LongFunction<Call> calls,
            java.util.function.BiConsumer<Call, Task> adoptTask) throws Exception {
        if (!state.hasFdTun()) {
            throw new IllegalArgumentException("the Fish state carries no TUN");
        }
        Egress e = new Egress(loop, counters, audit, settings,
                EgressNamespace.adopt(settings.netns(), fds.get(state.getFdTun()).transfer()));
        e.paused = true;
        try {
            e.adoptClients(state, fds, calls, adoptTask);
            if (recovered) { // after a crash: entries of flows no recovered client claims are stale
                java.util.Set<Ctnetlink.Tuple> keep = new java.util.HashSet<>();
                for (SoftIp soft : e.softIps.values()) {
                    for (Client c : soft.clients) {
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

    private void adoptClients(warren.handoff.v1.FishState state, List<Fd> fds, java.util.function.LongFunction<Call> calls,
            java.util.function.BiConsumer<Call, Task> adoptTask) throws Exception {
        long now = System.nanoTime();
        for (FishStateCodec.ClientRecord r : FishStateCodec.read(state, fds)) {
            Call call = calls.apply(r.callRef());
            if (call == null || r.fd() < 0) {
                if (r.fd() >= 0) {
                    Native.close(r.fd());
                }
                throw new IllegalArgumentException("tenant '" + r.tenant() + "': "
                        + (call == null ? "no pending Egress request (call ref " + r.callRef() + ")" : "no packet socket"));
            }
            SoftIp soft = softIps.get(r.softIp());
            if (soft == null) {
                soft = new SoftIp(r.softIp()); // its route to fish0 is still there
                softIps.put(soft.addr, soft);
            }
            Client c = new Client(call, r.fd(), soft, r.first(), r.last(), r.tenant(),
                    warren.fdpass.FdInfo.of(r.fd()).type() == Native.SOCK_DGRAM);
            if (r.identity().length > 0) {
                System.arraycopy(r.identity(), 0, c.identity, 0, r.identity().length);
                c.haveIdentity = true;
            }
            c.nextPort = r.nextPort();
            c.packetsOut = r.packetsOut();
            c.packetsIn = r.packetsIn();
            c.bytesOut = r.bytesOut();
            c.bytesIn = r.bytesIn();
            soft.clients.add(c);
            for (FishStateCodec.FlowRecord fr : r.flows()) {
                FlowKey k = new FlowKey();
                warren.control.v1.FiveTuple t = fr.client();
                k.version = t.getSrcIp().size() == 4 ? 4 : 6;
                k.protocol = t.getProtocol();
                t.getSrcIp().copyTo(k.src, 0);
                t.getDstIp().copyTo(k.dst, 0);
                k.srcPort = t.getSrcPort();
                k.dstPort = t.getDstPort();
                if ((k.version == 4) != (soft.addr.length == 4)) {
                    throw new IllegalArgumentException("flow " + k + " of tenant '" + c.tenant + "' is not of its IP's family");
                }
                int proto = protoIndex(k.protocol);
                Flow f = new Flow(c, k, proto, fr.egressPort(), reservation(k, soft.addr, fr.egressPort())[0]);
                f.replied = fr.replied();
                f.finOut = fr.finOut();
                f.finIn = fr.finIn();
                f.closing = fr.closing();
                f.packets = fr.packets();
                f.bytes = fr.bytes();
                f.lastActive = now - fr.idleMillis() * 1_000_000L;
                if (!soft.flows.put(proto, f.port, f)) {
                    throw new IllegalArgumentException("two flows on " + proto + " port " + f.port);
                }
                c.flows.put(k, f);
            }
            adoptTask.accept(call, c);
        }
    }

    /** Stops reading clients and the TUN and stops the flows' timers, for a handoff. Loop thread. */
    public void pause() {
        if (paused) {
            return;
        }
        paused = true;
        loop.unregister(tunReg);
        tunReg = -1;
        for (SoftIp soft : softIps.values()) {
            for (Client c : soft.clients) {
                loop.unregister(c.reg);
                c.reg = -1;
                if (c.idleTimer != null) {
                    c.idleTimer.cancel();
                    c.idleTimer = null;
                }
                for (Flow f : c.flows.values()) {
                    if (f.timer != null) {
                        f.timer.cancel();
                        f.timer = null;
                    }
                }
            }
        }
    }

    /** Undoes {@link #pause} (the handoff failed), or starts an adopted engine. Loop thread. */
    public void resume() throws NativeIoException {
        if (!paused || abandoned) {
            return;
        }
        paused = false;
        tunReg = loop.register(tun.get(), Native.EPOLLIN, ev -> fromTun());
        for (SoftIp soft : softIps.values()) {
            for (Client c : soft.clients) {
                c.reg = loop.register(c.fd, Native.EPOLLIN | Native.EPOLLRDHUP, ev -> fromClient(c));
                for (Flow f : c.flows.values()) {
                    schedule(f, Math.min(timeoutOf(f), CHECK_AFTER_RESUME_MS)); // refreshes its entry soon
                }
                c.lastPacket = System.nanoTime(); // the pause does not count as idle
                armIdle(c);
            }
        }
    }

    /**
     * The paused engine as the {@code name} handoff item: FishState with the TUN and every
     * client's socket (borrowed: they stay this engine's until {@link #abandon}).
     */
    public warren.daemon.handoff.HandoffItem export(String name, java.util.function.ToLongFunction<Call> callRef) {
        if (!paused) {
            throw new IllegalStateException("export needs a paused engine");
        }
        List<Integer> raw = new ArrayList<>();
        raw.add(tun.get());
        warren.handoff.v1.FishState state = FishStateCodec.write(snapshot(callRef), raw).toBuilder().setFdTun(0).build();
        List<Fd> fds = new ArrayList<>(raw.size());
        for (int fd : raw) {
            fds.add(Fd.adopt(fd)); // views for sending only; never closed
        }
        return new warren.daemon.handoff.HandoffItem(name, state.toByteArray(), fds);
    }

    /**
     * The handoff committed: the successor owns every client and reservation. Nothing is ended,
     * answered or deleted from conntrack here; closing this process's copies of the fds is harmless.
     */
    public void abandon() {
        abandoned = true;
        softIps.clear();
    }

    private static int protoIndex(int protocol) {
        switch (protocol) {
            case Ip.TCP: return TCP;
            case Ip.UDP: return UDP;
            default: return ICMP;
        }
    }

    /**
     * Starts a client. Refuses (INVALID_ARGUMENT) a range that is empty, reversed, out of 1-65535,
     * or that overlaps another client's range on the same soft-unicast IP, and a soft-unicast IP
     * the egress namespace may not route to Fish ({@link EgressNamespace#refusal}).
     */
    public void start(Call call, Fd packets, byte[] softIp, int first, int last, String tenant, boolean datagram)
            throws Exception {
        if (first < 1 || last > 65535 || first > last) {
            packets.close();
            call.fail(Error.Code.INVALID_ARGUMENT, "port range " + first + "-" + last + " is empty, reversed or outside 1-65535");
            return;
        }
        SoftIp soft = softIps.get(softIp);
        if (soft != null) {
            for (Client other : soft.clients) {
                if (first <= other.last && other.first <= last) {
                    packets.close();
                    call.fail(Error.Code.INVALID_ARGUMENT, "port range " + first + "-" + last + " overlaps tenant '"
                            + other.tenant + "' (" + other.first + "-" + other.last + ") on "
                            + InetAddress.getByAddress(softIp).getHostAddress());
                    return;
                }
            }
        } else {
            String refused = ns.refusal(softIp, settings.softUnicastPrefixes());
            if (refused != null) {
                packets.close();
                call.fail(Error.Code.INVALID_ARGUMENT, refused);
                return;
            }
        }
        int flags = Native.fcntl(packets.get(), Native.F_GETFL, 0);
        Native.fcntl(packets.get(), Native.F_SETFL, flags | Native.O_NONBLOCK);
        if (clientSndbuf > 0) {
            try { // a datagram pair's replies queue against the sender's buffer: ~90 full-size packets by default
                Native.setsockoptInt(packets.get(), Native.SOL_SOCKET, SO_SNDBUFFORCE, (int) Math.min(clientSndbuf, 1 << 30));
            } catch (NativeIoException e) {
                Native.setsockoptInt(packets.get(), Native.SOL_SOCKET, Native.SO_SNDBUF, (int) Math.min(clientSndbuf, 1 << 30));
            }
        }
        if (soft == null) {
            ns.addRoute(softIp); // replies to it come to fish0
            soft = new SoftIp(softIp);
            softIps.put(soft.addr, soft);
            counters.increment("soft_ips.added");
        }
        Client c = new Client(call, packets.detach(), soft, first, last, tenant, datagram);
        try {
            c.reg = loop.register(c.fd, Native.EPOLLIN | Native.EPOLLRDHUP, ev -> fromClient(c));
        } catch (Exception | java.lang.Error e) {
            Native.close(c.fd);
            releaseIfUnused(soft);
            throw e;
        }
        soft.clients.add(c);
        call.startTask("egress", c, new JsonLine().put("tenant", tenant)
                .put("soft_unicast_ip", InetAddress.getByAddress(softIp).getHostAddress())
                .put("port_first", first).put("port_last", last), true);
        storeClient(c);
        armIdle(c);
    }

    // ---- crash survival: systemd's fd store (fdstore.proto's StoredTask, item "fish.egress")

    private warren.daemon.TaskStore store;

    /** Keeps the TUN and every client in systemd's fd store from now on. */
    public void enableFdStore(warren.systemd.SdNotify notify) {
        this.store = new warren.daemon.TaskStore(notify, STORE_ITEM);
        notify.fdStore("x.tun", List.of(tun)); // stored once: a second store of the same fd is a no-op
    }

    private void storeClient(Client c) {
        if (store == null || c.call.task() == null) {
            return;
        }
        warren.handoff.v1.FishClient.Builder fc = warren.handoff.v1.FishClient.newBuilder().setTenant(c.tenant)
                .setSoftUnicastIp(com.google.protobuf.ByteString.copyFrom(c.soft.addr)).setPortFirst(c.first)
                .setPortLast(c.last).setNextPort(c.nextPort).setRequestId(c.call.id()).setMetadata(c.call.metadata());
        if (c.haveIdentity) {
            fc.setIdentity(com.google.protobuf.ByteString.copyFrom(c.identity, 0, c.soft.addr.length));
        }
        store.put(c.call, List.of(Fd.adopt(c.fd)), fc.build().toByteString(), false, "client");
    }

    /** The fd store item name of Fish's clients. */
    public static final String STORE_ITEM = "fish.egress";

    /** The conntrack mark of a flow: its client's task (low 16 bits) and the client's own source port. */
    static int mark(long task, int clientPort) {
        return (int) (((task & 0xFFFF) << 16) | (clientPort & 0xFFFF));
    }

    /**
     * Fish's state rebuilt after a crash from the fd store (item "fdstore": the TUN,
     * each client's socket and description) and the egress namespace's conntrack: every TCP and
     * UDP entry whose mark names a client and whose source is its soft-unicast IP and a port of
     * its range is that client's flow (the client's source port is in the mark, its address is
     * the client's identity). ICMP flows are not rebuilt (a new echo gets a new id).
     */
    public static warren.handoff.v1.FishState fromFdStore(warren.handoff.v1.StoredTasks stored, String netnsPath)
            throws Exception {
        int tun = stored.getExtrasList().indexOf("x.tun");
        if (tun < 0) {
            throw new IllegalArgumentException("no x.tun in the fd store");
        }
        warren.handoff.v1.FishState.Builder fs = warren.handoff.v1.FishState.newBuilder().setFormat(FishStateCodec.FORMAT)
                .setFdTun(tun);
        List<Ctnetlink.Entry> entries = Netns.call(EgressNamespace.require(netnsPath), () -> {
            try (Ctnetlink ct = new Ctnetlink()) {
                List<Ctnetlink.Entry> all = new ArrayList<>(ct.dump(Native.AF_INET));
                all.addAll(ct.dump(Native.AF_INET6));
                return all;
            }
        });
        int at = stored.getExtrasCount();
        for (int i = 0; i < stored.getTasksCount(); i++) {
            warren.handoff.v1.StoredTask st = stored.getTasks(i);
            int fdAt = at;
            at += stored.getFdCounts(i);
            if (!st.getItem().equals(STORE_ITEM) || stored.getFdCounts(i) != 1) {
                throw new IllegalArgumentException("a stored task of item " + st.getItem() + " with "
                        + stored.getFdCounts(i) + " fds");
            }
            warren.handoff.v1.FishClient.Builder fc = warren.handoff.v1.FishClient.parseFrom(st.getPayload()).toBuilder()
                    .setFdPackets(fdAt).setCallRef(st.getCall().getTask());
            byte[] soft = fc.getSoftUnicastIp().toByteArray();
            if (!fc.getIdentity().isEmpty()) {
                for (Ctnetlink.Entry e : entries) {
                    Ctnetlink.Tuple o = e.original();
                    if ((o.protocol() != Ip.TCP && o.protocol() != Ip.UDP) || (e.mark() >>> 16) != (st.getCall().getTask() & 0xFFFF)
                            || !java.util.Arrays.equals(o.src().getAddress(), soft) || o.srcPort() < fc.getPortFirst()
                            || o.srcPort() > fc.getPortLast()) {
                        continue;
                    }
                    fc.addFlows(warren.handoff.v1.FishFlow.newBuilder().setClient(warren.control.v1.FiveTuple.newBuilder()
                            .setProtocol(o.protocol()).setSrcIp(fc.getIdentity()).setSrcPort(e.mark() & 0xFFFF)
                            .setDstIp(com.google.protobuf.ByteString.copyFrom(o.dst().getAddress())).setDstPort(o.dstPort()))
                            .setEgressPort(o.srcPort()).setReplied(true));
                }
            }
            fs.addClients(fc);
        }
        return fs.build();
    }

    private final warren.fdpass.RecvBatch rx = new warren.fdpass.RecvBatch(16, 65536 + 64);

    private void fromClient(Client c) {
        for (int round = 0; round < 4 && !c.ended; round++) {
            int got = rx.receive(c.fd);
            if (got < 0) {
                endClient(c, EndReason.ERROR);
                return;
            }
            if (got > 0) {
                c.lastPacket = System.nanoTime(); // once per batch
            }
            for (int m = 0; m < got && !c.ended; m++) {
                int len = rx.length(m);
                if (len == 0) {
                    endClient(c, EndReason.FLOW_ENDED);
                    return;
                }
                buf.put(0, rx.buffer(), rx.offset(m), len); // into the working buffer (headroom for rewrites)
                clientPacket(c, len);
            }
            if (got < rx.count()) {
                return;
            }
        }
    }

    /** One packet from a client, in {@code buf} at offset 0. */
    private void clientPacket(Client c, int n) {
        if (c.trace != null) {
            c.trace.copy(buf, 0, n, TraceRing.CLIENT_IN);
        }
        do {
            DropReason r = view.parse(buf, 0, n, key);
            if (r != DropReason.NONE) {
                counters.increment("drops." + r.name().toLowerCase(java.util.Locale.ROOT));
                continue;
            }
            if (key.protocol == Ip.ICMP || key.protocol == Ip.ICMPV6) {
                int type = buf.get(view.l4Offset()) & 0xFF;
                if (type != (key.version == 4 ? 8 : 128)) {
                    counters.increment("drops.icmp_not_echo");
                    continue;
                }
            }
            if ((key.version == 4) != (c.soft.addr.length == 4)) {
                counters.increment("drops.wrong_family");
                continue;
            }
            if (!c.haveIdentity) {
                System.arraycopy(key.src, 0, c.identity, 0, 16);
                c.haveIdentity = true;
                storeClient(c); // once per client: the recovered flows need it
            } else if (!java.util.Arrays.equals(c.identity, key.src)) {
                counters.increment("drops.wrong_source");
                continue;
            }
            Flow f = c.flows.get(key);
            if (f == null) {
                f = reserve(c);
                if (f == null) {
                    reject(c, n);
                    continue;
                }
            }
            scratch.put(0, c.soft.addr);
            view.rewrite(true, scratch, 0, f.port);
            if (Native.write(tun.get(), bufPtr, view.length()) < 0) {
                counters.increment("drops.tun_full");
                continue;
            }
            if (c.trace != null) {
                c.trace.copy(buf, 0, view.length(), TraceRing.TRANSLATED_OUT);
            }
            c.packetsOut++;
            c.bytesOut += view.length();
            f.packets++;
            f.bytes += view.length();
            touch(f, true);
        } while (false);
    }

    /** Picks a port of the client's range and reserves it in conntrack; null on exhaustion. */
    private Flow reserve(Client c) {
        int proto = protoIndex(key.protocol);
        int size = c.last - c.first + 1;
        try {
            for (int i = 0; i < size; i++) {
                int port = c.first + (c.nextPort - c.first + i) % size;
                if (c.soft.flows.get(proto, port) != null) {
                    continue;
                }
                Ctnetlink.Tuple[] t = reservation(key, c.soft.addr, port);
                Ctnetlink.Tuple orig = t[0];
                Ctnetlink.Tuple reply = t[1];
                if (!ct.createExclusive(orig, reply, kernelTimeout(proto), Ctnetlink.TCP_CONNTRACK_ESTABLISHED,
                        mark(c.call.task().number(), key.srcPort), Ctnetlink.IPS_FIXED_TIMEOUT)) {
                    counters.increment("reservations.collisions");
                    continue;
                }
                counters.increment("reservations.made");
                Flow f = new Flow(c, new FlowKey().copyFrom(key), proto, port, orig);
                c.soft.flows.put(proto, port, f);
                c.flows.put(f.key, f);
                c.nextPort = port + 1 > c.last ? c.first : port + 1;
                audit.write(audit.line("flow_start", c.call.task() == null ? 0 : c.call.task().number())
                        .put("tenant", c.tenant).put("client", f.key.toString()).put("egress", orig.toString()));
                return f;
            }
        } catch (Exception e) {
            RESERVATION_FAILED.error("conntrack reservation failed", e);
            counters.increment("reservations.errors");
            return null;
        }
        counters.increment("reservations.exhausted");
        if (!c.exhaustedLog.suppresses()) { // formats nothing while suppressed
            c.exhaustedLog.warn("tenant '" + c.tenant + "': no free port in " + c.first + "-" + c.last + " for " + key
                    + "; dropped");
        }
        return null;
    }

    /** The conntrack entry (original, reply) reserving {@code port} of {@code softIp} for the flow {@code k}. */
    private static Ctnetlink.Tuple[] reservation(FlowKey k, byte[] softIp, int port) throws java.net.UnknownHostException {
        InetAddress soft = InetAddress.getByAddress(softIp);
        InetAddress dst = InetAddress.getByAddress(java.util.Arrays.copyOf(k.dst, softIp.length));
        if (protoIndex(k.protocol) == ICMP) {
            boolean v6 = k.protocol == Ip.ICMPV6;
            return new Ctnetlink.Tuple[] {new Ctnetlink.Tuple(k.protocol, soft, dst, port, (v6 ? 128 : 8) << 8),
                new Ctnetlink.Tuple(k.protocol, dst, soft, port, (v6 ? 129 : 0) << 8)};
        }
        Ctnetlink.Tuple orig = new Ctnetlink.Tuple(k.protocol, soft, dst, port, k.dstPort);
        return new Ctnetlink.Tuple[] {orig, orig.reversed()};
    }

    private long timeoutFor(int proto, boolean closing) {
        switch (proto) {
            case TCP: return closing ? timeouts.tcpClose() : timeouts.tcp();
            case UDP: return timeouts.udp();
            default: return timeouts.icmp();
        }
    }

    private void touch(Flow f, boolean outbound) {
        f.lastActive = System.nanoTime();
        f.client.lastPacket = f.lastActive;
        if (!outbound) {
            f.replied = true;
        }
        if (f.proto == TCP) {
            int flags = view.tcpFlags();
            if ((flags & Ip.TCP_RST) != 0) {
                f.closing = true;
            }
            if ((flags & Ip.TCP_FIN) != 0) {
                if (outbound) {
                    f.finOut = true;
                } else {
                    f.finIn = true;
                }
                f.closing = f.finOut && f.finIn;
            }
        }
        if (f.timer == null) {
            schedule(f);
        }
    }

    /** Like conntrack: TCP half-open (no reply yet) and closing flows get the short timeout. */
    private long timeoutOf(Flow f) {
        return timeoutFor(f.proto, f.closing || (f.proto == TCP && !f.replied));
    }

    /**
     * Slack of a reservation's timeout in the kernel over Fish's own expiry (s): the entry must
     * outlive the flow's next check even when the loop is late or an upgrade pauses it.
     */
    static final int KERNEL_SLACK_SECONDS = 60;
    /** After a resume (upgrade, recovery) each flow is checked, and its entry refreshed, this soon. */
    static final long CHECK_AFTER_RESUME_MS = 5_000;

    /**
     * The timeout Fish's conntrack entries carry (s): the protocol's longest flow timeout plus
     * {@link #KERNEL_SLACK_SECONDS}. The entries are IPS_FIXED_TIMEOUT, so the packets the kernel
     * tracks on them never raise it (TCP's established default is 5 days); Fish refreshes it at
     * each check of a live flow, and deletes the entry when the flow expires. A Fish that dies
     * without systemd leaves entries that go by themselves within this time, and a Fish started
     * afresh removes them at once ({@link #removeStale}).
     */
    private int kernelTimeout(int proto) {
        return (int) (timeoutFor(proto, false) / 1000) + KERNEL_SLACK_SECONDS;
    }

    private void schedule(Flow f) {
        schedule(f, timeoutOf(f));
    }

    /**
     * The flow's check in {@code delay} ms: it expires if idle for its timeout (or its client has
     * ended); else its entry's timeout is refreshed in the kernel and the next check scheduled. A
     * live flow is checked at least every timeout, so its entry never runs out.
     */
    private void schedule(Flow f, long delay) {
        f.timer = loop.schedule(delay, () -> {
            f.timer = null;
            long idle = (System.nanoTime() - f.lastActive) / 1_000_000;
            if (idle >= timeoutOf(f) || f.client.ended) {
                expire(f, f.closing ? "closed" : "idle");
                return;
            }
            try {
                if (!ct.refreshFixed(f.reserved, kernelTimeout(f.proto))) {
                    counters.increment("reservations.lost");
                    Log.warn("the conntrack entry of " + f.reserved + " has gone (deleted by someone else?); the flow"
                            + " goes on unreserved until it expires");
                }
            } catch (NativeIoException e) {
                counters.increment("reservations.errors");
                Log.warn("conntrack refresh of " + f.reserved + " failed: " + e.getMessage());
            }
            schedule(f);
        });
    }

    private void expire(Flow f, String why) {
        Client c = f.client;
        c.soft.flows.remove(f.proto, f.port, f);
        c.flows.remove(f.key);
        if (c.flows.isEmpty()) {
            armIdle(c);
        }
        if (f.timer != null) {
            f.timer.cancel();
            f.timer = null;
        }
        try {
            ct.delete(f.reserved);
        } catch (NativeIoException e) {
            DELETE_FAILED.warn("conntrack delete of " + f.reserved + " failed: " + e.getMessage());
        }
        counters.increment("flows.expired");
        audit.write(audit.line("flow_end", c.call.task() == null ? 0 : c.call.task().number()).put("tenant", c.tenant)
                .put("client", f.key.toString()).put("egress", f.reserved.toString()).put("packets", f.packets)
                .put("bytes", f.bytes).put("reason", why));
    }

    private void fromTun() {
        for (int i = 0; i < 64; i++) {
            long n = Native.read(tun.get(), bufPtr, 65536);
            if (n <= 0) {
                return;
            }
            if (kernelMulticast((int) n)) {
                kernelMulticast.increment(); // the kernel's own chatter on fish0, not a reply lost
                continue;
            }
            if (view.parse(buf, 0, (int) n, key) != DropReason.NONE) {
                counters.increment("drops.reply_malformed");
                continue;
            }
            SoftIp soft = softIps.get(key.dst, key.addressLength());
            if (soft != null && IcmpError.is(view, buf)) {
                icmpErrorToClient(soft);
                continue;
            }
            int proto = protoIndex(key.protocol);
            int port = key.dstPort;
            Flow f = soft == null ? null : soft.flows.get(proto, port);
            if (f == null || f.client.ended || !matches(java.util.Arrays.copyOf(f.key.dst, key.addressLength()), key.src)
                    || (proto != ICMP && key.srcPort != f.key.dstPort)) {
                counters.increment("drops.reply_no_flow");
                continue;
            }
            Client c = f.client;
            if (c.trace != null) {
                c.trace.copy(buf, 0, view.length(), TraceRing.TRANSLATED_IN);
            }
            scratch.put(0, f.key.src, 0, 16);
            view.rewrite(false, scratch, 0, proto == ICMP ? f.key.srcPort : f.key.srcPort);
            if (Native.send(c.fd, bufPtr, view.length(), Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL) < 0) {
                sendFailed(c);
                continue;
            }
            if (c.trace != null) {
                c.trace.copy(buf, 0, view.length(), TraceRing.CLIENT_OUT);
            }
            c.packetsIn++;
            c.bytesIn += view.length();
            f.packets++;
            f.bytes += view.length();
            touch(f, false);
        }
    }

    private final FlowKey inner = new FlowKey();
    private final java.util.concurrent.atomic.LongAdder kernelMulticast;

    /**
     * A packet read from fish0 to a multicast (or IPv4 broadcast) destination: never a reply to a
     * soft-unicast IP, but the kernel's own traffic on the link (MLD reports once IPv6 forwarding
     * is on). Counted as {@code tun.kernel_multicast}, not as a drop. Reads two bytes of
     * {@code buf}; {@code n} is the packet's length.
     */
    private boolean kernelMulticast(int n) {
        int version = (buf.get(0) >> 4) & 0xF;
        return version == 6 ? n >= Ip.V6_HEADER && (buf.get(Ip.V6_DST) & 0xFF) == 0xFF
                : version == 4 && n >= Ip.V4_HEADER && (buf.get(Ip.V4_DST) & 0xFF) >= 224;
    }

    /**
     * A send to a client failed: its buffer is full (the packet is dropped and counted), or, on a
     * datagram pair, its peer has closed (ECONNREFUSED, then ENOTCONN): the client ends now.
     */
    private void sendFailed(Client c) {
        int e = Native.errno();
        if (e == warren.fdpass.libc.Errno.ECONNREFUSED || e == warren.fdpass.libc.Errno.ENOTCONN) {
            endClient(c, EndReason.FLOW_ENDED);
        } else {
            counters.increment("drops.client_full");
        }
    }

    /**
     * A datagram client with no flow ends after fish.client_idle_timeout without a packet either
     * way (IDLE_TIMEOUT): nothing else tells Fish its peer has gone. Armed when it starts or
     * resumes with no flow and when its last flow expires; the check re-arms itself for the rest
     * of the timeout while packets come and stops while flows live.
     */
    private void armIdle(Client c) {
        if (c.datagram && !c.ended && !paused && c.idleTimer == null && settings.clientIdleTimeout() > 0) {
            long idle = (System.nanoTime() - c.lastPacket) / 1_000_000;
            c.idleTimer = loop.schedule(Math.max(0, settings.clientIdleTimeout() - idle), () -> idleCheck(c));
        }
    }

    private void idleCheck(Client c) {
        c.idleTimer = null;
        if (c.ended || !c.flows.isEmpty()) {
            return; // the last flow's expiry arms it again
        }
        if ((System.nanoTime() - c.lastPacket) / 1_000_000 >= settings.clientIdleTimeout()) {
            endClient(c, EndReason.IDLE_TIMEOUT);
        } else {
            armIdle(c);
        }
    }

    /**
     * An ICMP error from the internet about a packet Fish sent for a flow: the inner header is
     * mapped back to the client's own tuple, the outer destination becomes the client, and it goes
     * to that client only (the inner tuple must be the flow's reservation).
     */
    private void icmpErrorToClient(SoftIp soft) {
        if (!IcmpError.innerKey(view, buf, inner)) {
            counters.increment("drops.icmp_error_unreadable");
            return;
        }
        Flow f = soft.flows.get(protoIndex(inner.protocol), inner.srcPort);
        int alen = inner.addressLength();
        if (f == null || f.client.ended || !matches(java.util.Arrays.copyOf(f.key.dst, alen), inner.dst)
                || inner.dstPort != f.key.dstPort) {
            counters.increment("drops.icmp_error_no_flow");
            return;
        }
        Client c = f.client;
        if (c.trace != null) {
            c.trace.copy(buf, 0, view.length(), TraceRing.TRANSLATED_IN);
        }
        scratch.put(0, f.key.src, 0, 16);
        IcmpError.rewriteInner(view, buf, true, scratch, 0, f.key.srcPort);
        view.setAddress(false, scratch, 0);
        IcmpError.fixOuter(view);
        if (Native.send(c.fd, bufPtr, view.length(), Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL) < 0) {
            sendFailed(c);
            return;
        }
        if (c.trace != null) {
            c.trace.copy(buf, 0, view.length(), TraceRing.CLIENT_OUT);
        }
        counters.increment("icmp_errors.to_client");
    }

    /**
     * No port left for a new flow: tell the client at once instead of letting it time out — a
     * TCP RST for a SYN, an ICMP "administratively prohibited" for anything else. The packet is
     * still in {@code buf} (parsed into {@code view}/{@code key}).
     */
    private void reject(Client c, int n) {
        boolean v4 = key.version == 4;
        int ip = v4 ? Ip.V4_HEADER : Ip.V6_HEADER;
        ByteBuffer out = rejectBuf;
        int total;
        for (int i = 0; i < out.capacity(); i++) {
            out.put(i, (byte) 0);
        }
        if (key.protocol == Ip.TCP) {
            if ((view.tcpFlags() & Ip.TCP_RST) != 0) {
                return;
            }
            long seq = buf.getInt(view.l4Offset() + 4) & 0xFFFFFFFFL;
            total = ip + Ip.TCP_HEADER;
            header(out, v4, Ip.TCP, total);
            int t = ip;
            out.putShort(t, (short) key.dstPort).putShort(t + 2, (short) key.srcPort).putInt(t + 4, 0)
                    .putInt(t + 8, (int) (seq + 1)).put(t + 12, (byte) 0x50).put(t + 13, (byte) (Ip.TCP_RST | Ip.TCP_ACK));
        } else {
            int quote = Math.min(n, v4 ? 548 : 1232 - ip - 8);
            total = ip + Ip.ICMP_HEADER + quote;
            header(out, v4, v4 ? Ip.ICMP : Ip.ICMPV6, total);
            out.put(ip, (byte) (v4 ? 3 : 1)).put(ip + 1, (byte) (v4 ? 13 : 1)); // administratively prohibited
            for (int i = 0; i < quote; i++) {
                out.put(ip + Ip.ICMP_HEADER + i, buf.get(i));
            }
        }
        if (view.parse(out, 0, total, inner) != DropReason.NONE) {
            return;
        }
        view.fixChecksums();
        if (Native.send(c.fd, rejectPtr, total, Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL) >= 0 && c.trace != null) {
            c.trace.copy(out, 0, total, TraceRing.CLIENT_OUT);
        }
        counters.increment("rejects.sent");
    }

    private final ByteBuffer rejectBuf = ByteBuffer.allocateDirect(1500);
    private final Pointer rejectPtr = Pointer.wrap(Native.RUNTIME, rejectBuf);

    /** An IP header from the packet's destination back to its source (the one in {@code key}). */
    private void header(ByteBuffer out, boolean v4, int protocol, int total) {
        if (v4) {
            out.put(0, (byte) 0x45).putShort(Ip.V4_TOTAL_LENGTH, (short) total).put(Ip.V4_TTL, (byte) 64)
                    .put(Ip.V4_PROTOCOL, (byte) protocol);
            out.put(Ip.V4_SRC, key.dst, 0, 4).put(Ip.V4_DST, key.src, 0, 4);
            out.putShort(Ip.V4_CHECKSUM, (short) warren.packet.Checksum.finish(warren.packet.Checksum.sum(out, 0, 20)));
        } else {
            out.put(0, (byte) 0x60).putShort(Ip.V6_PAYLOAD_LENGTH, (short) (total - Ip.V6_HEADER))
                    .put(Ip.V6_NEXT_HEADER, (byte) protocol).put(Ip.V6_HOP_LIMIT, (byte) 64);
            out.put(Ip.V6_SRC, key.dst, 0, 16).put(Ip.V6_DST, key.src, 0, 16);
        }
    }

    private static boolean matches(byte[] a, byte[] b) {
        for (int i = 0; i < a.length; i++) {
            if (a[i] != b[i]) {
                return false;
            }
        }
        return true;
    }

    /** Traffic of ended clients; live clients are added by {@link #sample}. */
    private static final String[] TRAFFIC = {"ip.packets.out", "ip.packets.in", "ip.bytes.out", "ip.bytes.in"};
    private static final String[] PROTOCOLS = {"tcp", "udp", "icmp"};

    /**
     * Fish's part of a metrics sample: the traffic of live clients (so the counters move while
     * they last) and, per tenant and protocol, the ports of their ranges no flow holds. Loop thread.
     */
    public void sample(warren.daemon.metrics.Sample s) {
        long[] t = new long[4];
        int[] held = new int[3];
        for (SoftIp soft : softIps.values()) {
            for (Client c : soft.clients) {
                t[0] += c.packetsOut;
                t[1] += c.packetsIn;
                t[2] += c.bytesOut;
                t[3] += c.bytesIn;
                java.util.Arrays.fill(held, 0);
                for (Flow f : c.flows.values()) {
                    held[f.proto]++;
                }
                for (int p = 0; p < 3; p++) {
                    s.gauge(warren.daemon.metrics.Families.PORTS_FREE, c.last - c.first + 1 - held[p], c.tenant,
                            PROTOCOLS[p]);
                }
            }
        }
        for (int i = 0; i < 4; i++) {
            s.addCounter(TRAFFIC[i], t[i]);
        }
        s.gauge(warren.daemon.metrics.Families.SOFT_IPS, softIps.size());
    }

    private void endClient(Client c, EndReason reason) {
        if (c.ended) {
            return;
        }
        c.ended = true;
        if (c.idleTimer != null) {
            c.idleTimer.cancel();
            c.idleTimer = null;
        }
        counters.counter(TRAFFIC[0]).add(c.packetsOut);
        counters.counter(TRAFFIC[1]).add(c.packetsIn);
        counters.counter(TRAFFIC[2]).add(c.bytesOut);
        counters.counter(TRAFFIC[3]).add(c.bytesIn);
        c.trace = null; // its trace sees the task end and finishes
        loop.unregister(c.reg);
        if (store != null && c.call.task() != null) {
            store.remove(c.call.task().number());
        }
        Native.close(c.fd);
        for (Flow f : new ArrayList<>(c.flows.values())) {
            expire(f, "client ended");
        }
        c.soft.clients.remove(c);
        releaseIfUnused(c.soft);
        c.call.reply(Response.newBuilder().setEgressEnded(EgressEnded.newBuilder().setPacketsOut(c.packetsOut)
                .setPacketsIn(c.packetsIn).setBytesOut(c.bytesOut).setBytesIn(c.bytesIn).setReason(reason)),
                List.of(), reason.name(), new JsonLine().put("reason", reason.name()).put("packets_out", c.packetsOut)
                        .put("packets_in", c.packetsIn).put("bytes_out", c.bytesOut).put("bytes_in", c.bytesIn));
    }

    /**
     * A soft-unicast IP goes with its last client: its route to fish0 and its table (its flows
     * have all expired with their clients, their conntrack entries deleted).
     */
    private void releaseIfUnused(SoftIp soft) {
        if (!soft.clients.isEmpty() || softIps.get(soft.addr) != soft) {
            return;
        }
        softIps.remove(soft.addr);
        counters.increment("soft_ips.removed");
        try {
            ns.removeRoute(soft.addr);
        } catch (Exception e) {
            Log.warn("route of " + Prefix.text(soft.addr) + " to fish0 not removed: " + e.getMessage());
        }
    }

    /** The table in handoff records; {@code now} for idle times. Loop thread. */
    public List<FishStateCodec.ClientRecord> snapshot(java.util.function.ToLongFunction<Call> callRef) {
        long now = System.nanoTime();
        List<FishStateCodec.ClientRecord> out = new ArrayList<>();
        for (SoftIp soft : softIps.values()) {
            for (Client c : soft.clients) {
                List<FishStateCodec.FlowRecord> flows = new ArrayList<>();
                for (Flow f : c.flows.values()) {
                    int len = f.key.addressLength();
                    flows.add(new FishStateCodec.FlowRecord(warren.control.v1.FiveTuple.newBuilder()
                            .setProtocol(f.key.protocol)
                            .setSrcIp(com.google.protobuf.ByteString.copyFrom(f.key.src, 0, len)).setSrcPort(f.key.srcPort)
                            .setDstIp(com.google.protobuf.ByteString.copyFrom(f.key.dst, 0, len)).setDstPort(f.key.dstPort)
                            .build(), f.port, f.replied, f.finOut, f.finIn, f.closing, f.packets, f.bytes,
                            (now - f.lastActive) / 1_000_000));
                }
                out.add(new FishStateCodec.ClientRecord(c.tenant, soft.addr, c.first, c.last, c.fd,
                        c.haveIdentity ? java.util.Arrays.copyOf(c.identity, soft.addr.length) : new byte[0], c.nextPort,
                        c.packetsOut, c.packetsIn, c.bytesOut, c.bytesIn, c.call.id(), c.call.metadata(), flows,
                        callRef.applyAsLong(c.call)));
            }
        }
        return out;
    }

    public void close() {
        ns.close();
    }
}
