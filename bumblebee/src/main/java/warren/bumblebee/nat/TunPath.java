package warren.bumblebee.nat;

import java.nio.ByteBuffer;
import jnr.ffi.Pointer;
import warren.daemon.loop.HandoverRing;
import warren.daemon.trace.TraceCopy;
import warren.daemon.trace.TraceRing;
import warren.fdpass.Fd;
import warren.fdpass.SendBatch;
import warren.fdpass.libc.Native;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.Gso;
import warren.packet.IcmpError;
import warren.packet.Ip;
import warren.packet.PacketView;
import warren.packet.VnetHdr;

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
 * <p><b>Offloads</b> (issue 15). The working buffer holds a virtio_net_hdr at 0 and the packet at
 * {@link VnetHdr#SIZE}. A bb0 with IFF_VNET_HDR gives both: the packet may be a GSO super-packet
 * of up to 64 KiB (the kernel's TSO of what an upgraded socket sends; {@code offload.tun_in}) with
 * a partial checksum, kept right through the rewrite ({@link PacketView#rewrite}: an address change
 * updates the pseudo-header sum, a port change leaves it); its header is validated like a
 * client's ({@code tun.drops.*}). A bb0 without it, and a packet from a hand-over ring, give the
 * packet alone, behind an empty header here. A flow that declared {@code vnet_hdr} gets header
 * and packet as one message; a plain flow gets a super-packet cut into segments ({@link Gso}: the
 * kernel's rules, full checksums; {@code offload.segmented}) sent with one sendmmsg(2), and a
 * partial checksum completed. A hand-over ring carries plain packets: a super-packet is cut before
 * it. A SYN whose MSS is clamped keeps a partial checksum partial (the option is in the part summed
 * later).
 *
 * <p>The TUN, a character device without recvmmsg, is drained with up to {@link #BUDGET} read(2)s
 * per wakeup into one preallocated direct buffer; no allocation. Loop thread only.
 */
final class TunPath implements HandoverRing.Receiver {
    /** Packets read from the TUN per wakeup at most (the loop's budget). */
    private static final int BUDGET = 64;
    /** Headroom for the virtio_net_hdr before the packet in the working buffer. */
    private static final int H = VnetHdr.SIZE;
    /** Segments of one super-packet sent with one sendmmsg: a 64 KiB one at MSS 536 is 123. */
    private static final int SEGMENTS = 128;
    /** The longest segment the sendmmsg slots hold (a longer one, at a larger MTU, is sent alone). */
    private static final int SEGMENT_MAX = 9216;
    private static final int SEND_FLAGS = Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL;

    private final Fd tun; // this loop's TUN queue
    /** bb0 has IFF_VNET_HDR: each read gives a header and a packet. */
    private final boolean tunVnet;
    private final SlotTable slots;
    private final NatCounters counters;
    private final Lifecycle life;
    private final ByteBuffer buf = ByteBuffer.allocateDirect(VnetHdr.MAX_MESSAGE + 64);
    private final Pointer bufPtr = Pointer.wrap(Native.RUNTIME, buf);
    /** The packet behind the header. */
    private final Pointer pktPtr = Pointer.wrap(Native.RUNTIME, buf.slice(H, buf.capacity() - H));
    /** A super-packet's segments for a plain flow, sent with one sendmmsg. */
    private final SendBatch segments;
    /** One segment at a time: for a ring, or one longer than a {@link #segments} slot. */
    private final ByteBuffer seg = ByteBuffer.allocateDirect(65536 + 64);
    private final Pointer segPtr = Pointer.wrap(Native.RUNTIME, seg);
    private final ByteBuffer scratch = ByteBuffer.allocateDirect(64);
    private final PacketView view = new PacketView();
    private final FlowKey key = new FlowKey();
    private final FlowKey inner = new FlowKey();
    private final TraceCopy traceCopy = new TraceCopy();
    /** Rings to the other loops by index (null: no hand-over, one loop or a steering program). */
    private final HandoverRing[] out;
    /** The packet in {@code buf} came over a ring: never handed on again. */
    private boolean handedOver;

    /**
     * @param tunVnet bb0 has IFF_VNET_HDR
     * @param mtu bb0's MTU: the longest segment of the kernel's super-packets
     * @param out {@code out[k]}: the ring to loop k, or null when nothing is handed over
     */
    TunPath(Fd tun, boolean tunVnet, int mtu, SlotTable slots, NatCounters counters, Lifecycle life,
            HandoverRing[] out) {
        this.tun = tun;
        this.tunVnet = tunVnet;
        this.slots = slots;
        this.counters = counters;
        this.life = life;
        this.out = out;
        this.segments = new SendBatch(SEGMENTS, Math.min(mtu, SEGMENT_MAX));
    }

    /** The TUN is readable: up to {@link #BUDGET} packets, each to its flow or dropped and counted. */
    void fromTun() {
        for (int i = 0; i < BUDGET; i++) {
            long n = tunVnet ? Native.read(tun.get(), bufPtr, VnetHdr.MAX_MESSAGE)
                    : Native.read(tun.get(), pktPtr, VnetHdr.MAX_MESSAGE - H);
            if (n <= 0) {
                return; // EAGAIN: drained
            }
            if (!tunVnet) {
                VnetHdr.writeNone(buf, 0);
            } else if (n < H) {
                counters.tunDrop(DropReason.TRUNCATED).increment();
                continue;
            } else {
                n -= H;
                if (VnetHdr.isGso(buf, 0)) {
                    counters.offloadTunIn.increment();
                }
            }
            packet((int) n);
        }
    }

    /** A packet another loop read from its queue for one of this loop's slots: as if read here. */
    @Override
    public void onPacket(ByteBuffer from, int offset, int length, int tag) {
        buf.put(H, from, offset, length); // a plain packet (a super-packet is cut before the ring)
        VnetHdr.writeNone(buf, 0);
        handedOver = true;
        try {
            packet(length);
        } finally {
            handedOver = false;
        }
    }

    /**
     * One packet the kernel sent, {@code n} bytes in {@code buf} at {@link #H}, its header at 0: to
     * its flow, to its loop, or dropped and counted.
     */
    private void packet(int n) {
        DropReason r = view.parse(buf, H, n, key);
        if (r == DropReason.NONE && tunVnet) {
            r = VnetHdr.validate(buf, 0, view, VnetHdr.MAX_MESSAGE); // (an empty header is valid)
        }
        if (r != DropReason.NONE) {
            counters.tunDrop(r).increment();
            return;
        }
        int dst = H + (view.version() == 4 ? Ip.V4_DST : Ip.V6_DST);
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

    /**
     * The packet in {@code buf} is for a slot of loop {@code owner}: into its ring (a super-packet
     * as its segments, a partial checksum completed: the ring carries plain packets), or dropped
     * and counted.
     */
    private void handOver(int owner) {
        if (out == null || handedOver) {
            counters.tunOtherLoop.increment(); // the steering program sends none here: 0 while it is attached
            return;
        }
        HandoverRing ring = out[owner];
        if (!VnetHdr.isGso(buf, 0)) {
            if (VnetHdr.needsCsum(buf, 0)) {
                view.completeChecksum();
                VnetHdr.writeNone(buf, 0);
            }
            offer(ring, buf, H, view.length());
            return;
        }
        int size = VnetHdr.gsoSize(buf, 0);
        int k = Gso.segments(view, size);
        if (Gso.segmentLength(view, size, 0) > ring.maxPacket()) { // the first is the longest
            counters.handoverFull.increment(); // (none: a ring slot holds the MTU, a segment is no longer)
            return;
        }
        counters.offloadSegmented.increment();
        for (int i = 0; i < k; i++) {
            offer(ring, seg, 0, Gso.segment(view, size, i, seg, 0));
        }
    }

    private void offer(HandoverRing ring, ByteBuffer b, int off, int len) {
        if (ring.offer(b, off, len, 0)) {
            counters.handedOver.increment();
        } else {
            counters.handoverFull.increment(); // (a packet larger than a slot counts here too: none, a slot holds the MTU)
        }
    }

    /** A TCP packet of the flow in the buffer: rewritten to the original tuple reversed and sent to the flow. */
    private void toFlow(Flow f) {
        boolean partial = VnetHdr.needsCsum(buf, 0);
        if (f.trace != null) {
            traceCopy.copy(f.trace, buf, H, view.length(), TraceRing.TRANSLATED_IN, partial);
        }
        int flags = view.tcpFlags();
        if ((flags & Ip.TCP_SYN) != 0 && view.clampMss(view.version() == 4 ? f.mss4 : f.mss6) && partial) {
            view.setPartialChecksum(); // the clamp updated the field as a full checksum: partial again
        }
        FlowKey o = f.original;
        scratch.put(0, o.dst, 0, 16).put(16, o.src, 0, 16);
        view.rewrite(true, scratch, 0, o.dstPort, partial);
        view.rewrite(false, scratch, 16, o.srcPort, partial);
        if (!send(f)) {
            return;
        }
        if (f.trace != null) {
            traceCopy.copy(f.trace, buf, H, view.length(), TraceRing.CLIENT_OUT, VnetHdr.needsCsum(buf, 0));
        }
        life.forwarded(f, false, flags, view.length());
    }

    /**
     * The rewritten packet in {@code buf} to its flow: header and packet in one message to a
     * vnet_hdr flow; to a plain flow the packet alone, its checksum completed if partial, a
     * super-packet cut into segments. False if the flow socket took none of it (counted).
     */
    private boolean send(Flow f) {
        long rc;
        if (f.vnet) {
            rc = Native.send(f.flowFd, bufPtr, H + view.length(), SEND_FLAGS);
        } else if (VnetHdr.isGso(buf, 0)) {
            return sendSegments(f);
        } else {
            if (VnetHdr.needsCsum(buf, 0)) {
                view.completeChecksum();
                VnetHdr.writeNone(buf, 0); // complete now (a second completion would corrupt it)
            }
            rc = Native.send(f.flowFd, pktPtr, view.length(), SEND_FLAGS);
        }
        if (rc < 0) {
            counters.socketFull.increment();
            return false;
        }
        return true;
    }

    /**
     * The super-packet in {@code buf} cut into segments for a plain flow and sent with one
     * sendmmsg(2) (segments longer than a slot, at an MTU over {@link #SEGMENT_MAX}: one send
     * each). Segments the socket did not take are dropped and counted ({@code drops.socket_full});
     * false if it took none.
     */
    private boolean sendSegments(Flow f) {
        int size = VnetHdr.gsoSize(buf, 0);
        int k = Gso.segments(view, size);
        counters.offloadSegmented.increment();
        if (k > segments.count() || Gso.segmentLength(view, size, 0) > segments.slotSize()) {
            for (int i = 0; i < k; i++) {
                if (Native.send(f.flowFd, segPtr, Gso.segment(view, size, i, seg, 0), SEND_FLAGS) < 0) {
                    counters.socketFull.add(k - i);
                    return i > 0;
                }
            }
            return true;
        }
        ByteBuffer b = segments.buffer();
        for (int i = 0; i < k; i++) {
            segments.length(i, Gso.segment(view, size, i, b, segments.offset(i)));
        }
        int sent = segments.send(f.flowFd, k);
        if (sent < k) {
            counters.socketFull.add(k - Math.max(sent, 0));
        }
        return sent > 0;
    }

    /** An ICMP error the kernel sends about a flow's packet: translated back and written to the flow. */
    private void icmpToFlow(Flow f) {
        if (!IcmpError.is(view, buf) || !IcmpError.innerKey(view, buf, inner) || inner.srcPort != f.natPort) {
            counters.tunNoFlow.increment();
            return;
        }
        if (f.trace != null) {
            f.trace.copy(buf, H, view.length(), TraceRing.TRANSLATED_IN);
        }
        FlowKey o = f.original;
        scratch.put(0, o.src, 0, 16).put(16, o.dst, 0, 16);
        IcmpError.rewriteInner(view, buf, true, scratch, 0, o.srcPort);
        IcmpError.rewriteInner(view, buf, false, scratch, 16, o.dstPort);
        view.setAddress(true, scratch, 16);
        view.setAddress(false, scratch, 0);
        IcmpError.fixOuter(view);
        VnetHdr.writeNone(buf, 0); // its checksums are complete now
        long rc = f.vnet ? Native.send(f.flowFd, bufPtr, H + view.length(), SEND_FLAGS)
                : Native.send(f.flowFd, pktPtr, view.length(), SEND_FLAGS);
        if (rc < 0) {
            counters.socketFull.increment();
            return;
        }
        if (f.trace != null) {
            f.trace.copy(buf, H, view.length(), TraceRing.CLIENT_OUT);
        }
        counters.icmpToFlow.increment();
    }
}
