package warren.fish.egress;

import java.net.InetAddress;
import java.util.function.Consumer;
import warren.daemon.Log;
import warren.daemon.audit.AuditLog;
import warren.daemon.loop.EventLoop;
import warren.fdpass.libc.NativeIoException;
import warren.fish.conntrack.Ctnetlink;
import warren.packet.FlowKey;
import warren.packet.Ip;

/**
 * Port leasing: a new flow gets a port of its client's range on the soft-unicast IP, reserved in
 * the egress namespace's conntrack table with create-exclusive semantics (the entry's reply tuple
 * is the egress 5-tuple, so a port anyone else uses there fails with EEXIST and the next is
 * tried, never a silent rewrite), and holds it until it expires ({@link FlowEnd}).
 *
 * <pre>
 * lease: free --lease()--> held (in SoftIp.flows + Client.flows, entry in conntrack, check timer)
 *        held --check: idle past timeout, or client ended--> free (entry deleted) ; end() at once
 *        held --check: live--> held (entry's fixed timeout refreshed, next check scheduled)
 * </pre>
 * The range allocator is round robin from {@link Client#nextPort}, skipping ports a flow of the
 * same protocol holds on the same IP. On one loop; {@code lastFlowEnded} hears of a client whose
 * last flow went.
 */
final class PortLeases {
    /**
     * Slack of a reservation's timeout in the kernel over Fish's own expiry (s): the entry must
     * outlive the flow's next check even when the loop is late or an upgrade pauses it.
     */
    static final int KERNEL_SLACK_SECONDS = 60;
    /**
     * An adopted flow (upgrade, recovery) is checked, and its entry refreshed, this soon after its
     * adoption, or at the resume if that comes later: its new process does not know when the old
     * one last refreshed it. A flow of a lane resumed after a failed handoff needs nothing more: its
     * check is in the lane's group, so one that fell due while paused fires at the resume, and one
     * not due yet comes within the entry's timeout counted from its last refresh (a pause does not
     * age the entry faster).
     */
    static final long CHECK_AFTER_RESUME_MS = 5_000;

    private static final Log.Limited RESERVATION_FAILED = Log.every("fish.reservation_failed");
    private static final Log.Limited DELETE_FAILED = Log.every("fish.conntrack_delete_failed");
    // per-flow lines a client's traffic can make repeat (a burst of short connections reusing
    // ports): rate-limited with a count of those held back, and counted
    private static final Log.Limited RECLAIMED_LOG = Log.every("fish.reservation_reclaimed");
    private static final Log.Limited LOST_LOG = Log.every("fish.reservation_lost");
    private static final Log.Limited REFRESH_FAILED = Log.every("fish.conntrack_refresh_failed");

    private final EventLoop loop;
    /** Its lane's group: every check is scheduled in it (held while the lane is paused). */
    private final EventLoop.Group group;
    private final Ctnetlink ct;
    private final EgressCounters counters;
    private final AuditLog audit;
    private final Egress.Timeouts timeouts;
    private final Consumer<Client> lastFlowEnded;
    /** This loop's index and the number of loops: ports of class {@code index} ({@code port % loops}) go first. */
    private final int index;
    private final int loops;

    PortLeases(EventLoop loop, EventLoop.Group group, int index, int loops, Ctnetlink ct, EgressCounters counters,
            AuditLog audit, Egress.Timeouts timeouts, Consumer<Client> lastFlowEnded) {
        this.index = index;
        this.loops = loops;
        this.loop = loop;
        this.group = group;
        this.ct = ct;
        this.counters = counters;
        this.audit = audit;
        this.timeouts = timeouts;
        this.lastFlowEnded = lastFlowEnded;
    }

    /** The conntrack mark of a flow: its client's task (low 16 bits) and the client's own source port. */
    static int mark(long task, int clientPort) {
        return (int) (((task & 0xFFFF) << 16) | (clientPort & 0xFFFF));
    }

