package warren.fish.egress;

import com.google.protobuf.ByteString;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.function.BiConsumer;
import java.util.function.LongFunction;
import java.util.function.ToLongFunction;
import warren.control.v1.FiveTuple;
import warren.daemon.control.Call;
import warren.daemon.handoff.DeltaCheck;
import warren.daemon.task.Task;
import warren.fdpass.Fd;
import warren.fdpass.FdInfo;
import warren.fdpass.libc.Native;
import warren.fish.conntrack.Ctnetlink;
import warren.handoff.v1.FishClient;
import warren.handoff.v1.FishFlow;
import warren.handoff.v1.FishState;
import warren.handoff.v1.StoredTask;
import warren.handoff.v1.StoredTasks;
import warren.packet.FlowKey;
import warren.packet.Ip;

/**
 * Fish's state across processes, the one place that knows its encodings: the engine's clients and
 * flows as plain records ({@link #snapshot}, {@link #restore}), the records in the handoff
 * encoding ({@code warren.handoff.v1.FishState}) and back, a client's fd-store description
 * ({@link #storedClient}), and a FishState rebuilt from the fd store and conntrack after a crash
 * ({@link #fromFdStore}).
 */
public final class FishStateCodec {
    public static final int FORMAT = 1;

    private FishStateCodec() {}

    /** One flow of a client. */
    public record FlowRecord(FiveTuple client, int egressPort, boolean replied, boolean finOut, boolean finIn,
            boolean closing, long packets, long bytes, long idleMillis) {}

    /**
     * One client; {@code fd} is a raw fd number (borrowed when writing, owned after reading), -1 if
     * none; {@code key} its pre-copy key (0: none).
     */
    public record ClientRecord(String tenant, byte[] softIp, int first, int last, int fd, byte[] identity, int nextPort,
            long packetsOut, long packetsIn, long bytesOut, long bytesIn, long requestId, ByteString metadata,
            List<FlowRecord> flows, long callRef, boolean vnet, long key) {
        public ClientRecord(String tenant, byte[] softIp, int first, int last, int fd, byte[] identity, int nextPort,
                long packetsOut, long packetsIn, long bytesOut, long bytesIn, long requestId, ByteString metadata,
                List<FlowRecord> flows, long callRef, boolean vnet) {
            this(tenant, softIp, first, last, fd, identity, nextPort, packetsOut, packetsIn, bytesOut, bytesIn, requestId,
                    metadata, flows, callRef, vnet, 0);
        }
    }

    /** Encodes; {@code fdsOut} receives the clients' fds in the order the fd_packets fields index them. */
    public static FishState write(List<ClientRecord> clients, List<Integer> fdsOut) {
        FishState.Builder s = FishState.newBuilder().setFormat(FORMAT);
        for (ClientRecord c : clients) {
            FishClient.Builder b = FishClient.newBuilder().setTenant(c.tenant()).setSoftUnicastIp(ByteString.copyFrom(c.softIp()))
                    .setPortFirst(c.first()).setPortLast(c.last()).setIdentity(ByteString.copyFrom(c.identity()))
                    .setNextPort(c.nextPort()).setPacketsOut(c.packetsOut()).setPacketsIn(c.packetsIn())
                    .setBytesOut(c.bytesOut()).setBytesIn(c.bytesIn()).setRequestId(c.requestId())
                    .setMetadata(c.metadata()).setCallRef(c.callRef()).setVnetHdr(c.vnet()).setKey(c.key());
            if (c.fd() >= 0) {
                b.setFdPackets(fdsOut.size());
                fdsOut.add(c.fd());
            }
            for (FlowRecord f : c.flows()) {
                b.addFlows(flow(f));
            }
            s.addClients(b);
        }
        return s.build();
    }

