package warren.bumblebee.nat;

import com.google.protobuf.ByteString;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.LongAdder;
import jnr.ffi.Pointer;
import warren.bumblebee.env.Environment;
import warren.control.v1.Error;
import warren.control.v1.FiveTuple;
import warren.control.v1.Response;
import warren.control.v1.Upgraded;
import warren.daemon.Log;
import warren.daemon.audit.JsonLine;
import warren.daemon.control.Call;
import warren.daemon.loop.EventLoop;
import warren.daemon.metrics.Counters;
import warren.daemon.trace.TraceRing;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.IcmpError;
import warren.packet.Ip;
import warren.packet.PacketView;

/**
 * The NAT between flow sockets and the TUN, on the daemon's event loop.
 *
 * <p>Flow to kernel: a packet read from a flow socket is parsed ({@link PacketView}; malformed
 * ones are dropped and counted by reason), checked against the flow's 5-tuple (the first packet
 * must be a TCP SYN and defines it), its MSS clamped to the MTU, its source rewritten to the
 * slot's pool address and NAT port (new at every reuse of the slot) and its destination to the listener, then written to the
 * TUN. Kernel to flow: a packet read from the TUN is matched to its slot by its destination
 * address (computed, no lookup table), rewritten back to the original 5-tuple reversed, and
 * written to the flow socket. The listener's accepted connection is matched to its slot by its
 * peer address and handed to the requester in {@code Upgraded}; the flow keeps being pumped.
 *
 * <p>Per packet: one read, one parse, two in-place rewrites with incremental checksums, one write,
 * into preallocated direct buffers; no allocation.
 */
public final class Nat {
    /** Settings from BumblebeeConfig. */
    public record Settings(long quarantineMillis, long idleMillis, long handshakeMillis, long lingerMillis) {}

    private static final int BATCH = 64;
    private static final int BUF = 65536 + 64;

    private final EventLoop loop;
    private final Environment env;
    private final Counters counters;
    private final Settings settings;
    private final Flow[] flows;
    private final int[] free;
    private int freeCount;
    private int quarantined;
    private final ByteBuffer buf = ByteBuffer.allocateDirect(BUF);
    private final Pointer bufPtr = Pointer.wrap(Native.RUNTIME, buf);
    /**
     * Packets from flow sockets are read in batches with recvmmsg(2): RX_BATCH slots of RX_SLOT
     * bytes held by a shared {@link warren.fdpass.RecvBatch}, plus preallocated pointers to
     * where a UDP payload starts in each slot.
     */
    private static final int RX_BATCH = 16;
    private static final int RX_SLOT = 65536 + 128;
    private final warren.fdpass.RecvBatch rxBatch = new warren.fdpass.RecvBatch(RX_BATCH, RX_SLOT);
    private final ByteBuffer rx = rxBatch.buffer();
    private final Pointer[] rxUdp4 = new Pointer[RX_BATCH];
    private final Pointer[] rxUdp6 = new Pointer[RX_BATCH];

    {
        for (int i = 0; i < RX_BATCH; i++) {
            rxUdp4[i] = rxBatch.pointer(i).slice(Ip.V4_HEADER + Ip.UDP_HEADER);
            rxUdp6[i] = rxBatch.pointer(i).slice(Ip.V6_HEADER + Ip.UDP_HEADER);
        }
    }

