package warren.fish.egress;

import java.nio.ByteBuffer;
import jnr.ffi.Pointer;
import warren.control.v1.EndReason;
import warren.daemon.trace.TraceCopy;
import warren.daemon.trace.TraceRing;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.IcmpError;
import warren.packet.Ip;
import warren.packet.Gso;
import warren.packet.PacketView;
import warren.packet.VnetHdr;

/**
 * The reply path: packets read from fish0 (at most {@link #READS_PER_WAKEUP} a wakeup) to a
 * soft-unicast IP are matched by (IP, protocol, port) to their flow, checked against its tuple,
 * rewritten back to the client's own tuple and sent to that client's socket only. An ICMP error
 * about a flow goes to its client with its inner header mapped back. The kernel's own multicast
 * on fish0 is counted apart. Owns its buffers: one per loop, allocating nothing per packet.
 *
 * <p>Offloads (issue 15): the working buffer holds a virtio_net_hdr at 0 and the packet at
 * {@link VnetHdr#SIZE}. A fish0 with IFF_VNET_HDR gives both (a reply may be a GSO super-packet
 * with a partial checksum, kept right through the rewrite); an old-format fish0's packet and a
 * packet from a hand-over ring get an empty header. A client that declared {@code vnet_hdr} gets
 * header and packet as one message; a plain client gets a super-packet cut into segments
 * ({@link Gso}) sent with one sendmmsg(2), and a partial checksum completed.
 */
final class ReplyPath implements warren.daemon.loop.HandoverRing.Receiver {
    private static final int READS_PER_WAKEUP = 64;
    private static final int H = VnetHdr.SIZE;
    /** Segments of one super-packet for a plain client: a TCP one of 64 KiB at MSS 536, a UDP one's kernel limit. */
    private static final int SEGMENTS = 128;
    /** The longest segment sent to a plain client (fish0's side may have a larger MTU than the path's). */
    private static final int SEGMENT_MAX = 9216;
    /** {@link #sendSegments}: the super-packet was dropped (and counted) before anything was sent. */
    private static final long DROPPED = Long.MIN_VALUE;

    /** Who owns a reply no flow of this loop matches (N loops); with one loop, never asked. */
    interface Owner {
        /** The loop of the client whose range holds {@code port} on the IP {@code a[0, len)}, or -1. */
        int loopOf(byte[] a, int len, int port);
    }

    private final Clients clients;
    private final PortLeases leases;
    private final EgressCounters counters;
    private final int tun;
    /** fish0 has IFF_VNET_HDR: each read gives a header and a packet. */
    private final boolean tunVnet;
    private final ByteBuffer buf = ByteBuffer.allocateDirect(VnetHdr.MAX_MESSAGE + 64);
    private final Pointer bufPtr = Pointer.wrap(Native.RUNTIME, buf);
    /** The packet behind the header. */
    private final Pointer pktPtr = Pointer.wrap(Native.RUNTIME, buf.slice(H, buf.capacity() - H));
    /** A super-packet's segments for a plain client (or a hand-over ring), sent with one sendmmsg. */
    private final warren.fdpass.SendBatch segments = new warren.fdpass.SendBatch(SEGMENTS, SEGMENT_MAX);
    private final ByteBuffer scratch = ByteBuffer.allocateDirect(32);
    private final PacketView view = new PacketView();
    private final FlowKey key = new FlowKey();
    private final FlowKey inner = new FlowKey();
    private final TraceCopy traceCopy = new TraceCopy();
    /** This loop's index; rings to the other loops by index (null: one loop, nothing handed over). */
    private final int index;
    private final warren.daemon.loop.HandoverRing[] out;
    private final Owner owner;
    /** The packet in {@code buf} came over a ring: never handed on again. */
    private boolean handedOver;

    /** @param tun fish0's fd (borrowed) */
    ReplyPath(Clients clients, PortLeases leases, EgressCounters counters, int tun) {
        this(clients, leases, counters, tun, false, 0, null, null);
    }

    /**
     * @param tun this loop's queue of fish0 (borrowed)
     * @param out {@code out[k]}: the ring to loop k ({@code out[index]} unused), or null with one loop
     */
    ReplyPath(Clients clients, PortLeases leases, EgressCounters counters, int tun, boolean tunVnet, int index,
            warren.daemon.loop.HandoverRing[] out, Owner owner) {
        this.tunVnet = tunVnet;
        this.index = index;
        this.out = out;
        this.owner = owner;
        this.clients = clients;
        this.leases = leases;
        this.counters = counters;
        this.tun = tun;
    }