    /**
     * A new flow of {@code c} for the packet whose key is {@code key}: the next free port of the
     * range reserved in conntrack, the flow in both tables; null when no port is free (counted,
     * logged at a limited rate) or conntrack failed. Its first check is scheduled by {@link #touched}.
     */
    Flow lease(Client c, FlowKey key) {
        int proto = Flow.protoIndex(key.protocol);
        int size = c.last - c.first + 1;
        try {
            // with N loops: first the ports whose replies are steered to this loop, then the others
            for (int pass = 0, passes = loops == 1 ? 1 : 2; pass < passes; pass++) {
            for (int i = 0; i < size; i++) {
                int port = c.first + (c.nextPort - c.first + i) % size;
                if (loops > 1 && (LoopPlacement.steered(port, loops) == index) != (pass == 0)) {
                    continue;
                }
                if (c.soft.flows.get(proto, port) != null) {
                    continue;
                }
                Ctnetlink.Tuple[] t = reservation(key, c.soft.addr, port);
                if (!ct.createExclusive(t[0], t[1], kernelTimeout(proto), Ctnetlink.TCP_CONNTRACK_ESTABLISHED,
                        mark(c.call.task().number(), key.srcPort), Ctnetlink.IPS_FIXED_TIMEOUT)) {
                    counters.collisions.increment();
                    continue;
                }
                counters.reservationsMade.increment();
                Flow f = new Flow(c, new FlowKey().copyFrom(key), proto, port, t[0]);
                c.soft.flows.put(proto, port, f);
                c.flows.put(f.key, f);
                c.nextPort = port + 1 > c.last ? c.first : port + 1;
                audit.write(audit.line("flow_start", c.taskNumber()).put("tenant", c.tenant)
                        .put("client", f.key.toString()).put("egress", t[0].toString()));
                return f;
            }
            }
        } catch (Exception e) {
            RESERVATION_FAILED.error("conntrack reservation failed", e);
            counters.reservationErrors.increment();
            return null;
        }
        counters.exhausted.increment();
        if (!c.exhaustedLog.suppresses()) { // formats nothing while suppressed
            c.exhaustedLog.warn("tenant '" + c.tenant + "': no free port in " + c.first + "-" + c.last + " for " + key
                    + "; dropped");
        }
        return null;
    }

    /**
     * A flow handed over from a predecessor: its entry is in conntrack already; it goes into
     * both tables (no check yet: {@link #adopted}, once its state is restored). Throws if its port is held.
     */
    Flow restore(Client c, FlowKey k, int port) throws java.net.UnknownHostException {
        int proto = Flow.protoIndex(k.protocol);
        Flow f = new Flow(c, k, proto, port, reservation(k, c.soft.addr, port)[0]);
        if (!c.soft.flows.put(proto, port, f)) {
            throw new IllegalArgumentException("two flows on " + proto + " port " + port);
        }
        c.flows.put(k, f);
        return f;
    }

    /** The conntrack entry (original, reply) reserving {@code port} of {@code softIp} for the flow {@code k}. */
    static Ctnetlink.Tuple[] reservation(FlowKey k, byte[] softIp, int port) throws java.net.UnknownHostException {
        InetAddress soft = InetAddress.getByAddress(softIp);
        InetAddress dst = InetAddress.getByAddress(java.util.Arrays.copyOf(k.dst, softIp.length));
        if (Flow.protoIndex(k.protocol) == Flow.ICMP) {
            boolean v6 = k.protocol == Ip.ICMPV6;
            return new Ctnetlink.Tuple[] {new Ctnetlink.Tuple(k.protocol, soft, dst, port, (v6 ? 128 : 8) << 8),
                new Ctnetlink.Tuple(k.protocol, dst, soft, port, (v6 ? 129 : 0) << 8)};
        }
        Ctnetlink.Tuple orig = new Ctnetlink.Tuple(k.protocol, soft, dst, port, k.dstPort);
        return new Ctnetlink.Tuple[] {orig, orig.reversed()};
    }

