package warren.bumblebee.nat;

import warren.bumblebee.env.Environment;
import warren.control.v1.Error;
import warren.control.v1.Spliced;
import warren.daemon.audit.JsonLine;
import warren.daemon.control.Call;
import warren.daemon.loop.EventLoop;
import warren.daemon.relay.Relay;
import warren.fdpass.Fd;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.packet.FlowKey;

/**
 * {@code Downgrade}: a kernel TCP socket handed in becomes a raw flow. A slot is claimed and a
 * socket inside the namespace connects from the listener's address to the slot's pool address; its
 * SYN crosses the {@link TunPath} to the flow socket as the handed-in tuple, and the real peer's
 * answers cross the {@link FlowPath} back. When the handshake completes ({@link #innerConnected},
 * RESERVED -> ACTIVE) the handed-in socket and the inner connection are relayed (splice) by the
 * {@link Relay}; the final answer {@code Downgraded} comes when the flow or the relay pair ends.
 * Loop thread only.
 */
final class Downgrade {
    private final EventLoop loop;
    private final EventLoop.Group group;
    private final Environment env;
    private final Relay relay;
    private final SlotTable slots;
    private final NatCounters counters;
    private final Lifecycle life;
    private final FlowPath flowPath;
    private final FlowStore store;
    private final long idleMillis;

    Downgrade(EventLoop loop, EventLoop.Group group, Environment env, Relay relay, SlotTable slots,
            NatCounters counters, Lifecycle life, FlowPath flowPath, FlowStore store, long idleMillis) {
        this.loop = loop;
        this.group = group;
        this.env = env;
        this.relay = relay;
        this.slots = slots;
        this.counters = counters;
        this.life = life;
        this.flowPath = flowPath;
        this.store = store;
        this.idleMillis = idleMillis;
    }

    /**
     * Claims a slot, connects from inside the namespace to the slot's pool address (the SYN
     * appears on the TUN and leaves on the flow as {@code tuple}) and waits for the handshake.
     */
    void downgrade(Call call, Fd socket, Fd flowSocket, FlowKey tuple) {
        Flow f = claim(call, socket, flowSocket);
        if (f == null) {
            return;
        }
        if (start(f, call, socket, flowSocket, tuple)) {
            call.startTask("downgrade", f, new JsonLine().put("slot", f.slot).put("tuple", tuple.toString()), true);
            life.armHandshakeTimer(f);
        }
    }

    /** Claims a slot for a downgrade, or refuses it (RESOURCE_EXHAUSTED, both sockets closed) and returns null. Any loop. */
    Flow claim(Call call, Fd socket, Fd flowSocket) {
        Flow f = slots.claim(call, 0, true);
        if (f == null) {
            socket.close();
            flowSocket.close();
            counters.downgradesRefused.increment();
            call.fail(Error.Code.RESOURCE_EXHAUSTED, "no free NAT slot: " + slots.size() + " slots, "
                    + slots.quarantined() + " of them in quarantine");
        }
        return f;
    }

    /**
     * On this (the owner) loop, the task started by the control loop: as {@link #downgrade} after
     * the claim. While the NAT is paused (an upgrade in place) its sockets and timer go into the
     * paused group: they start at resume, or go to the successor with the table.
     */
    void begin(Flow f, Fd socket, Fd flowSocket, FlowKey tuple) {
        Call call = f.call;
        if (start(f, call, socket, flowSocket, tuple)) {
            life.armHandshakeTimer(f);
        }
    }

    /** The downgrade's sockets and inner connection; false (the slot freed, the call failed) if it cannot start. */
    private boolean start(Flow f, Call call, Fd socket, Fd flowSocket, FlowKey tuple) {
        f.haveKey = true;
        f.original.copyFrom(tuple); // as seen from the flow: the peer is the "client" side
        Tuples.swap(f.original);
        f.socket = socket;
        int v = tuple.version;
        try {
            Native.setNonBlocking(flowSocket.get());
            f.flowFd = flowSocket.detach();
            flowPath.register(f);
            int[] inner = env.connectInside(v, AddressPlan.listen(v), AddressPlan.poolAddress(v, f.slot), f.natPort);
            f.innerFd = inner[0];
            f.innerPort = inner[1];
            registerInner(f);
        } catch (Exception e) {
            if (f.flowFd >= 0) {
                if (f.flowReg >= 0) {
                    loop.unregister(f.flowReg);
                }
                f.flowReg = -1;
                Native.close(f.flowFd);
                f.flowFd = -1;
            }
            socket.close();
            f.socket = null;
            f.call = null;
            slots.unclaim(f);
            call.fail(Error.Code.INTERNAL, "cannot start the downgrade: " + e);
            return false;
        }
        f.state = Flow.RESERVED;
        store.begun(f);
        return true;
    }

    /** Waits for the inner connection's handshake (EPOLLOUT, in the NAT's group); sets {@code f.innerReg}. */
    void registerInner(Flow f) throws NativeIoException {
        f.innerReg = loop.register(f.innerFd, Native.EPOLLOUT, ev -> innerConnected(f), group);
    }

    private void innerConnected(Flow f) throws NativeIoException {
        if (f.state != Flow.RESERVED || f.innerFd < 0) {
            return;
        }
        loop.unregister(f.innerReg);
        f.innerReg = -1;
        int err = Native.getsockoptInt(f.innerFd, Native.SOL_SOCKET, Native.SO_ERROR);
        if (err != 0) {
            life.end(f, FlowEnd.ERROR, "the handshake with the peer failed: " + Errno.describe(err));
            return;
        }
        FlowCopy.moved(f);
        f.state = Flow.ACTIVE;
        if (f.timer != null) {
            f.timer.cancel();
            f.timer = null;
        }
        counters.downgradesTcp.increment();
        Fd inner = Fd.adopt(f.innerFd);
        f.innerFd = -1;
        Fd socket = f.socket;
        f.socket = null;
        f.relay = relay.start(f.call, socket, inner, idleMillis, 0, 0, (call, a, b, counts, audit) -> {
            a.close();
            b.close();
            f.relay = null;
            relayEnded(f, counts);
        }, null);
        store.store(f);
    }

    /** The downgrade's relay pair ended: so does the flow, for the pair's reason. */
    void relayEnded(Flow f, Spliced counts) {
        life.end(f, FlowEnd.ofRelay(counts.getReason()), "relay ended: " + counts.getReason() + ", "
                + counts.getBytesAToB() + " bytes out, " + counts.getBytesBToA() + " bytes in");
    }
}
