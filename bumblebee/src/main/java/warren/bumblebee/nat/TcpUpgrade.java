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
    private final SlotTable slots;
    private final NatCounters counters;
    private final Lifecycle life;
    private final FlowPath flowPath;
    private final FlowStore store;

    TcpUpgrade(SlotTable slots, NatCounters counters, Lifecycle life, FlowPath flowPath, FlowStore store) {
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
    void upgrade(Call call, Fd flowSocket, int mtu) {
        Flow f = slots.claim(call, mtu, false);
        if (f == null) {
            flowSocket.close();
            counters.upgradesRefused.increment();
            call.fail(Error.Code.RESOURCE_EXHAUSTED, "no free NAT slot: " + slots.size() + " slots, "
                    + slots.quarantined() + " of them in quarantine (bumblebee.slots, bumblebee.quarantine)");
            return;
        }
        try {
            int flags = Native.fcntl(flowSocket.get(), Native.F_GETFL, 0);
            Native.fcntl(flowSocket.get(), Native.F_SETFL, flags | Native.O_NONBLOCK);
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
        call.startTask("upgrade", f, new JsonLine().put("slot", f.slot), false);
        life.armHandshakeTimer(f);
        store.store(f);
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
