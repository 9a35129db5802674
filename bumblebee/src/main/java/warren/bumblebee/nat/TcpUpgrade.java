package warren.bumblebee.nat;

import java.net.InetSocketAddress;
import java.util.List;
import warren.control.v1.Error;
import warren.control.v1.Response;
import warren.control.v1.Upgraded;
import warren.daemon.audit.JsonLine;
import warren.daemon.control.Call;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * The start and the answer of an {@code Upgrade}: {@link #upgrade} claims a slot for the flow
 * socket and waits (RESERVED, handshake timer) for the flow's first packet; a TCP SYN then crosses
 * the {@link FlowPath} to the kernel, whose listener accepts. {@link #accept} matches the accepted
 * connection to its slot by its peer address (pool address and NAT port), makes the flow ACTIVE
 * and hands the kernel socket to the requester in {@code Upgraded}; the flow keeps being pumped.
 * A UDP first packet is {@link UdpUpgrade}'s. Loop thread only.
 */
final class TcpUpgrade {
    private final int index;
    private final int loops;
    private final java.util.function.IntFunction<TcpUpgrade> owners; // null: one loop
    private final SlotTable slots;
    private final NatCounters counters;
    private final Lifecycle life;
    private final FlowPath flowPath;
    private final FlowStore store;

    TcpUpgrade(SlotTable slots, NatCounters counters, Lifecycle life, FlowPath flowPath, FlowStore store) {
        this(0, 1, slots, counters, life, flowPath, store, null);
    }

    TcpUpgrade(int index, int loops, SlotTable slots, NatCounters counters, Lifecycle life, FlowPath flowPath,
            FlowStore store, java.util.function.IntFunction<TcpUpgrade> owners) {
        this.index = index;
        this.loops = loops;
        this.owners = owners;
        this.slots = slots;
        this.counters = counters;
        this.life = life;
        this.flowPath = flowPath;
        this.store = store;
    }

    /**
     * Claims a slot for the flow socket (taken from the call) and waits for its first packet; the
     * flow's MSS is clamped to {@code mtu} (0: the TUN's) or the TUN's, the smaller. Answers
     * RESOURCE_EXHAUSTED when no slot is free.
     */
    void upgrade(Call call, Fd flowSocket, int mtu, boolean vnetHdr) {
        Flow f = slots.claim(call, mtu, false);
        if (f == null) {
            flowSocket.close();
            counters.upgradesRefused.increment();
            call.fail(Error.Code.RESOURCE_EXHAUSTED, "no free NAT slot: " + slots.size() + " slots, "
                    + slots.quarantined() + " of them in quarantine (bumblebee.slots, bumblebee.quarantine)");
            return;
        }
        f.vnet = vnetHdr;
        try {
            Native.setNonBlocking(flowSocket.get()); // one ioctl(FIONBIO), not fcntl get + set
            f.flowFd = flowSocket.detach();
            flowPath.register(f);
        } catch (NativeIoException e) {
            if (f.flowFd >= 0) {
                Native.close(f.flowFd);
            }
            f.flowFd = -1;
            slots.unclaim(f);
            call.fail(Error.Code.INTERNAL, "cannot register the flow socket: " + e.getMessage(), e.errno());
            return;
        }
        f.state = Flow.RESERVED;
        store.begun(f);
        call.startTask("upgrade", f, new JsonLine().put("slot", f.slot), false);
        life.armHandshakeTimer(f);
        store.store(f);
    }

    /**
     * On the control loop for this (another loop's) table: claims a slot for an upgrade, or refuses
     * it (RESOURCE_EXHAUSTED, the socket closed) and returns null. The task is started by the
     * caller, the rest is {@link #begin}'s on this loop.
     */
    Flow claim(Call call, Fd flowSocket, int mtu, boolean vnetHdr) {
        Flow f = slots.claim(call, mtu, false);
        if (f == null) {
            flowSocket.close();
            counters.upgradesRefused.increment();
            call.fail(Error.Code.RESOURCE_EXHAUSTED, "no free NAT slot: " + slots.size() + " slots, "
                    + slots.quarantined() + " of them in quarantine (bumblebee.slots, bumblebee.quarantine)");
            return null;
        }
        f.vnet = vnetHdr; // published to the owner by the post of begin
        return f;
    }

    /**
     * The claimed slot's flow socket registered here, RESERVED, waiting for its first packet (this
     * loop). While the NAT is paused (an upgrade in place) the registration and the handshake timer
     * go into the paused group: they start at resume, or go to the successor with the table.
     */
    void begin(Flow f, Fd flowSocket) {
        try {
            Native.setNonBlocking(flowSocket.get()); // one ioctl(FIONBIO), not fcntl get + set
            f.flowFd = flowSocket.detach();
            flowPath.register(f);
        } catch (NativeIoException e) {
            if (f.flowFd >= 0) {
                Native.close(f.flowFd);
            }
            f.flowFd = -1;
            Call call = f.call;
            f.call = null;
            slots.unclaim(f);
            call.fail(Error.Code.INTERNAL, "cannot register the flow socket: " + e.getMessage(), e.errno());
            return;
        }
        f.state = Flow.RESERVED;
        store.begun(f);
        life.armHandshakeTimer(f);
        store.store(f);
    }

    /**
     * On the owner loop: the control loop accepted the kernel connection of {@code f} (NAT port
     * {@code port}) and answered {@code Upgraded}; the flow becomes ACTIVE, unless it ended
     * meanwhile (then its end counted the answer as given).
     */
    void accepted(Flow f, int port) {
        if (f.state != Flow.RESERVED || f.natPort != port || f.accept.get() != Flow.ACCEPT_ACCEPTED) {
            return;
        }
        f.accept.set(Flow.ACCEPT_NONE);
        life.activate(f, counters.upgradeLatencyTcp);
        counters.upgradesTcp.increment();
        store.store(f);
    }

    /**
     * On the control loop, a connection to another loop's slot: if its flow waits for it (OPEN,
     * this NAT port) the control loop takes it (ACCEPTED), answers {@code Upgraded} with the
     * socket here (so the answer is queued before an upgrade in place pauses this loop) and tells
     * the owner; else it is an orphan.
     */
    private void acceptForOwner(Flow f, Fd sock, int port) {
        Call call = f.call; // set on this loop when it claimed the slot
        if (f.accept.get() != Flow.ACCEPT_OPEN || f.openPort != port
                || !f.accept.compareAndSet(Flow.ACCEPT_OPEN, Flow.ACCEPT_ACCEPTED) || call == null) {
            counters.acceptsOrphan.increment();
            sock.close();
            return;
        }
        call.answerKeepingTask(Response.newBuilder().setUpgraded(Upgraded.newBuilder().setFdSocket(0)
                .setOriginal(Tuples.tuple(f.original)).setTranslated(Tuples.translated(f))), List.of(sock));
        TcpUpgrade owner = owners.apply(SlotTable.owner(f.slot, loops));
        owner.life.loop().execute(() -> owner.accepted(f, port));
    }

    /** A listener is readable: every pending connection to its slot's flow, or closed as an orphan. */
    void accept(Fd listener) throws NativeIoException {
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
            Flow f = peer == null ? null : slots.byPoolAddress(peer.getAddress());
            if (f != null && loops > 1 && SlotTable.owner(f.slot, loops) != index) {
                acceptForOwner(f, sock, peer.getPort());
                continue;
            }
            if (f == null || f.state != Flow.RESERVED || peer.getPort() != f.natPort) {
                counters.acceptsOrphan.increment();
                sock.close();
                continue;
            }
            life.activate(f, counters.upgradeLatencyTcp);
            counters.upgradesTcp.increment();
            f.call.answerKeepingTask(Response.newBuilder().setUpgraded(Upgraded.newBuilder().setFdSocket(0)
                    .setOriginal(Tuples.tuple(f.original)).setTranslated(Tuples.translated(f))), List.of(sock));
            store.store(f);
        }
    }
}
