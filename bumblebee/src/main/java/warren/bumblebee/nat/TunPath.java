package warren.bumblebee.nat;

import java.nio.ByteBuffer;
import jnr.ffi.Pointer;
import warren.daemon.loop.HandoverRing;
import warren.daemon.trace.TraceRing;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.IcmpError;
import warren.packet.Ip;
import warren.packet.PacketView;

/**
 * The TUN side: packets the namespace's kernel sends to the NAT pool, back to their flows. A packet
 * is matched to its slot by its destination address ({@link SlotTable#byPoolAddress}, computed),
 * checked against the slot's state and NAT port (a quarantined slot's old connection can still
 * send), its MSS clamped on a SYN, rewritten to the flow's original 5-tuple reversed and sent to
 * the flow socket. An ICMP error about a flow's packet is translated back the same way,
 * its quoted header included ({@link #icmpToFlow}).
 *
 * <p>With N loops and no steering program on the device ({@link Handover}), a packet read here
 * for a slot of loop k is copied into the ring to loop k ({@code handover.packets}; a full ring
 * drops it: {@code drops.handover_full}, TCP resends); loop k's TunPath receives it
 * ({@link #onPacket}) and handles it exactly as one read from its own queue. A handed-over packet
 * is never handed on again. With the program, or one loop, nothing is handed over and a packet
 * for another loop's slot is dropped ({@code drops.tun_other_loop}).
 *
 * <p>The TUN, a character device without recvmmsg, is drained with up to {@link #BUDGET} read(2)s
 * per wakeup into one preallocated direct buffer; no allocation. Loop thread only.
 */
final class TunPath implements HandoverRing.Receiver {
    /** Packets read from the TUN per wakeup at most (the loop's budget). */
    private static final int BUDGET = 64;
    private static final int BUF = 65536 + 64;

    private final Fd tun; // this loop's TUN queue
    private final SlotTable slots;
    private final NatCounters counters;
    private final Lifecycle life;
    private final ByteBuffer buf = ByteBuffer.allocateDirect(BUF);
    private final Pointer bufPtr = Pointer.wrap(Native.RUNTIME, buf);
    private final ByteBuffer scratch = ByteBuffer.allocateDirect(64);
    private final PacketView view = new PacketView();
    private final FlowKey key = new FlowKey();
    private final FlowKey inner = new FlowKey();
    /** Rings to the other loops by index (null: no hand-over, one loop or a steering program). */
    private final HandoverRing[] out;
    /** The packet in {@code buf} came over a ring: never handed on again. */
    private boolean handedOver;

    /** @param out {@code out[k]}: the ring to loop k, or null when nothing is handed over */
    TunPath(Fd tun, SlotTable slots, NatCounters counters, Lifecycle life, HandoverRing[] out) {
        this.tun = tun;
        this.slots = slots;
        this.counters = counters;
        this.life = life;
        this.out = out;
    }

    /** The TUN is readable: up to {@link #BUDGET} packets, each to its flow or dropped and counted. */
    void fromTun() {
        for (int i = 0; i < BUDGET; i++) {
            long n = Native.read(tun.get(), bufPtr, BUF);
            if (n <= 0) {
                return; // EAGAIN: drained
            }
            packet((int) n);
        }
    }

    /** A packet another loop read from its queue for one of this loop's slots: as if read here. */
    @Override
    public void onPacket(ByteBuffer from, int offset, int length, int tag) {
        buf.put(0, from, offset, length);
        handedOver = true;
        try {
            packet(length);
        } finally {
            handedOver = false;
        }
    }

    /** One packet the kernel sent, in {@code buf} at offset 0: to its flow, to its loop, or dropped and counted. */
    private void packet(int n) {
        DropReason r = view.parse(buf, 0, n, key);
        if (r != DropReason.NONE) {
            counters.tunDrop(r).increment();
            return;
        }
        int dst = view.version() == 4 ? Ip.V4_DST : Ip.V6_DST;
        Flow f = slots.byPoolAddress(view.version(), buf, dst);
        if (f != null && f.live() && f.haveKey && !f.udp && (key.protocol == Ip.ICMP || key.protocol == Ip.ICMPV6)) {
            icmpToFlow(f);
            return;
        }
        if (f == null) {
            int owner = slots.otherLoop(view.version(), buf, dst);
            if (owner >= 0) {
                handOver(owner);
                return;
            }
        }
        if (f == null || !f.live() || !f.haveKey || key.protocol != Ip.TCP || key.dstPort != f.natPort) {
            counters.tunNoFlow.increment(); // e.g. router solicitations, or a quarantined slot's old connection
            return;
        }
        toFlow(f);
    }

    /** The packet in {@code buf} is for a slot of loop {@code owner}: into its ring, or dropped and counted. */
    private void handOver(int owner) {
        if (out == null || handedOver) {
            counters.tunOtherLoop.increment(); // the steering program sends none here: 0 while it is attached
            return;
        }
        if (out[owner].offer(buf, 0, view.length(), 0)) {
            counters.handedOver.increment();
        } else {
            counters.handoverFull.increment(); // (a packet larger than a slot counts here too: none, a slot holds the MTU)
        }
    }

    /** A TCP packet of the flow in the buffer: rewritten to the original tuple reversed and sent to the flow. */
    private void toFlow(Flow f) {
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
        if (Native.send(f.flowFd, bufPtr, view.length(), Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL) < 0) {
            counters.socketFull.increment();
            return;
        }
        if (f.trace != null) {
            f.trace.copy(buf, 0, view.length(), TraceRing.CLIENT_OUT);
        }
        life.forwarded(f, false, flags, view.length());
    }

    /** An ICMP error the kernel sends about a flow's packet: translated back and written to the flow. */
    private void icmpToFlow(Flow f) {
        if (!IcmpError.is(view, buf) || !IcmpError.innerKey(view, buf, inner) || inner.srcPort != f.natPort) {
            counters.tunNoFlow.increment();
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
            counters.socketFull.increment();
            return;
        }
        if (f.trace != null) {
            f.trace.copy(buf, 0, view.length(), TraceRing.CLIENT_OUT);
        }
        counters.icmpToFlow.increment();
    }
}
