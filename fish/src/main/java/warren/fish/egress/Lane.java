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
 * side (the other loops' reply paths) and what the control loop posts.
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
    private int tunReg = -1;
    private int wakeupReg = -1;
    /**
     * Paused for a handoff: handed-over packets stay in the rings (a reply processed now could
     * arm a flow's timer in a process that is about to give its flows away).
     */
    private boolean paused;

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
        ClientPath[] cp = new ClientPath[1];
        this.clients = new Clients(loop, counters, ns, settings, c -> cp[0].read(c), released);
        this.leases = new PortLeases(loop, index, loops, ct, counters, audit, settings.timeouts(), clients::armIdle);
        clients.leases(leases);
        this.clientPath = new ClientPath(clients, leases, counters, queue);
        cp[0] = clientPath;
        this.replyPath = new ReplyPath(clients, leases, counters, queue, index, out, owner);
    }

    /** Reads its queue (and its rings) from now on. */
    void watch() throws NativeIoException {
        paused = false;
        tunReg = loop.register(queue, Native.EPOLLIN, ev -> replyPath.read());
        if (wakeup != null && wakeupReg >= 0) {
            wakeup.signal(); // what was handed over while paused
        }
        if (wakeup != null && wakeupReg < 0) {
            for (HandoverRing r : in) {
                if (r != null) {
                    r.prepareToSleep(); // nothing polled yet: producers signal the first packet
                }
            }
            wakeupReg = loop.register(wakeup.fd(), Native.EPOLLIN, ev -> handedOver());
        }
    }

    /** Stops reading its queue (the rings are left: their producers are paused too). */
    void unwatch() {
        paused = true;
        loop.unregister(tunReg);
        tunReg = -1;
    }

    /** Its rings' eventfd fired: every ring polled up to its budget, then asleep again or re-signalled. */
    private void handedOver() {
        wakeup.drain();
        if (paused) {
            return; // polled on resume (watch signals), or lost with the process after the handoff
        }
        boolean more = false;
        for (HandoverRing r : in) {
            if (r == null) {
                continue;
            }
            r.awake();
            r.poll(replyPath, POLL_BUDGET);
            more |= !r.prepareToSleep();
        }
        if (more) {
            wakeup.signal(); // the budget is spent: the rest next cycle, after other fds
        }
    }

    void close() {
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