    /** fish0 is readable. */
    void read() {
        for (int i = 0; i < READS_PER_WAKEUP; i++) {
            long n = tunVnet ? Native.read(tun, bufPtr, VnetHdr.MAX_MESSAGE) : Native.read(tun, pktPtr, VnetHdr.MAX_MESSAGE - H);
            if (n <= 0) {
                return;
            }
            if (!tunVnet) {
                VnetHdr.writeNone(buf, 0);
                n += H;
            }
            if (n < H) {
                counters.drop(EgressCounters.Drop.REPLY_MALFORMED);
                continue;
            }
            packet((int) n - H);
        }
    }

    /** A reply another loop read and handed over (its flow is one of this loop's clients'). */
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
     * No flow of this loop's matches the reply in {@code buf} (to {@code port} of the IP in
     * {@code key.dst}): if another loop's client owns that port, the packet goes to that loop
     * (true); a full ring drops and counts it (true). False: nobody owns it, a drop of the caller's.
     */
    private boolean handOver(int port) {
        if (out == null || handedOver) {
            return false;
        }
        int to = owner.loopOf(key.dst, key.addressLength(), port);
        if (to < 0 || to == index) {
            return false;
        }
        if (!VnetHdr.isGso(buf, 0)) {
            if (VnetHdr.needsCsum(buf, 0)) {
                view.completeChecksum(); // the ring carries plain packets
                VnetHdr.writeNone(buf, 0);
            }
            offer(out[to], buf, H, view.length());
            return true;
        }
        int size = VnetHdr.gsoSize(buf, 0);
        int k = Gso.segments(view, size);
        ByteBuffer b = segments.buffer();
        int max = Math.min(segments.slotSize(), out[to].maxPacket());
        for (int i = 0; i < k; i++) {
            if (Gso.segmentLength(view, size, i) > max) {
                counters.drop(EgressCounters.Drop.SEGMENTS_TOO_MANY); // a ring slot is 2 KiB
                return true;
            }
        }
        counters.offloadTunIn.increment();
        counters.offloadSegmented.increment();
        for (int i = 0; i < k; i++) {
            offer(out[to], b, segments.offset(0), Gso.segment(view, size, i, b, segments.offset(0)));
        }
        return true;
    }

    private void offer(warren.daemon.loop.HandoverRing ring, ByteBuffer b, int off, int len) {
        if (ring.offer(b, off, len, 0)) {
            counters.handedOver.increment();
        } else {
            counters.drop(EgressCounters.Drop.HANDOVER_FULL);
        }
    }

    /** One packet from fish0, {@code n} bytes in {@code buf} at {@link #H}, its header at 0. */
    private void packet(int n) {
        if (kernelMulticast(n)) {
            counters.kernelMulticast.increment(); // the kernel's own chatter on fish0, not a reply lost
            return;
        }
        if (view.parse(buf, H, n, key) != DropReason.NONE
                || (tunVnet && VnetHdr.validate(buf, 0, view, VnetHdr.MAX_MESSAGE) != DropReason.NONE)) {
            counters.drop(EgressCounters.Drop.REPLY_MALFORMED);
            return;
        }
        SoftIp soft = clients.softIp(key.dst, key.addressLength());
        if ((soft != null || out != null) && IcmpError.is(view, buf)) {
            icmpError(soft);
            return;
        }
        int proto = Flow.protoIndex(key.protocol);
        Flow f = soft == null ? null : soft.flows.get(proto, key.dstPort);
        if (f == null && handOver(key.dstPort)) {
            return;
        }
        if (!live(f, key.src, key.addressLength()) || (proto != Flow.ICMP && key.srcPort != f.key.dstPort)) {
            counters.drop(EgressCounters.Drop.REPLY_NO_FLOW);
            return;
        }
        Client c = arriving(f);
        view.rewrite(false, scratch, 0, f.key.srcPort, VnetHdr.needsCsum(buf, 0));
        if (!send(c)) {
            return;
        }
        c.packetsIn++;
        c.bytesIn += view.length();
        f.packet(System.nanoTime(), false, proto == Flow.TCP ? view.tcpFlags() : 0, view.length());
        leases.touched(f);
    }

    /**
     * A packet read from fish0 to a multicast (or IPv4 broadcast) destination: never a reply to a
     * soft-unicast IP, but the kernel's own traffic on the link (MLD reports once IPv6 forwarding
     * is on). Counted as {@code tun.kernel_multicast}, not as a drop. Reads two bytes of
     * {@code buf}; {@code n} is the packet's length.
     */
    private boolean kernelMulticast(int n) {
        int version = (buf.get(H) >> 4) & 0xF;
        return version == 6 ? n >= Ip.V6_HEADER && (buf.get(H + Ip.V6_DST) & 0xFF) == 0xFF
                : version == 4 && n >= Ip.V4_HEADER && (buf.get(H + Ip.V4_DST) & 0xFF) >= 224;
    }

    /**
     * An ICMP error from the internet about a packet Fish sent for a flow: the inner header is
     * mapped back to the client's own tuple, the outer destination becomes the client, and it goes
     * to that client only (the inner tuple must be the flow's reservation).
     */
    private void icmpError(SoftIp soft) {
        if (!IcmpError.innerKey(view, buf, inner)) {
            counters.drop(EgressCounters.Drop.ICMP_ERROR_UNREADABLE);
            return;
        }
        Flow f = soft == null ? null : soft.flows.get(Flow.protoIndex(inner.protocol), inner.srcPort);
        if (f == null && handOver(inner.srcPort)) {
            return;
        }
        if (!live(f, inner.dst, inner.addressLength()) || inner.dstPort != f.key.dstPort) {
            counters.drop(EgressCounters.Drop.ICMP_ERROR_NO_FLOW);
            return;
        }
        Client c = arriving(f);
        IcmpError.rewriteInner(view, buf, true, scratch, 0, f.key.srcPort);
        view.setAddress(false, scratch, 0);
        IcmpError.fixOuter(view);
        if (send(c)) {
            counters.icmpErrorsToClient.increment();
        }
    }

    /**
     * Sends the rewritten packet to its client; false if it could not: the client's buffer is full
     * (the packet is dropped and counted), or, on a datagram pair, its peer has closed
     * (ECONNREFUSED, then ENOTCONN): the client ends now.
     */
    private boolean send(Client c) {
        boolean gso = VnetHdr.isGso(buf, 0);
        if (gso) {
            counters.offloadTunIn.increment();
        }
        long rc;
        if (c.vnet) {
            rc = Native.send(c.fd, bufPtr, H + view.length(), Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL);
        } else if (gso) {
            rc = sendSegments(c);
        } else {
            if (VnetHdr.needsCsum(buf, 0)) {
                view.completeChecksum();
                VnetHdr.writeNone(buf, 0); // complete now (a second completion would corrupt it)
            }
            rc = Native.send(c.fd, pktPtr, view.length(), Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL);
        }
        if (rc == DROPPED) {
            return false; // counted where it was dropped
        }
        if (rc < 0) {
            int e = (int) -rc;
            if (e == Errno.ECONNREFUSED || e == Errno.ENOTCONN) {
                clients.end(c, EndReason.FLOW_ENDED);
            } else {
                counters.drop(EgressCounters.Drop.CLIENT_FULL);
            }
            return false;
        }
        if (c.trace != null) {
            traceCopy.copy(c.trace, buf, H, view.length(), TraceRing.CLIENT_OUT, VnetHdr.needsCsum(buf, 0));
        }
        return true;
    }

    /**
     * The super-packet in {@code buf} cut into segments and sent to a plain client with one
     * sendmmsg(2): 0 when all or some went (the rest dropped and counted: the client's buffer is
     * full), -EAGAIN if none did, another -errno as send(2) would.
     */
    private long sendSegments(Client c) {
        int size = VnetHdr.gsoSize(buf, 0);
        int k = Gso.segments(view, size);
        if (k > segments.count()) {
            counters.drop(EgressCounters.Drop.SEGMENTS_TOO_MANY);
            return DROPPED;
        }
        ByteBuffer b = segments.buffer();
        for (int i = 0; i < k; i++) {
            if (Gso.segmentLength(view, size, i) > segments.slotSize()) {
                counters.drop(EgressCounters.Drop.SEGMENTS_TOO_MANY);
                return DROPPED;
            }
            segments.length(i, Gso.segment(view, size, i, b, segments.offset(i)));
        }
        counters.offloadSegmented.increment();
        int sent = segments.send(c.fd, k);
        if (sent < 0) {
            return sent;
        }
        if (sent == 0) {
            return -Errno.EAGAIN;
        }
        for (int i = sent; i < k; i++) {
            counters.drop(EgressCounters.Drop.CLIENT_FULL);
        }
        return 0;
    }

    /** {@code f} is a live flow to the peer made of the first {@code len} bytes of {@code peer}. */
    private static boolean live(Flow f, byte[] peer, int len) {
        if (f == null || f.client.ended) {
            return false;
        }
        for (int i = 0; i < len; i++) {
            if (f.key.dst[i] != peer[i]) {
                return false;
            }
        }
        return true;
    }

    /** The packet in {@code buf} is {@code f}'s: traced as it came, the client's address in {@code scratch}. */
    private Client arriving(Flow f) {
        Client c = f.client;
        if (c.trace != null) {
            traceCopy.copy(c.trace, buf, H, view.length(), TraceRing.TRANSLATED_IN, VnetHdr.needsCsum(buf, 0));
        }
        scratch.put(0, f.key.src, 0, 16);
        return c;
    }
}
