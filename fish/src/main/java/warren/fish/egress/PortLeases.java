package warren.fish.egress;

import java.net.InetAddress;
import java.util.function.Consumer;
import warren.daemon.Log;
import warren.daemon.audit.AuditLog;
import warren.daemon.loop.EventLoop;
import warren.fdpass.libc.Errno;
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
 * lease: free --leaseAll: claimed (SoftIp.flows), create-exclusive answered 0--> held
 *             (in SoftIp.flows + Client.flows, entry in conntrack, check timer)
 *        claimed --EEXIST--> free (the flow tries its next port) ; --other error--> free (flow refused)
 *        held --check: idle past timeout, or client ended--> free in the tables at once, its
 *             entry's delete queued: sent by the end of the loop cycle, and ahead of any create
 *        held --check: live--> held (entry's fixed timeout refreshed, next check scheduled)
 * </pre>
 * The range allocator is round robin from {@link Client#nextPort}, skipping ports a flow of the
 * same protocol holds on the same IP. Reservations and deletes go to conntrack in batches
 * ({@link Ctnetlink.Batch}: the new flows of a read batch in one write, the deletes of the flows
 * ended in a loop cycle, or with their client, in one); each request is still create-exclusive
 * (or a delete) answered and checked on its own. On one loop; {@code lastFlowEnded} hears of a
 * client whose last flow went.
 */
final class PortLeases {
    /**
     * Slack of a reservation's timeout in the kernel over Fish's own expiry (s): the entry must
     * outlive the flow's next check even when the loop is late or an upgrade pauses it.
     */
    static final int KERNEL_SLACK_SECONDS = 60;
    /** A check refreshes the entry unless it outlives the next check by this much (well inside the slack). */
    static final long REFRESH_MARGIN_MS = 30_000;
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
     * Leases a port for each new flow of {@code c} in {@code nf} from entry {@code from} on (the
     * new flows of one read batch): each gets the next free port of the range (with N loops, first
     * the ports whose replies are steered to this loop), all of them reserved in one conntrack batch
     * ({@link Ctnetlink.Batch}: one write, the answers read together), each request create-exclusive
     * and checked on its own, as one at a time: 0 is a lease; EEXIST a collision, counted, and that
     * flow tries its next port in the next round (its port freed, the others kept); another answer
     * fails that flow alone. Rounds go on until every flow is leased, has failed or has no port left
     * of its range. A claimed port is in {@code c.soft.flows} from its request on, so two flows of
     * the batch never ask for the same port, and nothing else runs on the loop meanwhile. The first
     * round carries the deletes {@link #end} queued, ahead of the creates: a port is never asked
     * for again before the delete of its last entry is answered. Each outcome is in {@code nf}; a
     * packet of a flow not leased is counted and logged by {@link #refused}.
     */
    void leaseAll(Client c, NewFlows nf, int from) {
        for (int i = from; i < nf.count; i++) {
            nf.start[i] = c.nextPort;
            nf.tried[i] = 0;
        }
        int size = c.last - c.first + 1;
        int positions = (loops == 1 ? 1 : 2) * size;
        Ctnetlink.Batch b = ct.batch();
        while (true) {
            b.begin();
            int deletes = appendDeletes(b);
            int asked = 0;
            for (int i = from; i < nf.count; i++) {
                if (nf.outcome[i] == NewFlows.PENDING) {
                    asked += claim(c, nf, i, size, positions, b) ? 1 : 0;
                }
            }
            if (b.size() == 0) {
                if (takeOver(c, nf, from)) {
                    continue; // the next round carries the taken flows' deletes ahead of the creates
                }
                return;
            }
            b.send();
            counters.ctBatches.add(b.writes());
            counters.ctBatched.add(b.size());
            settleDeletes(b, deletes);
            for (int i = from; i < nf.count; i++) {
                if (nf.outcome[i] == NewFlows.PENDING && nf.flows[i] != null) {
                    answered(c, nf, i, b.answer(nf.request[i]));
                }
            }
            if (asked == 0) {
                if (takeOver(c, nf, from)) {
                    continue;
                }
                return;
            }
        }
    }

    /**
     * For each new TCP flow of the batch that found no free port: the client's oldest flow that an
     * RST closed ends now (audit reason "port reused", {@code reservations.reused}), its entry's
     * delete queued, and the new flow tries again from that port. After an RST neither end keeps
     * the connection, so its port serves a new one at once; a flow closed with FINs holds its port
     * for fish.tcp_close_timeout (one end may be in TIME_WAIT). The kernel's SNAT does likewise for
     * a crowded range (net/netfilter/nf_nat_core.c, nf_nat_used_tuple_harder: a TCP entry in
     * TIME_WAIT or CLOSE is evicted for a new SYN). False if nothing was taken over.
     */
    private boolean takeOver(Client c, NewFlows nf, int from) {
        boolean any = false;
        for (int i = from; i < nf.count && c.resetHead != null; i++) {
            if (nf.outcome[i] != NewFlows.EXHAUSTED || nf.keys[i].protocol != warren.packet.Ip.TCP) {
                continue;
            }
            Flow old = c.resetHead;
            end(old, FlowEnd.PORT_REUSED);
            counters.reservationsReused.increment();
            nf.outcome[i] = NewFlows.PENDING;
            nf.start[i] = old.port;
            nf.tried[i] = 0;
            any = true;
        }
        return any;
    }

    /**
     * Entry {@code i}'s next port: the flow made for it and put in its IP's table (the port is
     * claimed), its create-exclusive request appended to {@code b}. False if it has none left
     * (EXHAUSTED) or its request could not be made (FAILED).
     */
    private boolean claim(Client c, NewFlows nf, int i, int size, int positions, Ctnetlink.Batch b) {
        FlowKey key = nf.keys[i];
        int proto = Flow.protoIndex(key.protocol);
        while (nf.tried[i] < positions) {
            int at = nf.tried[i]++;
            int pass = at / size;
            int port = c.first + (nf.start[i] - c.first + at % size) % size;
            if (loops > 1 && (LoopPlacement.steered(port, loops) == index) != (pass == 0)) {
                continue;
            }
            if (c.soft.flows.get(proto, port) != null) {
                continue;
            }
            try {
                Ctnetlink.Tuple[] t = reservation(key, c.soft.addr, port);
                Flow f = new Flow(c, new FlowKey().copyFrom(key), proto, port, t[0]);
                f.refreshedNanos = System.nanoTime(); // its entry was just made, with kernelTimeout(proto)
                nf.request[i] = b.create(t[0], t[1], kernelTimeout(proto), Ctnetlink.TCP_CONNTRACK_ESTABLISHED,
                        mark(c.call.task().number(), key.srcPort), Ctnetlink.IPS_FIXED_TIMEOUT);
                c.soft.flows.put(proto, port, f);
                nf.flows[i] = f;
                return true;
            } catch (Exception e) {
                nf.outcome[i] = NewFlows.FAILED;
                nf.errors[i] = e;
                return false;
            }
        }
        nf.outcome[i] = NewFlows.EXHAUSTED;
        return false;
    }

    /** Entry {@code i}'s request was answered {@code errno}: leased, or its port given back. */
    private void answered(Client c, NewFlows nf, int i, int errno) {
        Flow f = nf.flows[i];
        if (errno == 0) {
            nf.outcome[i] = NewFlows.LEASED;
            counters.reservationsMade.increment();
            c.flows.put(f.key, f);
            c.nextPort = f.port + 1 > c.last ? c.first : f.port + 1;
            c.dirty = true; // a pre-copied client's update carries it (and its next port)
            audit.write(audit.line("flow_start", c.taskNumber()).put("tenant", c.tenant)
                    .put("client", f.key.toString()).put("egress", f.reserved.toString()));
            return;
        }
        c.soft.flows.remove(f.proto, f.port, f);
        nf.flows[i] = null;
        if (errno == Errno.EEXIST) {
            counters.collisions.increment(); // taken: the next port, next round
        } else {
            nf.outcome[i] = NewFlows.FAILED;
            nf.errors[i] = new NativeIoException("ctnetlink", errno, "create " + f.reserved);
        }
    }

    /**
     * A packet of a new flow that {@link #leaseAll} did not lease: counted and logged as such a
     * packet always was (an error: {@code reservations.errors}; no port: {@code
     * reservations.exhausted}, a line at a limited rate); the caller answers the client.
     */
    void refused(Client c, FlowKey key, int outcome, Exception error) {
        if (outcome == NewFlows.FAILED) {
            RESERVATION_FAILED.error("conntrack reservation failed", error);
            counters.reservationErrors.increment();
            return;
        }
        counters.exhausted.increment();
        if (!c.exhaustedLog.suppresses()) { // formats nothing while suppressed
            c.exhaustedLog.warn("tenant '" + c.tenant + "': no free port in " + c.first + "-" + c.last + " for " + key
                    + "; dropped");
        }
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
        long now = System.nanoTime();
        long idle = (now - f.lastActive) / 1_000_000;
        long remaining = timeoutOf(f) - idle; // when it expires if no packet comes
        if (remaining <= 0 || f.client.ended) {
            end(f, f.closing ? FlowEnd.CLOSED : FlowEnd.IDLE);
            return;
        }
        // next check when the flow would expire if no packet came: a full timeout from now held a
        // closed flow's port up to twice fish.tcp_close_timeout (its check fell just before the
        // expiry and waited another whole timeout), and new-connection storms ran out of ports.
        // A flow idle for more than half its timeout is about to expire: its entry (a refresh is a
        // delete and a create) is not refreshed for nothing if it outlives that check by a margin.
        long sinceRefresh = f.refreshedNanos == 0 ? Long.MAX_VALUE / 2 : (now - f.refreshedNanos) / 1_000_000;
        if (remaining < timeoutOf(f) / 2 && sinceRefresh + remaining + REFRESH_MARGIN_MS < kernelTimeout(f.proto) * 1000L) {
            schedule(f, remaining);
            return;
        }
        f.refreshedNanos = now;
        counters.reservationsRefreshed.increment();
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
        schedule(f, remaining);
    }

    /**
     * Ends the lease now: out of both tables, an audit line; its entry's delete is queued (sent
     * with the next batch: {@link #flushDeletes}, which runs at the end of this loop cycle at the latest).
     */
    void end(Flow f, FlowEnd why) {
        Client c = f.client;
        c.unlinkReset(f);
        if (f.copied) { // the pre-copy's successor holds it: its key goes in the client's update
            f.copied = false;
            f.endedNext = c.endedCopies;
            c.endedCopies = f;
            c.dirty = true;
        }
        c.soft.flows.remove(f.proto, f.port, f);
        c.flows.remove(f.key);
        if (c.flows.isEmpty()) {
            lastFlowEnded.accept(c);
        }
        if (f.timer != null) {
            f.timer.cancel();
            f.timer = null;
        }
        deleting[deletingCount++] = f.reserved; // deleted with the next batch (flushDeletes)
        if (deletingCount == deleting.length) {
            flushDeletes();
        }
        counters.flowsExpired.increment();
        audit.write(audit.line("flow_end", c.taskNumber()).put("tenant", c.tenant).put("client", f.key.toString())
                .put("egress", f.reserved.toString()).put("packets", f.packets).put("bytes", f.bytes)
                .put("reason", why.audit));
    }

    /**
     * A successor's pre-copied flow that the old process ended before the pause: out of both
     * tables and its check cancelled; no audit line and no delete (the entry was the old
     * process's to delete, and it has). Before the loops run.
     */
    void drop(Flow f) {
        Client c = f.client;
        c.unlinkReset(f);
        c.soft.flows.remove(f.proto, f.port, f);
        c.flows.remove(f.key);
        if (f.timer != null) {
            f.timer.cancel();
            f.timer = null;
        }
    }

    // ---- deletes, batched

    /** Most deletes queued before they are sent: one conntrack batch's chunk. */
    static final int DELETES_MAX = Ctnetlink.CHUNK_REQUESTS;
    /** The entries of ended flows, to delete with the next batch (their ports are free in the tables already). */
    private final Ctnetlink.Tuple[] deleting = new Ctnetlink.Tuple[DELETES_MAX];
    private int deletingCount;

    /**
     * Sends the queued deletes now, in one batch. Called at the end of each loop cycle (the lane's
     * duty), when a client ends (before its range is given back), before a pause (a handoff's
     * export) and at close; and the next {@link #leaseAll} carries them ahead of its creates. So a
     * flow's entry goes within the cycle in which the flow ended, and a port of this loop is never
     * reserved again before the delete of its last entry was answered.
     */
    void flushDeletes() {
        if (deletingCount == 0) {
            return;
        }
        Ctnetlink.Batch b = ct.batch();
        b.begin();
        int n = appendDeletes(b);
        b.send();
        counters.ctBatches.add(b.writes());
        counters.ctBatched.add(b.size());
        settleDeletes(b, n);
    }

    /** The queued deletes as the first requests of the batch {@code b} (just begun); how many. */
    private int appendDeletes(Ctnetlink.Batch b) {
        for (int i = 0; i < deletingCount; i++) {
            b.delete(deleting[i]);
        }
        return deletingCount;
    }

    /** The answers to the first {@code n} requests of {@code b}, the queued deletes: the queue is empty again. */
    private void settleDeletes(Ctnetlink.Batch b, int n) {
        for (int i = 0; i < n; i++) {
            int errno = b.answer(i);
            if (errno != 0 && errno != Errno.ENOENT) { // ENOENT: gone already (expired, or deleted by someone else)
                DELETE_FAILED.warn("conntrack delete of " + deleting[i] + " failed: "
                        + new NativeIoException("ctnetlink", errno, "delete " + deleting[i]).getMessage());
            }
            deleting[i] = null;
        }
        deletingCount = 0;
    }
}