    /**
     * Decodes the whole clients (a delta's updates are {@link Egress}'s to apply: {@link #flowKey},
     * {@link #flowRecord}); the fds named are detached from {@code fds} into the records. The whole
     * state is {@link #check}ed first: a refused one (IllegalArgumentException) has taken no fd.
     */
    public static List<ClientRecord> read(FishState s, List<Fd> fds) {
        check(s, fds);
        List<ClientRecord> out = new ArrayList<>();
        for (FishClient c : s.getClientsList()) {
            if (c.getUpdate()) {
                continue;
            }
            List<FlowRecord> flows = new ArrayList<>();
            for (FishFlow f : c.getFlowsList()) {
                flows.add(new FlowRecord(f.getClient(), f.getEgressPort(), f.getReplied(), f.getFinOut(), f.getFinIn(),
                        f.getClosing(), f.getPackets(), f.getBytes(), f.getIdleMs()));
            }
            out.add(new ClientRecord(c.getTenant(), c.getSoftUnicastIp().toByteArray(), c.getPortFirst(), c.getPortLast(),
                    c.hasFdPackets() ? fds.get(c.getFdPackets()).detach() : -1, c.getIdentity().toByteArray(),
                    c.getNextPort(), c.getPacketsOut(), c.getPacketsIn(), c.getBytesOut(), c.getBytesIn(),
                    c.getRequestId(), c.getMetadata(), flows, c.getCallRef(), c.getVnetHdr(), c.getKey()));
        }
        return out;
    }

    /** A flow of a state as a record. */
    static FlowRecord flowRecord(FishFlow f) {
        return new FlowRecord(f.getClient(), f.getEgressPort(), f.getReplied(), f.getFinOut(), f.getFinIn(), f.getClosing(),
                f.getPackets(), f.getBytes(), f.getIdleMs());
    }

    /**
     * Refuses a state {@link #read} and {@link #restore} cannot take whole, before any fd is taken
     * (a refusal halfway would leave the clients' sockets detached with no owner): its format; the
     * TUN's index (uint32, read unsigned) in range; each client's soft-unicast IP of 4 or 16 bytes,
     * its identity empty or as long, its port range within 0-65535 and in order, each flow's port in
     * it and its addresses of the IP's length, its socket's index in range, open and used once.
     */
    static void check(FishState s, List<Fd> fds) {
        checkClients(s);
        java.util.BitSet used = new java.util.BitSet(fds.size());
        if (s.hasFdTun()) {
            long tun = Integer.toUnsignedLong(s.getFdTun());
            if (tun >= fds.size()) {
                throw new IllegalArgumentException("TUN fd index " + tun + " of " + fds.size());
            }
            used.set((int) tun); // taken before the clients are read (Egress.adopt)
        }
        for (FishClient c : s.getClientsList()) {
            if (c.hasFdPackets()) {
                long i = Integer.toUnsignedLong(c.getFdPackets());
                if (i >= fds.size() || used.get((int) i) || !fds.get((int) i).isOpen()) {
                    throw new IllegalArgumentException("tenant '" + c.getTenant() + "': socket fd index " + i
                            + " out of range (" + fds.size() + " fds), closed or used twice");
                }
                used.set((int) i);
            }
        }
    }

    /** Most queues a fish0 handed over may have (one per loop). */
    static final int MAX_QUEUES = 1024;

    /** {@link #check} of a pre-copy chunk (pre_copy set), for the successor's handler. */
    public static void checkChunk(FishState s, List<Fd> fds) {
        if (!s.getPreCopy()) {
            throw new IllegalArgumentException("a pre-copy chunk without pre_copy");
        }
        check(s, fds);
    }