    /** UDP payloads are received at offset 48 so either header fits in front of them. */
    private static final int UDP_PAYLOAD = Ip.V6_HEADER + Ip.UDP_HEADER;
    private final Pointer payloadPtr = bufPtr.slice(UDP_PAYLOAD);
    private final Pointer v4PacketPtr = bufPtr.slice(UDP_PAYLOAD - Ip.V4_HEADER - Ip.UDP_HEADER);
    /**
     * A UDP flow: a datagram socketpair whose other end goes out in Upgraded; payloads cross it,
     * headers are stripped and added here. False if the flow had to end.
     */
    private boolean startUdp(Flow f) {
        int[] sv;
        try {
            sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_DGRAM | Native.SOCK_CLOEXEC);
            Native.fcntl(sv[0], Native.F_SETFL, Native.O_NONBLOCK);
            f.udpFd = sv[0];
            f.udpReg = loop.register(sv[0], Native.EPOLLIN, ev -> fromUdpSocket(f));
        } catch (NativeIoException e) {
            end(f, "ERROR", "cannot make the datagram socket: " + e.getMessage());
            return false;
        }
        f.udp = true;
        f.state = Flow.ACTIVE;
        if (f.timer != null) {
            f.timer.cancel();
        }
        scheduleIdle(f);
        counters.increment("upgrades.udp");
        observeLatency(upgradeLatencyUdp, f);
        f.call.answerKeepingTask(Response.newBuilder().setUpgraded(Upgraded.newBuilder().setFdSocket(0)
                .setOriginal(tuple(f.original))), List.of(Fd.adopt(sv[1])));
        storeFlow(f);
        return true;
    }

    /** Payloads from the upgraded datagram socket become UDP packets on the flow (reversed tuple). */
    private void fromUdpSocket(Flow f) {
        FlowKey o = f.original;
        boolean v4 = o.version == 4;
        int start = v4 ? UDP_PAYLOAD - Ip.V4_HEADER - Ip.UDP_HEADER : 0;
        int hdr = v4 ? Ip.V4_HEADER : Ip.V6_HEADER;
        for (int i = 0; i < BATCH && f.state == Flow.ACTIVE; i++) {
            long n = Native.recv(f.udpFd, payloadPtr, BUF - UDP_PAYLOAD - 64, Native.MSG_DONTWAIT);
            if (n < 0) {
                return;
            }
            int total = hdr + Ip.UDP_HEADER + (int) n;
            for (int k = start; k < UDP_PAYLOAD; k++) {
                buf.put(k, (byte) 0);
            }
            if (v4) {
                buf.put(start, (byte) 0x45).putShort(start + Ip.V4_TOTAL_LENGTH, (short) total)
                        .putShort(start + Ip.V4_FRAG, (short) 0x4000).put(start + Ip.V4_TTL, (byte) 64)
                        .put(start + Ip.V4_PROTOCOL, (byte) Ip.UDP);
                buf.put(start + Ip.V4_SRC, o.dst, 0, 4).put(start + Ip.V4_DST, o.src, 0, 4);
                buf.putShort(start + Ip.V4_CHECKSUM, (short) warren.packet.Checksum.finish(
                        warren.packet.Checksum.sum(buf, start, Ip.V4_HEADER)));
            } else {
                buf.put(start, (byte) 0x60).putShort(start + Ip.V6_PAYLOAD_LENGTH, (short) (Ip.UDP_HEADER + n))
                        .put(start + Ip.V6_NEXT_HEADER, (byte) Ip.UDP).put(start + Ip.V6_HOP_LIMIT, (byte) 64);
                buf.put(start + Ip.V6_SRC, o.dst, 0, 16).put(start + Ip.V6_DST, o.src, 0, 16);
            }
            int u = start + hdr;
            buf.putShort(u, (short) o.dstPort).putShort(u + 2, (short) o.srcPort)
                    .putShort(u + Ip.UDP_LENGTH, (short) (Ip.UDP_HEADER + n));
            if (view.parse(buf, start, total, key) != DropReason.NONE) {
                dropFull.increment(); // cannot happen for a payload we framed ourselves
                continue;
            }
            view.fixChecksums();
            long w = Native.send(f.flowFd, v4 ? v4PacketPtr : bufPtr, total, Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL);
            if (w < 0) {
                dropFull.increment();
                continue;
            }
            if (f.trace != null) {
                f.trace.copy(buf, start, total, TraceRing.CLIENT_OUT);
            }
            f.packetsOut++;
            f.bytesOut += total;
            packetsOut.increment();
            f.lastActiveNanos = System.nanoTime();
        }
    }
    private final ByteBuffer scratch = ByteBuffer.allocateDirect(64);
    private final PacketView view = new PacketView();
    private final FlowKey key = new FlowKey();
    private final FlowKey inner = new FlowKey();
    private final LongAdder[] drops = new LongAdder[DropReason.values().length];
    private final LongAdder dropNotSyn;
    private final LongAdder dropNoFlow;
    private final LongAdder dropFull;
    private final LongAdder packetsIn;
    private final LongAdder packetsOut;
    private final warren.daemon.metrics.Histogram upgradeLatencyTcp;
    private final warren.daemon.metrics.Histogram upgradeLatencyUdp;
    /** Bytes of ended flows, flow to kernel ("out") and back; live flows are added by {@link #sample}. */
    private static final String BYTES_OUT = "ip.bytes.out";
    private static final String BYTES_IN = "ip.bytes.in";

    private final warren.daemon.relay.Relay relay;

    public Nat(EventLoop loop, Environment env, Counters counters, Settings settings) throws NativeIoException {
        this(loop, env, counters, settings, false, false);
    }

    /**
     * With {@code paused}, nothing is registered until {@link #resume} (a successor adopting a
     * table). With {@code fdStore}, the downgrades' relay pins its pipes to each pair, so a pair
     * kept in systemd's fd store keeps its bytes in flight ({@link #enableFdStore}).
     */
    public Nat(EventLoop loop, Environment env, Counters counters, Settings settings, boolean paused, boolean fdStore)
            throws NativeIoException {
        this.relay = new warren.daemon.relay.Relay(loop, counters,
                new warren.daemon.relay.Relay.Settings(256 << 10, 64, 4096, fdStore));
        this.loop = loop;
        this.env = env;
        this.counters = counters;
        this.settings = settings;
        this.flows = new Flow[env.slots];
        this.free = new int[env.slots];
        for (int i = env.slots - 1; i >= 0; i--) {
            flows[i] = new Flow(i);
            flows[i].nat = this;
            free[freeCount++] = i;
        }
        for (DropReason r : DropReason.values()) {
            drops[r.ordinal()] = counters.counter("drops." + r.name().toLowerCase(java.util.Locale.ROOT));
        }
        dropNotSyn = counters.counter("drops.not_a_flow_start");
        dropNoFlow = counters.counter("drops.tun_no_flow");
        dropFull = counters.counter("drops.socket_full");
        packetsIn = counters.counter("packets.flow_to_kernel");
        packetsOut = counters.counter("packets.kernel_to_flow");
        upgradeLatencyTcp = counters.histogram(warren.daemon.metrics.Families.UPGRADE_LATENCY.key() + "tcp");
        upgradeLatencyUdp = counters.histogram(warren.daemon.metrics.Families.UPGRADE_LATENCY.key() + "udp");
        this.paused = paused;
        if (!paused) {
            registerEnvironment();
        }
    }

    private int tunReg = -1;
    private int listen4Reg = -1;
    private int listen6Reg = -1;
    private boolean paused;
    private boolean abandoned;

    private void registerEnvironment() throws NativeIoException {
        tunReg = loop.register(env.tun.get(), Native.EPOLLIN, ev -> fromTun());
        listen4Reg = loop.register(env.listen4.get(), Native.EPOLLIN, ev -> accept(env.listen4));
        listen6Reg = loop.register(env.listen6.get(), Native.EPOLLIN, ev -> accept(env.listen6));
    }

    // ---- upgrade in place

    /**
     * Stops everything at a clean point (between packets): the TUN, the listeners, every flow's
     * sockets and timers, the downgrades' relay. Nothing is lost: unread packets wait in their
     * sockets and the TUN queue, unaccepted handshakes in the listeners' queues. Loop thread.
     */
    public void pause() {
        if (!env.inProcess()) {
            throw new IllegalStateException("bumblebee.environment = helper cannot be upgraded in place: the namespace"
                    + " belongs to the helper process (use in-process, the default as root)");
        }
        if (paused) {
            return;
        }
        paused = true;
        loop.unregister(tunReg);
        loop.unregister(listen4Reg);
        loop.unregister(listen6Reg);
        tunReg = listen4Reg = listen6Reg = -1;
        for (Flow f : flows) {
            unregisterFlow(f);
        }
        relay.pause();
    }

    private void unregisterFlow(Flow f) {
        if (f.flowReg >= 0) {
            loop.unregister(f.flowReg);
            f.flowReg = -1;
        }
        if (f.udpReg >= 0) {
            loop.unregister(f.udpReg);
            f.udpReg = -1;
        }
        if (f.innerReg >= 0) {
            loop.unregister(f.innerReg);
            f.innerReg = -1;
        }
        if (f.timer != null) {
            f.timer.cancel();
            f.timer = null;
        }
        if (f.quarantine != null) {
            f.quarantine.cancel();
            f.quarantine = null;
        }
    }

    /**
     * Undoes {@link #pause} (the handoff failed) or starts an adopted table: registrations and
     * timers back (a handshake, idle or quarantine period starts over), the relay resumed.
     */
    public void resume() throws NativeIoException {
        if (!paused || abandoned) {
            return;
        }
        paused = false;
        registerEnvironment();
        for (Flow f : flows) {
            switch (f.state) {
                case Flow.RESERVED:
                case Flow.ACTIVE:
                    if (f.flowFd >= 0) {
                        f.flowReg = loop.register(f.flowFd, Native.EPOLLIN | Native.EPOLLRDHUP, ev -> fromFlow(f, ev));
                    }
                    if (f.udpFd >= 0) {
                        f.udpReg = loop.register(f.udpFd, Native.EPOLLIN, ev -> fromUdpSocket(f));
                    }
                    if (f.innerFd >= 0) {
                        f.innerReg = loop.register(f.innerFd, Native.EPOLLOUT, ev -> innerConnected(f));
                    }
                    if (f.state == Flow.RESERVED) {
                        armHandshakeTimer(f);
                    } else if (f.finFromFlow && f.finFromKernel) {
                        lingerIfClosed(f);
                    } else if (!f.downgrade) {
                        scheduleIdle(f);
                    }
                    break;
                case Flow.QUARANTINED:
                    armQuarantine(f);
                    break;
                default:
                    break;
            }
        }
        relay.resume();
    }

    /**
     * The paused table as handoff items: {@code name} (BumblebeeState with the namespace, TUN,
     * listeners and every flow's fds) and {@code name + ".relay"} (the downgrades' relay pairs).
     * The fds are borrowed until {@link #abandon}.
     */
    public List<warren.daemon.handoff.HandoffItem> export(String name, java.util.function.ToLongFunction<Call> callRef) {
        if (!paused) {
            throw new IllegalStateException("export needs a paused table");
        }
        List<Integer> raw = new ArrayList<>(List.of(env.netns.get(), env.tun.get(), env.listen4.get(), env.listen6.get()));
        warren.handoff.v1.BumblebeeState state = FlowTableCodec.write(flows, env.mtu, System.nanoTime(), raw, callRef)
                .toBuilder().setFdNetns(0).setFdTun(1).setFdListen4(2).setFdListen6(3).build();
        List<Fd> fds = new ArrayList<>(raw.size());
        for (int fd : raw) {
            fds.add(Fd.adopt(fd)); // views for sending only; never closed
        }
        return List.of(new warren.daemon.handoff.HandoffItem(name, state.toByteArray(), fds),
                relay.export(name + ".relay", callRef));
    }

    /** The handoff committed: forget every flow without ending, answering or closing anything. */
    public void abandon() {
        abandoned = true;
        relay.abandon();
        for (Flow f : flows) {
            f.state = Flow.FREE;
            f.call = null;
        }
    }

    /**
     * A successor's table from the predecessor's items (this Nat built paused on the adopted
     * environment): every flow in its slot with its fds and counts, each pending request tied to
     * its flow, the downgrades' relay pairs back. Before the successor's loop runs.
     */
    public void adopt(warren.handoff.v1.BumblebeeState state, List<Fd> fds, warren.handoff.v1.RelayState relayState,
            List<Fd> relayFds, java.util.function.LongFunction<Call> calls,
            java.util.function.BiConsumer<Call, warren.daemon.task.Task> adoptTask) throws NativeIoException {
        FlowTableCodec.read(state, fds, System.nanoTime(), flows);
        java.util.Map<Call, Flow> byCall = new java.util.HashMap<>();
        freeCount = 0;
        quarantined = 0;
        for (int i = flows.length - 1; i >= 0; i--) {
            Flow f = flows[i];
            switch (f.state) {
                case Flow.FREE:
                    free[freeCount++] = i;
                    break;
                case Flow.QUARANTINED:
                    quarantined++;
                    break;
                case Flow.RESERVED:
                case Flow.ACTIVE:
                    f.call = calls.apply(f.callRef);
                    if (f.call == null) {
                        throw new IllegalArgumentException("slot " + i + ": no pending request (call ref " + f.callRef + ")");
                    }
                    byCall.put(f.call, f);
                    adoptTask.accept(f.call, f);
                    break;
                default:
                    throw new IllegalArgumentException("slot " + i + ": state " + f.state);
            }
        }
        for (warren.daemon.relay.Pair p : relay.adopt(relayState, relayFds, calls, (call, a, b, counts, audit) -> {
            Flow f = byCall.get(call);
            a.close();
            b.close();
            if (f != null) {
                f.relay = null;
                downgradeRelayEnded(f, counts);
            }
        })) {
            Flow f = byCall.get(p.call());
            if (f == null || !f.downgrade || f.state != Flow.ACTIVE) {
                throw new IllegalArgumentException("a relay pair without its active downgrade");
            }
            f.relay = p;
        }
    }

    private void armHandshakeTimer(Flow f) {
        f.timer = loop.schedule(settings.handshakeMillis(), () -> {
            if (f.state == Flow.RESERVED) {
                end(f, "TIMEOUT", f.downgrade
                        ? "the peer did not complete the handshake within " + settings.handshakeMillis() + " ms"
                        : "no kernel handshake within " + settings.handshakeMillis() + " ms");
            }
        });
    }

    private void armQuarantine(Flow f) {
        f.quarantine = loop.schedule(settings.quarantineMillis(), () -> {
            f.quarantine = null;
            f.state = Flow.FREE;
            quarantined--;
            free[freeCount++] = f.slot;
        });
    }

    private void downgradeRelayEnded(Flow f, warren.control.v1.Spliced counts) {
        end(f, counts.getReason() == warren.control.v1.EndReason.BOTH_EOF ? "FLOW_ENDED" : counts.getReason().name(),
                "relay ended: " + counts.getReason() + ", " + counts.getBytesAToB() + " bytes out, "
                        + counts.getBytesBToA() + " bytes in");
    }

    EventLoop loop() {
        return loop;
    }

    /** From the Upgrade request (its task's start) to the Upgraded answer being sent now. */
    private static void observeLatency(warren.daemon.metrics.Histogram h, Flow f) {
        warren.daemon.task.TaskRegistry.Record r = f.call.task();
        if (r != null) {
            h.observeNanos(System.nanoTime() - r.startNanos());
        }
    }

    /**
     * The NAT's part of a metrics sample: slots by state, the bytes of live flows (so the byte
     * counters move while flows last) and the downgrades' relay. Loop thread, at scrape time.
     */
    public void sample(warren.daemon.metrics.Sample s) {
        long out = 0;
        long in = 0;
        for (Flow f : flows) {
            if (f.state == Flow.RESERVED || f.state == Flow.ACTIVE) {
                out += f.bytesIn; // Flow's "in" is flow -> kernel: out of the socket handed in
                in += f.bytesOut;
            }
        }
        s.addCounter(BYTES_OUT, out);
        s.addCounter(BYTES_IN, in);
        s.gauge(warren.daemon.metrics.Families.NAT_SLOTS, freeCount, "free");
        s.gauge(warren.daemon.metrics.Families.NAT_SLOTS, quarantined, "quarantined");
        s.gauge(warren.daemon.metrics.Families.NAT_SLOTS, flows.length - freeCount - quarantined, "in_use");
        relay.sample(s);
    }

    public int slotsFree() {
        return freeCount;
    }

    public int slotsQuarantined() {
        return quarantined;
    }

    /**
     * Starts an upgrade: claims a slot for the flow socket (taken from the call) and waits for its
     * SYN. Answers RESOURCE_EXHAUSTED when no slot is free.
     */
    public void upgrade(Call call, Fd flowSocket) {
        upgrade(call, flowSocket, 0);
    }

    /** As {@link #upgrade(Call, Fd)}, with the flow's own MTU (0: the TUN's); MSS is clamped to the smaller. */
    public void upgrade(Call call, Fd flowSocket, int mtu) {
        if (freeCount == 0) {
            flowSocket.close();
            counters.increment("upgrades.refused_no_slot");
            call.fail(Error.Code.RESOURCE_EXHAUSTED, "no free NAT slot: " + env.slots + " slots, " + quarantined
                    + " of them in quarantine (bumblebee.slots, bumblebee.quarantine)");
            return;
        }
        Flow f = flows[free[--freeCount]];
        f.call = call;
        f.nextNatPort();
        setMss(f, mtu);
        f.haveKey = false;
        f.udp = false;
        f.downgrade = false;
        f.finFromFlow = false;
        f.finFromKernel = false;
        f.packetsIn = f.packetsOut = f.bytesIn = f.bytesOut = 0;
        f.lastActiveNanos = System.nanoTime();
        try {
            int flags = Native.fcntl(flowSocket.get(), Native.F_GETFL, 0);
            Native.fcntl(flowSocket.get(), Native.F_SETFL, flags | Native.O_NONBLOCK);
            f.flowFd = flowSocket.detach();
            f.flowReg = loop.register(f.flowFd, Native.EPOLLIN | Native.EPOLLRDHUP, ev -> fromFlow(f, ev));
        } catch (NativeIoException e) {
            if (f.flowFd >= 0) {
                Native.close(f.flowFd);
            }
            f.flowFd = -1;
            free[freeCount++] = f.slot;
            call.fail(Error.Code.INTERNAL, "cannot register the flow socket: " + e.getMessage(), e.errno());
            return;
        }
        f.state = Flow.RESERVED;
        call.startTask("upgrade", f, new JsonLine().put("slot", f.slot), false);
        armHandshakeTimer(f);
        storeFlow(f);
    }

    // ---- crash survival: systemd's fd store (fdstore.proto's StoredTask, item "bumblebee.nat")

    /** The fd store item name of Bumblebee's flows. */
    public static final String STORE_ITEM = "bumblebee.nat";
    private warren.daemon.TaskStore store;

    /** Keeps the namespace, TUN, listeners and every upgrade flow in systemd's fd store from now on. */
    public void enableFdStore(warren.systemd.SdNotify notify) {
        store = new warren.daemon.TaskStore(notify, STORE_ITEM);
        notify.fdStore("x.netns", List.of(env.netns)); // a second store of the same fd is a no-op
        notify.fdStore("x.tun", List.of(env.tun));
        notify.fdStore("x.listen4", List.of(env.listen4));
        notify.fdStore("x.listen6", List.of(env.listen6));
        relay.journal(new warren.daemon.relay.FdStoreJournal(notify, relay, STORE_ITEM + ".relay")); // downgrades' pairs
    }

    /** Stores (again) a flow as it is now: its socket(s) and a StoredTask whose payload is its FlowState. */
    private void storeFlow(Flow f) {
        if (store == null || f.call == null || f.call.task() == null || (f.downgrade && f.state != Flow.ACTIVE)) {
            return; // a downgrade is kept once its relay runs (then as a pair and as this flow)
        }
        warren.handoff.v1.FlowState.Builder fs = FlowTableCodec.one(f, System.nanoTime()).setFdFlow(0);
        List<Fd> fds = new ArrayList<>(2);
        fds.add(Fd.adopt(f.flowFd));
        if (f.udpFd >= 0) {
            fs.setFdUdp(1);
            fds.add(Fd.adopt(f.udpFd));
        }
        store.put(f.call, fds, fs.build().toByteString(), f.state == Flow.ACTIVE, "flow");
    }

    /**
     * The flow table rebuilt after a crash from the fd store's item "fdstore" (the namespace, TUN
     * and listeners as extras, each flow's socket(s) and FlowState).
     */
    public static warren.handoff.v1.BumblebeeState fromFdStore(warren.handoff.v1.StoredTasks stored, int slots, int mtu) {
        List<String> x = stored.getExtrasList();
        warren.handoff.v1.BumblebeeState.Builder b = warren.handoff.v1.BumblebeeState.newBuilder()
                .setFormat(FlowTableCodec.FORMAT).setSlots(slots).setMtu(mtu);
        for (String need : List.of("x.netns", "x.tun", "x.listen4", "x.listen6")) {
            if (!x.contains(need)) {
                throw new IllegalArgumentException("no " + need + " in the fd store");
            }
        }
        b.setFdNetns(x.indexOf("x.netns")).setFdTun(x.indexOf("x.tun")).setFdListen4(x.indexOf("x.listen4"))
                .setFdListen6(x.indexOf("x.listen6"));
        int at = x.size();
        for (int i = 0; i < stored.getTasksCount(); i++) {
            warren.handoff.v1.StoredTask st = stored.getTasks(i);
            if (!st.getItem().equals(STORE_ITEM)) {
                throw new IllegalArgumentException("a stored task of item " + st.getItem());
            }
            warren.handoff.v1.FlowState fs;
            try {
                fs = warren.handoff.v1.FlowState.parseFrom(st.getPayload());
            } catch (com.google.protobuf.InvalidProtocolBufferException e) {
                throw new IllegalArgumentException("task " + st.getCall().getTask() + ": " + e.getMessage());
            }
            warren.handoff.v1.FlowState.Builder f = fs.toBuilder().setCallRef(st.getCall().getTask()).setIdleMs(0);
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

    /**
     * Starts a downgrade: claims a slot, connects from inside the namespace to the slot's pool
     * address (the SYN appears on the TUN and leaves on the flow as {@code tuple}), and once the
     * kernel's handshake with the real peer completes, relays the handed-in socket to that
     * connection. The final answer {@code Downgraded} comes when it ends.
     */
    public void downgrade(Call call, Fd socket, Fd flowSocket, FlowKey tuple) {
        if (freeCount == 0) {
            socket.close();
            flowSocket.close();
            counters.increment("downgrades.refused_no_slot");
            call.fail(Error.Code.RESOURCE_EXHAUSTED, "no free NAT slot: " + env.slots + " slots, " + quarantined
                    + " of them in quarantine");
            return;
        }
        Flow f = flows[free[--freeCount]];
        f.call = call;
        f.nextNatPort();
        setMss(f, 0);
        f.udp = false;
        f.downgrade = true;
        f.haveKey = true;
        f.original.copyFrom(tuple); // as seen from the flow: the peer is the "client" side
        swap(f.original);
        f.finFromFlow = false;
        f.finFromKernel = false;
        f.packetsIn = f.packetsOut = f.bytesIn = f.bytesOut = 0;
        f.lastActiveNanos = System.nanoTime();
        f.socket = socket;
        int v = tuple.version;
        try {
            int flags = Native.fcntl(flowSocket.get(), Native.F_GETFL, 0);
            Native.fcntl(flowSocket.get(), Native.F_SETFL, flags | Native.O_NONBLOCK);
            f.flowFd = flowSocket.detach();
            f.flowReg = loop.register(f.flowFd, Native.EPOLLIN | Native.EPOLLRDHUP, ev -> fromFlow(f, ev));
            ByteBuffer pool = ByteBuffer.allocate(16);
            Environment.poolAddress(v, f.slot, pool, 0);
            byte[] to = new byte[v == 4 ? 4 : 16];
            pool.get(0, to);
            byte[] from = v == 4 ? Environment.LISTEN4 : Environment.LISTEN6;
            int[] inner = env.connectInside(v, from, to, f.natPort);
            f.innerFd = inner[0];
            f.innerPort = inner[1];
            f.innerReg = loop.register(f.innerFd, Native.EPOLLOUT, ev -> innerConnected(f));
        } catch (Exception e) {
            if (f.flowFd >= 0) {
                loop.unregister(f.flowReg);
                Native.close(f.flowFd);
                f.flowFd = -1;
            }
            socket.close();
            f.socket = null;
            free[freeCount++] = f.slot;
            call.fail(Error.Code.INTERNAL, "cannot start the downgrade: " + e);
            return;
        }
        f.state = Flow.RESERVED;
        call.startTask("downgrade", f, new JsonLine().put("slot", f.slot).put("tuple", tuple.toString()), true);
        armHandshakeTimer(f);
    }

    private void setMss(Flow f, int flowMtu) {
        int mtu = flowMtu > 0 ? Math.min(flowMtu, env.mtu) : env.mtu;
        f.mss4 = mtu - Ip.V4_HEADER - Ip.TCP_HEADER;
        f.mss6 = mtu - Ip.V6_HEADER - Ip.TCP_HEADER;
    }

    private static void swap(FlowKey k) {
        for (int i = 0; i < 16; i++) {
            byte t = k.src[i];
            k.src[i] = k.dst[i];
            k.dst[i] = t;
        }
        int p = k.srcPort;
        k.srcPort = k.dstPort;
        k.dstPort = p;
    }

    private void innerConnected(Flow f) throws NativeIoException {
        if (f.state != Flow.RESERVED || f.innerFd < 0) {
            return;
        }
        loop.unregister(f.innerReg);
        f.innerReg = -1;
        int err = Native.getsockoptInt(f.innerFd, Native.SOL_SOCKET, Native.SO_ERROR);
        if (err != 0) {
            end(f, "ERROR", "the handshake with the peer failed: " + warren.fdpass.libc.Errno.describe(err));
            return;
        }
        f.state = Flow.ACTIVE;
        if (f.timer != null) {
            f.timer.cancel();
            f.timer = null;
        }
        counters.increment("downgrades.tcp");
        Fd inner = Fd.adopt(f.innerFd);
        f.innerFd = -1;
        Fd socket = f.socket;
        f.socket = null;
        f.relay = relay.start(f.call, socket, inner, settings.idleMillis(), 0, 0, (call, a, b, counts, audit) -> {
            a.close();
            b.close();
            f.relay = null;
            downgradeRelayEnded(f, counts);
        }, null);
        storeFlow(f);
    }

    private void fromFlow(Flow f, int events) {
        for (int round = 0; round < BATCH / RX_BATCH && (f.state == Flow.RESERVED || f.state == Flow.ACTIVE); round++) {
            int got = rxBatch.receive(f.flowFd);
            if (got < 0) {
                end(f, "ERROR", "flow socket: " + warren.fdpass.libc.Errno.describe(-got));
                return;
            }
            for (int i = 0; i < got && (f.state == Flow.RESERVED || f.state == Flow.ACTIVE); i++) {
                int len = rxBatch.length(i);
                if (len == 0) {
                    end(f, "FLOW_ENDED", "flow socket closed");
                    return;
                }
                fromFlowPacket(f, i, len);
            }
            if (got < RX_BATCH) {
                return;
            }
        }
    }

    /** One packet from a flow socket, in rx slot {@code i}. */
    private void fromFlowPacket(Flow f, int i, int n) {
        final int at = rxBatch.offset(i);
        final Pointer ptr = rxBatch.pointer(i);
        if (f.trace != null) {
            f.trace.copy(rx, at, n, TraceRing.CLIENT_IN);
        }
        do {
            DropReason r = view.parse(rx, at, n, key);
            if (r != DropReason.NONE) {
                drops[r.ordinal()].increment();
                continue;
            }
            if (key.protocol == Ip.ICMP || key.protocol == Ip.ICMPV6) {
                if (icmpToKernel(f, ptr) && f.trace != null) {
                    f.trace.copy(rx, at, view.length(), TraceRing.TRANSLATED_OUT);
                }
                continue;
            }
            if (!f.haveKey) {
                if (key.protocol == Ip.UDP) {
                    f.original.copyFrom(key);
                    f.haveKey = true;
                    if (!startUdp(f)) {
                        return;
                    }
                } else if (key.protocol != Ip.TCP || (view.tcpFlags() & (Ip.TCP_SYN | Ip.TCP_ACK)) != Ip.TCP_SYN) {
                    dropNotSyn.increment();
                    continue;
                } else {
                    f.original.copyFrom(key);
                    f.haveKey = true;
                }
            } else if (!key.matches(f.original)) {
                drops[DropReason.WRONG_FLOW.ordinal()].increment();
                continue;
            }
            if (f.udp) {
                // userspace UDP: strip the headers, pass the payload on
                long w = Native.send(f.udpFd, view.version() == 4 ? rxUdp4[i] : rxUdp6[i], view.payloadLength(),
                        Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL);
                if (w < 0) {
                    dropFull.increment();
                    continue;
                }
                f.packetsIn++;
                f.bytesIn += view.length();
                packetsIn.increment();
                f.lastActiveNanos = System.nanoTime();
                continue;
            }
            int flags = view.tcpFlags();
            if ((flags & Ip.TCP_SYN) != 0) {
                view.clampMss(view.version() == 4 ? f.mss4 : f.mss6);
            }
            Environment.poolAddress(view.version(), f.slot, scratch, 0);
            view.rewrite(true, scratch, 0, f.natPort);
            ByteBuffer listen = view.version() == 4 ? LISTEN4 : LISTEN6;
            view.rewrite(false, listen, 0, f.downgrade ? f.innerPort : Environment.LISTEN_PORT);
            long w = Native.write(env.tun.get(), ptr, view.length());
            if (w < 0) {
                dropFull.increment();
                continue;
            }
            if (f.trace != null) {
                f.trace.copy(rx, at, view.length(), TraceRing.TRANSLATED_OUT);
            }
            forwarded(f, true, flags, view.length());
        } while (false);
    }

    /**
     * An ICMP error from the flow's side about a packet the kernel sent (e.g. "fragmentation
     * needed" from a smaller path): translated into the namespace, outer and inner header, so the
     * kernel's TCP adjusts its path MTU. Anything else ICMP on a flow is dropped and counted.
     */
    private boolean icmpToKernel(Flow f, Pointer ptr) {
        if (!f.haveKey || f.udp || !IcmpError.is(view, rx) || !IcmpError.innerKey(view, rx, inner)
                || !inner.isReverseOf(f.original)) {
            counters.increment("drops.icmp_not_for_flow");
            return false;
        }
        int v = view.version();
        ByteBuffer listen = v == 4 ? LISTEN4 : LISTEN6;
        Environment.poolAddress(v, f.slot, scratch, 0);
        IcmpError.rewriteInner(view, rx, true, listen, 0, f.downgrade ? f.innerPort : Environment.LISTEN_PORT);
        IcmpError.rewriteInner(view, rx, false, scratch, 0, f.natPort);
        view.setAddress(true, scratch, 0);
        view.setAddress(false, listen, 0);
        IcmpError.fixOuter(view);
        if (Native.write(env.tun.get(), ptr, view.length()) < 0) {
            dropFull.increment();
            return false;
        }
        counters.increment("icmp.to_kernel");
        return true;
    }

    /** An ICMP error the kernel sends about a flow's packet: translated back and written to the flow. */
    private void icmpToFlow(Flow f) {
        if (!IcmpError.is(view, buf) || !IcmpError.innerKey(view, buf, inner) || inner.srcPort != f.natPort) {
            dropNoFlow.increment();
            return;
        }
        if (f.trace != null) {
            f.trace.copy(buf, 0, view.length(), TraceRing.TRANSLATED_IN);
        }
        FlowKey o = f.original;
        scratch.put(0, o.src, 0, 16).put(16, o.dst, 0, 16);
        IcmpError.rewriteInner(view, buf, true, scratch, 0, o.srcPort);
        IcmpError.rewriteInner(view, buf, false, scratch, 16, o.dstPort);
        view.setAddress(true, scratch, 16);
        view.setAddress(false, scratch, 0);
        IcmpError.fixOuter(view);
        if (Native.send(f.flowFd, bufPtr, view.length(), Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL) < 0) {
            dropFull.increment();
            return;
        }
        if (f.trace != null) {
            f.trace.copy(buf, 0, view.length(), TraceRing.CLIENT_OUT);
        }
        counters.increment("icmp.to_flow");
    }

    private static final ByteBuffer LISTEN4 = ByteBuffer.allocateDirect(4).put(0, Environment.LISTEN4);
    private static final ByteBuffer LISTEN6 = ByteBuffer.allocateDirect(16).put(0, Environment.LISTEN6);

    private void fromTun() {
        for (int i = 0; i < BATCH; i++) {
            long n = Native.read(env.tun.get(), bufPtr, BUF);
            if (n <= 0) {
                return; // EAGAIN: drained
            }
            DropReason r = view.parse(buf, 0, (int) n, key);
            if (r != DropReason.NONE) {
                counters.increment("tun.drops." + r.name().toLowerCase(java.util.Locale.ROOT));
                continue;
            }
            int dstOff = view.version() == 4 ? Ip.V4_DST : Ip.V6_DST;
            int slot = env.slotOf(view.version(), buf, dstOff);
            Flow f = slot < 0 ? null : flows[slot];
            if (f != null && (f.state == Flow.RESERVED || f.state == Flow.ACTIVE) && f.haveKey && !f.udp
                    && (key.protocol == Ip.ICMP || key.protocol == Ip.ICMPV6)) {
                icmpToFlow(f);
                continue;
            }
            if (f == null || (f.state != Flow.RESERVED && f.state != Flow.ACTIVE) || !f.haveKey
                    || key.protocol != Ip.TCP || key.dstPort != f.natPort) {
                dropNoFlow.increment(); // e.g. router solicitations, or a quarantined slot's old connection
                continue;
            }
            if (f.trace != null) {
                f.trace.copy(buf, 0, view.length(), TraceRing.TRANSLATED_IN);
            }
            int flags = view.tcpFlags();
            if ((flags & Ip.TCP_SYN) != 0) {
                view.clampMss(view.version() == 4 ? f.mss4 : f.mss6);
            }
            FlowKey o = f.original;
            scratch.put(0, o.dst, 0, 16).put(16, o.src, 0, 16);
            view.rewrite(true, scratch, 0, o.dstPort);
            view.rewrite(false, scratch, 16, o.srcPort);
            long w = Native.send(f.flowFd, bufPtr, view.length(), Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL);
            if (w < 0) {
                dropFull.increment();
                continue;
            }
            if (f.trace != null) {
                f.trace.copy(buf, 0, view.length(), TraceRing.CLIENT_OUT);
            }
            forwarded(f, false, flags, view.length());
        }
    }

    /**
     * Counts a TCP packet forwarded one way ({@code fromFlow}: flow to kernel) and follows its
     * flags: RST ends the flow at once, FIN both ways starts the linger before the end.
     */
    private void forwarded(Flow f, boolean fromFlow, int flags, int length) {
        if (fromFlow) {
            f.packetsIn++;
            f.bytesIn += length;
            packetsIn.increment();
        } else {
            f.packetsOut++;
            f.bytesOut += length;
            packetsOut.increment();
        }
        f.lastActiveNanos = System.nanoTime();
        if ((flags & Ip.TCP_RST) != 0) {
            end(f, "FLOW_ENDED", fromFlow ? "RST from the flow" : "RST from the kernel");
        } else if ((flags & Ip.TCP_FIN) != 0) {
            if (fromFlow) {
                f.finFromFlow = true;
            } else {
                f.finFromKernel = true;
            }
            lingerIfClosed(f);
        }
    }

    private void lingerIfClosed(Flow f) {
        if (f.finFromFlow && f.finFromKernel) {
            if (f.timer != null) {
                f.timer.cancel();
            }
            f.timer = loop.schedule(settings.lingerMillis(), () -> end(f, "FLOW_ENDED", "FIN both ways"));
        }
    }

    private void accept(Fd listener) throws NativeIoException {
        while (true) {
            int c = Native.accept4(listener.get(), Native.SOCK_CLOEXEC);
            if (c == Native.WOULD_BLOCK) {
                return;
            }
            Fd sock = Fd.adopt(c);
            InetSocketAddress peer;
            try {
                peer = Native.getpeername(c);
            } catch (NativeIoException e) {
                sock.close(); // reset before we got to it
                continue;
            }
            int slot = peer == null ? -1 : env.slotOf(peer.getAddress());
            Flow f = slot < 0 ? null : flows[slot];
            if (f == null || f.state != Flow.RESERVED || peer.getPort() != f.natPort) {
                counters.increment("accepts.orphan");
                sock.close();
                continue;
            }
            f.state = Flow.ACTIVE;
            if (f.timer != null) {
                f.timer.cancel();
            }
            scheduleIdle(f);
            counters.increment("upgrades.tcp");
            observeLatency(upgradeLatencyTcp, f);
            f.call.answerKeepingTask(Response.newBuilder().setUpgraded(Upgraded.newBuilder().setFdSocket(0)
                    .setOriginal(tuple(f.original)).setTranslated(translated(f))), List.of(sock));
            storeFlow(f);
        }
    }

    private void scheduleIdle(Flow f) {
        f.timer = loop.schedule(settings.idleMillis(), () -> {
            long idle = (System.nanoTime() - f.lastActiveNanos) / 1_000_000;
            if (f.state != Flow.ACTIVE) {
                return;
            }
            if (idle >= settings.idleMillis()) {
                end(f, "IDLE_TIMEOUT", "idle for " + idle + " ms");
            } else if (!(f.finFromFlow && f.finFromKernel)) {
                scheduleIdle(f);
            }
        });
    }

    private static FiveTuple tuple(FlowKey k) {
        return FlowTableCodec.tuple(k);
    }

    /** {@link Flow#traffic}: counts, and the tuples once the flow's first packet named them. Loop thread. */
    void traffic(Flow f, warren.control.v1.TaskInfo.Builder info) {
        info.setPacketsOut(f.packetsIn).setBytesOut(f.bytesIn).setPacketsIn(f.packetsOut).setBytesIn(f.bytesOut);
        if (f.haveKey) {
            info.addTuples(tuple(f.original));
            if (!f.udp) {
                FiveTuple t = translated(f);
                info.addTuples(f.downgrade ? t.toBuilder().setDstPort(f.innerPort).build() : t);
            }
        }
    }

    /**
     * The flow/NAT table in the handoff encoding; {@code fdsOut} receives the flows' fds (borrowed)
     * in the order the encoding's fd_* fields index them. Loop thread.
     */
    public warren.handoff.v1.BumblebeeState snapshot(List<Integer> fdsOut) {
        return FlowTableCodec.write(flows, env.mtu, System.nanoTime(), fdsOut);
    }

    private FiveTuple translated(Flow f) {
        int v = f.original.version;
        ByteBuffer a = ByteBuffer.allocate(16);
        Environment.poolAddress(v, f.slot, a, 0);
        byte[] src = new byte[v == 4 ? 4 : 16];
        a.get(0, src);
        return FiveTuple.newBuilder().setProtocol(Ip.TCP).setSrcIp(ByteString.copyFrom(src)).setSrcPort(f.natPort)
                .setDstIp(ByteString.copyFrom(v == 4 ? Environment.LISTEN4 : Environment.LISTEN6))
                .setDstPort(Environment.LISTEN_PORT).build();
    }

    private String translatedText(Flow f) {
        FiveTuple t = translated(f);
        try {
            String src = java.net.InetAddress.getByAddress(t.getSrcIp().toByteArray()).getHostAddress();
            String dst = java.net.InetAddress.getByAddress(t.getDstIp().toByteArray()).getHostAddress();
            int dport = f.downgrade ? f.innerPort : t.getDstPort();
            return "tcp " + src + ":" + t.getSrcPort() + " -> " + dst + ":" + dport;
        } catch (java.net.UnknownHostException e) {
            return "?";
        }
    }

    private static FlowKey reversed(FlowKey k) {
        FlowKey r = new FlowKey().copyFrom(k);
        swap(r);
        return r;
    }

    private static warren.control.v1.EndReason endReason(String reason) {
        try {
            return warren.control.v1.EndReason.valueOf(reason);
        } catch (IllegalArgumentException e) {
            return warren.control.v1.EndReason.ERROR;
        }
    }

    /** Ends a flow once: closes its socket, answers (if still due), audit end, quarantines the slot. */
    void end(Flow f, String reason, String detail) {
        if (f.state != Flow.RESERVED && f.state != Flow.ACTIVE) {
            return;
        }
        long storedTask = store != null && f.call != null && f.call.task() != null ? f.call.task().number() : 0;
        boolean answered = f.state == Flow.ACTIVE && !f.downgrade;
        f.trace = null; // its trace sees the task end and finishes; the slot's next flow is not traced
        loop.unregister(f.flowReg);
        if (f.innerFd >= 0) {
            loop.unregister(f.innerReg);
            Native.close(f.innerFd);
            f.innerFd = -1;
        }
        if (f.socket != null) {
            f.socket.close();
            f.socket = null;
        }
        Native.close(f.flowFd);
        f.flowFd = -1;
        f.flowReg = -1;
        if (f.udpFd >= 0) {
            loop.unregister(f.udpReg);
            Native.close(f.udpFd);
            f.udpFd = -1;
            f.udpReg = -1;
        }
        if (f.timer != null) {
            f.timer.cancel();
            f.timer = null;
        }
        JsonLine audit = new JsonLine().put("reason", reason).put("detail", detail == null ? "" : detail)
                .put("slot", f.slot).put("kind", f.downgrade ? "downgrade" : f.udp ? "udp" : "tcp")
                .put("original", f.haveKey ? f.original.toString() : "")
                .put("translated", f.haveKey && !f.udp ? translatedText(f) : "")
                .put("packets_in", f.packetsIn).put("packets_out", f.packetsOut)
                .put("bytes_in", f.bytesIn).put("bytes_out", f.bytesOut);
        counters.increment("flows.ended." + reason.toLowerCase(java.util.Locale.ROOT));
        counters.counter(BYTES_OUT).add(f.bytesIn);
        counters.counter(BYTES_IN).add(f.bytesOut);
        if (f.downgrade && f.state == Flow.ACTIVE) {
            warren.daemon.relay.Pair pair = f.relay;
            f.relay = null;
            if (pair != null) {
                pair.end(warren.control.v1.EndReason.FLOW_ENDED, reason); // its Ending closes both sockets
            }
            f.call.reply(Response.newBuilder().setDowngraded(warren.control.v1.Downgraded.newBuilder()
                    .setTuple(tuple(reversed(f.original))).setPacketsIn(f.packetsIn).setPacketsOut(f.packetsOut)
                    .setBytesIn(f.bytesIn).setBytesOut(f.bytesOut).setReason(endReason(reason))), List.of(), reason, audit);
        } else if (answered) {
            f.call.endTask(reason, audit);
        } else {
            Error.Code code = reason.equals("TIMEOUT") ? Error.Code.TIMEOUT
                    : reason.equals("SHUTDOWN") ? Error.Code.SHUTTING_DOWN : Error.Code.PEER_GONE;
            if (reason.equals("CANCELLED")) {
                code = Error.Code.NOT_FOUND;
            }
            f.call.fail(code, "flow ended before the upgrade completed: " + reason
                    + (detail == null ? "" : " (" + detail + ")"));
        }
        f.call = null;
        if (storedTask != 0) {
            store.remove(storedTask); // after the answer is queued
        }
        f.state = Flow.QUARANTINED;
        quarantined++;
        armQuarantine(f);
        Log.debug("slot " + f.slot + " ended: " + reason);
    }
}
