package warren.fish.egress;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;
import warren.control.v1.EgressEnded;
import warren.control.v1.EndReason;
import warren.control.v1.Response;
import warren.daemon.Log;
import warren.daemon.audit.JsonLine;
import warren.daemon.control.Call;
import warren.daemon.loop.EventLoop;
import warren.daemon.metrics.Families;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * One loop's clients and its part of the soft-unicast IPs they use (each IP's flows of this loop's
 * clients): a client, checked and placed by the control loop ({@link Egress#start}), begins here
 * ({@link #begin}), its socket is read by {@code reader} (the client path), and it ends in one
 * place, {@link #end}: its flows' leases end, its socket closes, its Egress request is answered,
 * and the control loop hears of it ({@code released}: its range, and with its IP's last client the
 * route). A datagram client also ends when idle ({@link #armIdle}). On its loop.
 *
 * <pre>
 * client: placed (control loop) --begin (its loop)--> started
 *         --its peer closes / reply finds its peer gone / idle (DGRAM) / cancel / stop--> ended
 * soft-unicast IP: first client's start (route to fish0 added, control loop) .. last client's end (route removed)
 * </pre>
 */
final class Clients {
    private static final int SO_SNDBUFFORCE = 32;
    private static final String[] PROTOCOLS = {"tcp", "udp", "icmp"};

    private final EventLoop loop;
    /** Its lane's group: every client socket is registered, and every idle check scheduled, in it. */
    private final EventLoop.Group group;
    private final EgressCounters counters;
    private final EgressNamespace ns;
    private final Egress.Settings settings;
    private final Consumer<Client> reader;
    /** Hears of each ended client, after its flows and socket (the control loop's registry of ranges and routes). */
    private final Consumer<Client> released;
    /** This loop's part of the soft-unicast IPs: those its clients use, with their flows. */
    private final AddressTable<SoftIp> softIps = new AddressTable<>();
    private PortLeases leases;
    /** Where clients are kept for crash recovery; null: nowhere. */
    private FishFdStore store;
    /** Send buffer set on each client's packet socket (0: leave it). */
    private long clientSndbuf;
    /** The index of the loop these clients live on. */
    int laneIndex;
    /** Pre-copy (old side): keys of copied clients that ended since their copy. */
    final java.util.ArrayList<Long> endedCopies = new java.util.ArrayList<>();

    /** @param reader reads a client's socket when it is readable (the client path) */
    Clients(EventLoop loop, EventLoop.Group group, EgressCounters counters, EgressNamespace ns, Egress.Settings settings,
            Consumer<Client> reader, Consumer<Client> released) {
        this.released = released;
        this.loop = loop;
        this.group = group;
        this.counters = counters;
        this.ns = ns;
        this.settings = settings;
        this.reader = reader;
    }

    void leases(PortLeases leases) {
        this.leases = leases;
    }

    void store(FishFdStore store) {
        this.store = store;
    }

    void sendBuffer(long bytes) {
        clientSndbuf = bytes;
    }

    /** The configured send buffer on a new client's socket (any thread: only the socket is touched). */
    void applySendBuffer(Fd packets, boolean vnet) throws NativeIoException {
        if (clientSndbuf > 0 || vnet) {
            // a super-packet client's messages are up to 64 KiB: room for 16 of them at least
            int bytes = (int) Math.min(Math.max(clientSndbuf, vnet ? 16 * 65_600 : 0), 1 << 30);
            try { // a datagram pair's replies queue against the sender's buffer: ~90 full-size packets by default
                Native.setsockoptInt(packets.get(), Native.SOL_SOCKET, SO_SNDBUFFORCE, bytes);
            } catch (NativeIoException e) {
                Native.setsockoptInt(packets.get(), Native.SOL_SOCKET, Native.SO_SNDBUF, bytes);
            }
        }
    }

    /** The soft-unicast IP made of the first {@code len} bytes of {@code a}, or null; allocates nothing. */
    SoftIp softIp(byte[] a, int len) {
        return softIps.get(a, len);
    }

    /** Every client (control path: snapshots). */
    List<Client> all() {
        List<Client> out = new ArrayList<>();
        for (SoftIp soft : softIps.values()) {
            out.addAll(soft.clients);
        }
        return out;
    }

    /**
     * A client the control loop has checked, placed on this loop and whose task it started
     * ({@link Egress#start}): from now on its socket is read here (while its lane is paused, its
     * events wait in the group like the others'). On this loop.
     */
    void begin(Client c) {
        c.soft = local(c.softIp);
        c.soft.clients.add(c);
        try {
            register(c);
        } catch (Exception | java.lang.Error e) {
            Log.warn("tenant '" + c.tenant + "': its packet socket cannot be watched: " + e.getMessage());
            end(c, EndReason.ERROR);
            return;
        }
        identified(c);
        armIdle(c);
    }

    /** This loop's record of the soft-unicast IP {@code addr}, made if it has none. */
    private SoftIp local(byte[] addr) {
        SoftIp soft = softIps.get(addr);
        if (soft == null) {
            soft = new SoftIp(addr);
            softIps.put(soft.addr, soft);
        }
        return soft;
    }

    /** This loop's clients (control path: counts). */
    int size() {
        int n = 0;
        for (SoftIp soft : softIps.values()) {
            n += soft.clients.size();
        }
        return n;
    }

    /**
     * A client handed over from a predecessor (its IP's route to fish0 is still there): registered
     * and its idle check armed in the lane's group, paused until the lane resumes. Before the loops run.
     */
    Client adopt(Call call, int fd, byte[] softIp, int first, int last, String tenant, boolean datagram)
            throws NativeIoException {
        Client c = new Client(this, loop, call, fd, softIp, first, last, tenant, datagram);
        c.lane = laneIndex;
        c.soft = local(c.softIp);
        c.soft.clients.add(c);
        register(c);
        armIdle(c);
        return c;
    }

    /** Level-triggered: a read stops at its budget, and the socket, still readable, is reported again. */
    private void register(Client c) throws NativeIoException {
        c.reg = loop.register(c.fd, Native.EPOLLIN | Native.EPOLLRDHUP, ev -> reader.accept(c), group);
    }

    /** What the client is (its identity now known, if it is) is kept in the fd store, if there is one. */
    void identified(Client c) {
        if (store != null) {
            store.put(c);
        }
    }

    /**
     * Their lane is about to resume (a failed handoff, or adopted clients starting): the pause does
     * not count as idle time. Before the group delivers the idle checks it held.
     */
    void resuming() {
        long now = System.nanoTime();
        for (SoftIp soft : softIps.values()) {
            for (Client c : soft.clients) {
                c.lastPacket = now;
            }
        }
    }

    /**
     * The handoff committed: the successor owns every client; nothing is ended, answered or closed.
     * Their registrations and timers stay in the lane's group, paused for the rest of this process.
     */
    void abandon() {
        softIps.clear();
    }

    /**
     * A datagram client with no flow ends after fish.client_idle_timeout without a packet either
     * way (IDLE_TIMEOUT): nothing else tells Fish its peer has gone. Armed when it starts or is
     * adopted and when its last flow expires; the check re-arms itself for the rest of the timeout
     * while packets come and stops while flows live. In the lane's group: held while it is paused,
     * and the pause is not idle time ({@link #resuming}).
     */
    void armIdle(Client c) {
        if (c.datagram && !c.ended && c.idleTimer == null && settings.clientIdleTimeout() > 0) {
            long idle = (System.nanoTime() - c.lastPacket) / 1_000_000;
            c.idleTimer = loop.schedule(Math.max(0, settings.clientIdleTimeout() - idle), () -> idleCheck(c), group);
        }
    }

    private void idleCheck(Client c) {
        c.idleTimer = null;
        if (c.ended || !c.flows.isEmpty()) {
            return; // the last flow's expiry arms it again
        }
        if ((System.nanoTime() - c.lastPacket) / 1_000_000 >= settings.clientIdleTimeout()) {
            end(c, EndReason.IDLE_TIMEOUT);
        } else {
            armIdle(c);
        }
    }

    /** Ends a client once: its flows, its socket, its store entry, maybe its IP; answers its Egress. */
    void end(Client c, EndReason reason) {
        if (c.ended) {
            return;
        }
        c.ended = true;
        if (c.copyKey != 0) {
            endedCopies.add(c.copyKey); // the successor drops its copy at the pause
        }
        if (c.idleTimer != null) {
            c.idleTimer.cancel();
            c.idleTimer = null;
        }
        counters.traffic[0].add(c.packetsOut);
        counters.traffic[1].add(c.packetsIn);
        counters.traffic[2].add(c.bytesOut);
        counters.traffic[3].add(c.bytesIn);
        c.trace = null; // its trace sees the task end and finishes
        loop.unregister(c.reg);
        if (store != null) {
            store.remove(c);
        }
        Native.close(c.fd);
        for (Flow f : new ArrayList<>(c.flows.values())) {
            leases.end(f, FlowEnd.CLIENT_ENDED);
        }
        leases.flushDeletes(); // its entries go before its range is given back (another loop may lease it next)
        c.soft.clients.remove(c);
        releaseIfUnused(c.soft);
        released.accept(c); // its range, and maybe its IP's route, go on the control loop
        c.call.reply(Response.newBuilder().setEgressEnded(EgressEnded.newBuilder().setPacketsOut(c.packetsOut)
                .setPacketsIn(c.packetsIn).setBytesOut(c.bytesOut).setBytesIn(c.bytesIn).setReason(reason)),
                List.of(), reason.name(), new JsonLine().put("reason", reason.name()).put("packets_out", c.packetsOut)
                        .put("packets_in", c.packetsIn).put("bytes_out", c.bytesOut).put("bytes_in", c.bytesIn));
    }

    /**
     * A successor's pre-copied client that the old process ended before the pause (or a discarded
     * pre-copy's): unregistered, its idle check cancelled, its flows dropped ({@link PortLeases#drop}:
     * no conntrack delete), its duplicate of the socket closed; nothing is answered. Before the loops run.
     */
    void dropCopy(Client c) {
        if (c.ended) {
            return;
        }
        c.ended = true;
        if (c.idleTimer != null) {
            c.idleTimer.cancel();
            c.idleTimer = null;
        }
        loop.unregister(c.reg);
        c.reg = -1;
        Native.close(c.fd);
        for (Flow f : new ArrayList<>(c.flows.values())) {
            leases.drop(f);
        }
        c.soft.clients.remove(c);
        releaseIfUnused(c.soft);
    }

    /**
     * Pre-copy (old side): every client forgets its copy (given up, or a failed handoff) and
     * nothing is tracked any more. O(clients + flows); not in a pause. On its loop.
     */
    void forgetCopy() {
        endedCopies.clear();
        for (SoftIp soft : softIps.values()) {
            for (Client c : soft.clients) {
                c.copyKey = 0;
                c.dirty = false;
                c.endedCopies = null;
                for (Flow f : c.flows.values()) {
                    f.copied = false;
                }
            }
        }
    }

    /** This loop forgets a soft-unicast IP with its last client here (its flows have ended with them). */
    private void releaseIfUnused(SoftIp soft) {
        if (soft.clients.isEmpty() && softIps.get(soft.addr) == soft) {
            softIps.remove(soft.addr);
        }
    }

    /**
     * Fish's part of a metrics sample: the traffic of live clients (so the counters move while
     * they last) and, per tenant and protocol, the ports of their ranges no flow holds.
     */
    void sample(warren.daemon.metrics.Sample s) {
        long[] t = new long[EgressCounters.TRAFFIC.length];
        int[] held = new int[Flow.PROTOCOLS];
        for (Client c : all()) {
            t[0] += c.packetsOut;
            t[1] += c.packetsIn;
            t[2] += c.bytesOut;
            t[3] += c.bytesIn;
            java.util.Arrays.fill(held, 0);
            for (Flow f : c.flows.values()) {
                held[f.proto]++;
            }
            for (int p = 0; p < Flow.PROTOCOLS; p++) {
                s.gauge(Families.PORTS_FREE, c.last - c.first + 1 - held[p], c.tenant, PROTOCOLS[p]);
            }
        }
        for (int i = 0; i < t.length; i++) {
            s.addCounter(EgressCounters.TRAFFIC[i], t[i]);
        }
    }
}