    /** {@link #check} without the fds: the format and each client's IP, identity, ports and flows. */
    static void checkClients(FishState s) {
        if (s.getFormat() != FORMAT) {
            throw new IllegalArgumentException("Fish state format " + s.getFormat() + "; this version reads " + FORMAT);
        }
        if (s.getPreCopy() && s.hasFdTun() && (Integer.toUnsignedLong(s.getQueueIndex()) >= Integer.toUnsignedLong(s.getQueues())
                || Integer.toUnsignedLong(s.getQueues()) > MAX_QUEUES)) {
            throw new IllegalArgumentException("pre-copied queue " + Integer.toUnsignedLong(s.getQueueIndex()) + " of "
                    + Integer.toUnsignedLong(s.getQueues()));
        }
        if (s.getPreCopy() && s.getEndedCount() > 0) {
            throw new IllegalArgumentException("a pre-copy chunk with ended clients");
        }
        // without the copies (Egress.adoptDelta checks against them), any key but 0 may name one
        DeltaCheck delta = new DeltaCheck(k -> k != 0, k -> "client key " + Long.toUnsignedString(k));
        for (long k : s.getEndedList()) {
            delta.ended(k);
        }
        java.util.Set<Long> copied = new java.util.HashSet<>();
        for (FishClient c : s.getClientsList()) {
            String t = "tenant '" + c.getTenant() + "': ";
            if (c.getUpdate()) {
                delta.updated(c.getKey());
                checkUpdate(s, c, t);
                continue;
            }
            if (c.getKey() != 0 && (!copied.add(c.getKey()) || delta.isEnded(c.getKey()))) {
                throw new IllegalArgumentException(t + "client key " + Long.toUnsignedString(c.getKey())
                        + " twice in one state (or both ended and there)");
            }
            if (s.getPreCopy() != (c.getKey() != 0) || c.getEndedFlowsCount() > 0) {
                throw new IllegalArgumentException(t + (s.getPreCopy() ? "a pre-copied client with no key"
                        : "a key or ended flows outside a pre-copy or an update"));
            }
            int alen = c.getSoftUnicastIp().size();
            if (alen != 4 && alen != 16) {
                throw new IllegalArgumentException(t + "a soft-unicast IP of " + alen + " bytes");
            }
            if (!c.getIdentity().isEmpty() && c.getIdentity().size() != alen) {
                throw new IllegalArgumentException(t + "an identity of " + c.getIdentity().size() + " bytes");
            }
            long first = Integer.toUnsignedLong(c.getPortFirst());
            long last = Integer.toUnsignedLong(c.getPortLast());
            if (first > last || last > 0xFFFF) {
                throw new IllegalArgumentException(t + "port range " + first + "-" + last);
            }
            for (FishFlow f : c.getFlowsList()) {
                long port = Integer.toUnsignedLong(f.getEgressPort());
                if (port < first || port > last) {
                    throw new IllegalArgumentException("flow port " + port + " outside " + t + "range " + first + "-"
                            + last);
                }
                if (f.getClient().getSrcIp().size() != alen || f.getClient().getDstIp().size() != alen) {
                    throw new IllegalArgumentException(t + "a flow whose addresses are not of its IP's family");
                }
            }
        }
    }

    /**
     * An update of a pre-copied client (a delta's): a key, no socket, an identity of 0, 4 or 16
     * bytes, each flow's (and each ended flow's) addresses of one family. Whether they fit the
     * client they update is checked where it is known ({@link Egress}).
     */
    private static void checkUpdate(FishState s, FishClient c, String t) {
        if (s.getPreCopy() || c.getKey() == 0 || c.hasFdPackets()) {
            throw new IllegalArgumentException(t + "an update in a pre-copy chunk, with no key, or with a socket");
        }
        int id = c.getIdentity().size();
        if (id != 0 && id != 4 && id != 16) {
            throw new IllegalArgumentException(t + "an identity of " + id + " bytes");
        }
        for (FishFlow f : c.getFlowsList()) {
            checkTuple(f.getClient(), t);
        }
        for (FiveTuple e : c.getEndedFlowsList()) {
            checkTuple(e, t);
        }
    }

    private static void checkTuple(FiveTuple f, String t) {
        int a = f.getSrcIp().size();
        if ((a != 4 && a != 16) || f.getDstIp().size() != a) {
            throw new IllegalArgumentException(t + "a flow whose addresses are " + a + " and " + f.getDstIp().size()
                    + " bytes");
        }
    }

    /** A whole client's record, its flows' idle times as of {@code now}. Loop thread. */
    static ClientRecord record(Client c, long now, long callRef, long key) {
        List<FlowRecord> flows = new ArrayList<>(c.flows.size());
        for (Flow f : c.flows.values()) {
            flows.add(flowRecord(f, now));
        }
        return new ClientRecord(c.tenant, c.softIp, c.first, c.last, c.fd,
                c.haveIdentity ? Arrays.copyOf(c.identity, c.softIp.length) : new byte[0], c.nextPort, c.packetsOut,
                c.packetsIn, c.bytesOut, c.bytesIn, c.call.id(), c.call.metadata(), flows, callRef, c.vnet, key);
    }

    private static FlowRecord flowRecord(Flow f, long now) {
        return new FlowRecord(Client.fiveTuple(f.key.protocol, f.key.src, f.key.addressLength(), f.key.srcPort, f.key.dst,
                f.key.dstPort), f.port, f.replied, f.finOut, f.finIn, f.closing, f.packets, f.bytes,
                (now - f.lastActive) / 1_000_000);
    }

    private static FishFlow flow(FlowRecord f) {
        return FishFlow.newBuilder().setClient(f.client()).setEgressPort(f.egressPort()).setReplied(f.replied())
                .setFinOut(f.finOut()).setFinIn(f.finIn()).setClosing(f.closing()).setPackets(f.packets())
                .setBytes(f.bytes()).setIdleMs(f.idleMillis()).build();
    }