    private long timeoutFor(int proto, boolean closing) {
        switch (proto) {
            case Flow.TCP: return closing ? timeouts.tcpClose() : timeouts.tcp();
            case Flow.UDP: return timeouts.udp();
            default: return timeouts.icmp();
        }
    }

    /** Like conntrack: TCP half-open (no reply yet) and closing flows get the short timeout. */
    private long timeoutOf(Flow f) {
        return timeoutFor(f.proto, f.shortTimeout());
    }

    /**
     * The timeout Fish's conntrack entries carry (s): the protocol's longest flow timeout plus
     * {@link #KERNEL_SLACK_SECONDS}. The entries are IPS_FIXED_TIMEOUT, so the packets the kernel
     * tracks on them never raise it (TCP's established default is 5 days); Fish refreshes it at
     * each check of a live flow, and deletes the entry when the flow expires. A Fish that dies
     * without systemd leaves entries that go by themselves within this time, and a Fish started
     * afresh removes them at once ({@link EgressNamespace#removeStale}).
     */
    private int kernelTimeout(int proto) {
        return (int) (timeoutFor(proto, false) / 1000) + KERNEL_SLACK_SECONDS;
    }

    /** A packet of {@code f} went through: its first check is scheduled if none is due. */
    void touched(Flow f) {
        if (f.timer == null) {
            schedule(f, timeoutOf(f));
        }
    }

    /**
     * A restored flow ({@link #restore}, its state set): its first check, and its entry's refresh,
     * within {@link #CHECK_AFTER_RESUME_MS}, held by the paused lane until it resumes.
     */
    void adopted(Flow f) {
        schedule(f, Math.min(timeoutOf(f), CHECK_AFTER_RESUME_MS));
    }

    /**
     * The flow's check in {@code delay} ms: it expires if idle for its timeout (or its client has
     * ended); else its entry's timeout is refreshed in the kernel and the next check scheduled. A
     * live flow is checked at least every timeout, so its entry never runs out.
     */
    private void schedule(Flow f, long delay) {
        f.timer = loop.schedule(delay, () -> check(f), group);
    }

    private void check(Flow f) {
        f.timer = null;
        long idle = (System.nanoTime() - f.lastActive) / 1_000_000;
        if (idle >= timeoutOf(f) || f.client.ended) {
            end(f, f.closing ? FlowEnd.CLOSED : FlowEnd.IDLE);
            return;
        }
        try {
            switch (ct.refreshFixed(f.reserved, kernelTimeout(f.proto), mark(f.client.taskNumber(), f.key.srcPort))) {
                case REFRESHED -> { }
                case RECLAIMED -> {
                    counters.reservationsReclaimed.increment();
                    RECLAIMED_LOG.info("the conntrack entry of " + f.reserved + " had been made anew by the flow's own"
                            + " packets (the reservation had gone); it is the flow's reservation again");
                }
                case GONE -> {
                    if (!f.closing) { // a closed connection's entry may go with it (a SYN reopening the tuple)
                        counters.reservationsLost.increment();
                        LOST_LOG.warn("the conntrack entry of " + f.reserved + " has gone (deleted by someone else?); the flow"
                                + " goes on unreserved until it expires");
                    }
                }
            }
        } catch (NativeIoException e) {
            counters.reservationErrors.increment();
            REFRESH_FAILED.warn("conntrack refresh of " + f.reserved + " failed: " + e.getMessage());
        }
        schedule(f, timeoutOf(f));
    }

    /** Ends the lease now: out of both tables, its entry deleted, an audit line. */
    void end(Flow f, FlowEnd why) {
        Client c = f.client;
        c.soft.flows.remove(f.proto, f.port, f);
        c.flows.remove(f.key);
        if (c.flows.isEmpty()) {
            lastFlowEnded.accept(c);
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
        counters.flowsExpired.increment();
        audit.write(audit.line("flow_end", c.taskNumber()).put("tenant", c.tenant).put("client", f.key.toString())
                .put("egress", f.reserved.toString()).put("packets", f.packets).put("bytes", f.bytes)
                .put("reason", why.audit));
    }
}
