package warren.fish.egress;

import warren.daemon.audit.AuditLog;
import warren.daemon.loop.EventLoop;
import warren.daemon.loop.HandoverRing;
import warren.fdpass.EventFd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.fish.conntrack.Ctnetlink;

/**
 * One loop's set of engine parts: its clients ({@link Clients}), its port leases with a conntrack
 * socket of its own ({@link PortLeases}; a netlink socket is not thread-safe), its client path and
 * reply path, fish0's queue of its index (read and written here only) and the hand-over rings
 * whose consumer it is. Everything here is touched on its loop only, except the rings' producer
 * side (the other loops' reply paths) and what the control loop posts. Every registration and
 * timer of the lane is in its {@link #group}, so a handoff pauses and resumes the lane in one call.
 */
final class Lane {
    /** Slots of a hand-over ring (power of two) and their size (fish0's packets are at most its MTU). */
    static final int RING_SLOTS = 512;
    static final int RING_SLOT_SIZE = HandoverRing.DEFAULT_SLOT_SIZE;
    /** Handed-over packets taken per wakeup from each ring. */
    private static final int POLL_BUDGET = 256;

    final int index;
    final EventLoop loop;
    final int queue;
    final Clients clients;
    final PortLeases leases;
    final ClientPath clientPath;
    final ReplyPath replyPath;
    /** This lane's own conntrack socket (null: lane 0 uses the namespace's). */
    private final Ctnetlink ownCt;
    /** Rings into this loop by producer index (null with one loop); the wakeup they signal. */
    final HandoverRing[] in;
    final EventFd wakeup;
    /**
     * Everything of this lane on its loop: its queue's and its rings' wakeup's registrations, its
     * clients' sockets, their idle checks and their flows' checks. A handoff pauses it
     * ({@link #pause}): no packet is read, no reply handed over from another loop is polled (it
     * stays in its ring), no timer fires, so nothing moves in a process about to give its clients
     * away; all of it is delivered at {@link #resume}.
     */
    final EventLoop.Group group;
    /** At the end of each loop cycle: the deletes of the flows that ended in it go, in one batch. */
    private final EventLoop.Duty deletes;
    private int tunReg = -1;
    /** Pre-copy (old side): a duplicate of its queue went in a chunk (the delta then names none). */
    boolean queueCopied;
    private int wakeupReg = -1;

    /**
     * @param out {@code out[k]}: the ring from this loop to loop k, or null with one loop
     * @param in {@code in[k]}: the ring from loop k to this one, or null with one loop
     */
    Lane(int index, int loops, EventLoop loop, EgressNamespace ns, Ctnetlink ct, Ctnetlink ownCt, EgressCounters counters,
            AuditLog audit, Egress.Settings settings, java.util.function.Consumer<Client> released,
            HandoverRing[] out, HandoverRing[] in, EventFd wakeup, ReplyPath.Owner owner) {
        this.index = index;
        this.loop = loop;
        this.queue = ns.queues[index].get();
        this.ownCt = ownCt;
        this.in = in;
        this.wakeup = wakeup;
        this.group = loop.group("fish-lane-" + index);
        ClientPath[] cp = new ClientPath[1];
        this.clients = new Clients(loop, group, counters, ns, settings, c -> cp[0].read(c), released);
        this.leases = new PortLeases(loop, group, index, loops, ct, counters, audit, settings.timeouts(), clients::armIdle);
        clients.leases(leases);
        this.clientPath = new ClientPath(clients, leases, counters, queue, ns.vnet, ns.uso);
        cp[0] = clientPath;
        this.replyPath = new ReplyPath(clients, leases, counters, queue, ns.vnet, index, out, owner);
        PortLeases l = leases;
        this.deletes = () -> {
            l.flushDeletes();
            return false;
        };
        loop.addDuty(deletes);
    }

    /**
     * Registers its queue and its rings' wakeup in its group, once: a fresh engine's before the
     * loops run, an adopted one's in the paused group (their events wait for {@link #resume}).
     */
    void register() throws NativeIoException {
        tunReg = loop.register(queue, Native.EPOLLIN, ev -> replyPath.read(), group);
        if (wakeup != null) {
            for (HandoverRing r : in) {
                if (r != null) {
                    r.prepareToSleep(); // nothing polled yet: producers signal the first packet
                }
            }
            wakeupReg = loop.register(wakeup.fd(), Native.EPOLLIN, ev -> handedOver(), group);
        }
    }

    /**
     * Holds everything of this lane (see {@link #group}); O(1): nothing is unregistered or
     * cancelled. Its registrations are level-triggered: one that is ready is reported once and then
     * disarmed until the resume (EventLoop.Group), so the paused loop does not spin. On its loop.
     */
    void pause() {
        leases.flushDeletes(); // the entries of flows ended before the pause go now, not in the successor's time
        group.pause();
    }

    /**
     * Undoes {@link #pause} (a failed handoff), or starts an adopted lane: the pause does not count
     * as a client's idle time, then what was held is delivered (each socket or queue that became
     * readable is read, the rings' wakeup polls what was handed over meanwhile, checks that fell
     * due fire in the next cycle). On its loop, or before the loops run.
     */
    void resume() {
        clients.resuming();
        group.resume();
    }

    /** Its rings' eventfd fired: every ring polled up to its budget, then asleep again or re-signalled. */
    private void handedOver() {
        HandoverRing.pollAll(in, replyPath, POLL_BUDGET, wakeup);
    }

    void close() {
        loop.removeDuty(deletes);
        leases.flushDeletes();
        loop.unregister(tunReg); // the queue itself is the namespace's (EgressNamespace)
        tunReg = -1;
        if (wakeupReg >= 0) {
            loop.unregister(wakeupReg);
            wakeupReg = -1;
        }
        if (wakeup != null) {
            wakeup.close();
        }
        if (ownCt != null) {
            ownCt.close();
        }
    }
}