    /**
     * A pre-copied client's update for the delta (old side, paused): its counters, identity and
     * next port as now, the flows not in its copy or that saw a packet since it
     * ({@code lastActive >= copiedAt}: a flow's state changes only with a packet), and the
     * client-side tuples of its copied flows that ended since. Loop thread.
     */
    static FishClient update(Client c, long now) {
        FishClient.Builder b = FishClient.newBuilder().setKey(c.copyKey).setUpdate(true).setNextPort(c.nextPort)
                .setPacketsOut(c.packetsOut).setPacketsIn(c.packetsIn).setBytesOut(c.bytesOut).setBytesIn(c.bytesIn);
        if (c.haveIdentity) {
            b.setIdentity(ByteString.copyFrom(c.identity, 0, c.softIp.length));
        }
        for (Flow f : c.flows.values()) {
            if (!f.copied || f.lastActive >= c.copiedAt) {
                b.addFlows(flow(flowRecord(f, now)));
            }
        }
        for (Flow f = c.endedCopies; f != null; f = f.endedNext) {
            b.addEndedFlows(Client.fiveTuple(f.key.protocol, f.key.src, f.key.addressLength(), f.key.srcPort, f.key.dst,
                    f.key.dstPort));
        }
        return b.build();
    }

    /** The engine's clients and flows as records; idle times as of now. Loop thread. */
    static List<ClientRecord> snapshot(List<Client> clients, ToLongFunction<Call> callRef) {
        long now = System.nanoTime();
        List<ClientRecord> out = new ArrayList<>();
        for (Client c : clients) {
            out.add(record(c, now, callRef.applyAsLong(c.call), 0));
        }
        return out;
    }

    /**
     * Rebuilds the records' clients and flows into {@code clients} and {@code leases} (their
     * conntrack entries are there already), each client's task adopted with its pending call.
     * Throws on a client with no pending call or socket, or a flow not of its IP's family.
     */
    static List<Client> restore(List<ClientRecord> records, Clients clients, PortLeases leases, LongFunction<Call> calls,
            BiConsumer<Call, Task> adoptTask) throws Exception {
        List<Client> out = new ArrayList<>(records.size());
        for (ClientRecord r : records) {
            Call call = calls.apply(r.callRef());
            if (call == null) {
                if (r.fd() >= 0) {
                    Native.close(r.fd());
                }
                throw new IllegalArgumentException("tenant '" + r.tenant() + "': no pending Egress request (call ref "
                        + r.callRef() + ")");
            }
            Client c = restoreOne(r, clients, leases, call);
            adoptTask.accept(call, c);
            out.add(c);
        }
        return out;
    }

    /**
     * One record's client and flows into {@code clients} and {@code leases}, tied to {@code call}
     * (null: a pre-copied client, whose call comes with the delta). Throws on a record with no
     * socket or a flow not of its IP's family.
     */
    static Client restoreOne(ClientRecord r, Clients clients, PortLeases leases, Call call) throws Exception {
        if (r.fd() < 0) {
            throw new IllegalArgumentException("tenant '" + r.tenant() + "': no packet socket");
        }
        long now = System.nanoTime();
        Client c = clients.adopt(call, r.fd(), r.softIp(), r.first(), r.last(), r.tenant(),
                FdInfo.of(r.fd()).type() == Native.SOCK_DGRAM);
        if (r.identity().length > 0) {
            System.arraycopy(r.identity(), 0, c.identity, 0, r.identity().length);
            c.haveIdentity = true;
        }
        c.nextPort = r.nextPort();
        c.vnet = r.vnet();
        c.packetsOut = r.packetsOut();
        c.packetsIn = r.packetsIn();
        c.bytesOut = r.bytesOut();
        c.bytesIn = r.bytesIn();
        for (FlowRecord fr : r.flows()) {
            FlowKey k = flowKey(fr.client());
            if ((k.version == 4) != (r.softIp().length == 4)) {
                throw new IllegalArgumentException("flow " + k + " of tenant '" + c.tenant + "' is not of its IP's family");
            }
            Flow f = leases.restore(c, k, fr.egressPort());
            setFlow(f, fr, now);
            leases.adopted(f);
        }
        return c;
    }

    /** A flow's state from its record, its last packet {@code idle} ms before {@code now}. */
    static void setFlow(Flow f, FlowRecord fr, long now) {
        f.replied = fr.replied();
        f.finOut = fr.finOut();
        f.finIn = fr.finIn();
        f.closing = fr.closing();
        f.packets = fr.packets();
        f.bytes = fr.bytes();
        f.lastActive = now - fr.idleMillis() * 1_000_000L;
    }

    static FlowKey flowKey(FiveTuple t) {
        FlowKey k = new FlowKey();
        k.version = t.getSrcIp().size() == 4 ? 4 : 6;
        k.protocol = t.getProtocol();
        t.getSrcIp().copyTo(k.src, 0);
        t.getDstIp().copyTo(k.dst, 0);
        k.srcPort = t.getSrcPort();
        k.dstPort = t.getDstPort();
        return k;
    }

    /** A client's description in the fd store (a FishClient with no flows: conntrack has them). */
    static ByteString storedClient(Client c) {
        FishClient.Builder fc = FishClient.newBuilder().setTenant(c.tenant).setSoftUnicastIp(ByteString.copyFrom(c.softIp))
                .setPortFirst(c.first).setPortLast(c.last).setNextPort(c.nextPort).setRequestId(c.call.id())
                .setMetadata(c.call.metadata()).setVnetHdr(c.vnet);
        if (c.haveIdentity) {
            fc.setIdentity(ByteString.copyFrom(c.identity, 0, c.softIp.length));
        }
        return fc.build().toByteString();
    }

    /**
     * Fish's state rebuilt after a crash from the fd store ({@code stored}: the TUN as extra
     * {@code tunName}, each client's socket and description, all of item {@code item}) and the
     * egress namespace's conntrack {@code entries}: every TCP and UDP entry whose mark names a
     * client and whose source (in either direction: the original tuple, or the reply's if a server's
     * packet made the entry) is its soft-unicast IP and a port of its range is that client's flow
     * (the client's source port is in the mark, its address is the client's identity). ICMP flows
     * are not rebuilt (a new echo gets a new id).
     */
    static FishState fromFdStore(StoredTasks stored, String item, String tunName, List<Ctnetlink.Entry> entries)
            throws Exception {
        int tun = stored.getExtrasList().indexOf(tunName);
        if (tun < 0) {
            throw new IllegalArgumentException("no " + tunName + " in the fd store");
        }
        if (stored.getFdCountsCount() != stored.getTasksCount()) {
            throw new IllegalArgumentException(stored.getTasksCount() + " stored tasks but " + stored.getFdCountsCount()
                    + " fd counts");
        }
        FishState.Builder fs = FishState.newBuilder().setFormat(FORMAT).setFdTun(tun);
        int at = stored.getExtrasCount();
        for (int i = 0; i < stored.getTasksCount(); i++) {
            StoredTask st = stored.getTasks(i);
            int fdAt = at;
            at += stored.getFdCounts(i);
            if (!st.getItem().equals(item) || stored.getFdCounts(i) != 1) {
                throw new IllegalArgumentException("a stored task of item " + st.getItem() + " with "
                        + stored.getFdCounts(i) + " fds");
            }
            FishClient.Builder fc = FishClient.parseFrom(st.getPayload()).toBuilder().setFdPackets(fdAt)
                    .setCallRef(st.getCall().getTask());
            if (!fc.getIdentity().isEmpty()) {
                byte[] soft = fc.getSoftUnicastIp().toByteArray();
                for (Ctnetlink.Entry e : entries) {
                    // the flow's orientation, or the reply's (an entry a server's packet made in a refresh's gap)
                    Ctnetlink.Tuple o = e.reply() != null && Arrays.equals(e.reply().src().getAddress(), soft)
                            && !Arrays.equals(e.original().src().getAddress(), soft) ? e.reply() : e.original();
                    if ((o.protocol() != Ip.TCP && o.protocol() != Ip.UDP) || (e.mark() >>> 16) != (st.getCall().getTask() & 0xFFFF)
                            || !Arrays.equals(o.src().getAddress(), soft) || o.srcPort() < fc.getPortFirst()
                            || o.srcPort() > fc.getPortLast()) {
                        continue;
                    }
                    fc.addFlows(FishFlow.newBuilder().setClient(FiveTuple.newBuilder().setProtocol(o.protocol())
                            .setSrcIp(fc.getIdentity()).setSrcPort(e.mark() & 0xFFFF)
                            .setDstIp(ByteString.copyFrom(o.dst().getAddress())).setDstPort(o.dstPort()))
                            .setEgressPort(o.srcPort()).setReplied(true));
                }
            }
            fs.addClients(fc);
        }
        FishState out = fs.build();
        checkClients(out); // a stored description the adopt would refuse is refused here, where it is read
        return out;
    }
}
