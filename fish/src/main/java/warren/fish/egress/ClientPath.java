package warren.fish.egress;

import java.nio.ByteBuffer;
import jnr.ffi.Pointer;
import warren.control.v1.EndReason;
import warren.daemon.trace.TraceCopy;
import warren.daemon.trace.TraceRing;
import warren.fdpass.RecvBatch;
import warren.fdpass.libc.Native;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.Ip;
import warren.packet.Gso;
import warren.packet.PacketView;
import warren.packet.VnetHdr;

/**
 * The client path: packets read from a client's socket (a batch per read, a few reads per
 * wakeup) are checked (parsed, ICMP only echo requests, the client's family and identity), find
 * or lease their flow, get the soft-unicast IP and the flow's port as their source and are written
 * to fish0. A new flow with no free port is answered at once ({@link #reject}). Owns its buffers:
 * one per loop, allocating nothing per packet.
 *
 * <p>Offloads (issue 15). Each message is parsed, rewritten and written to fish0 where recvmmsg put
 * it, in its read slot (no copy): a virtio_net_hdr at the slot's start and the packet at
 * {@link VnetHdr#SIZE}, whoever sent it. A client that declared {@code vnet_hdr} sends both (its
 * header validated against the packet, {@link VnetHdr#parse}: a GSO super-packet is written to
 * fish0 whole, its partial checksum kept right through the rewrite); a plain client's packet is
 * received {@link VnetHdr#SIZE} bytes into its slot and an empty header written in front of it. A
 * fish0 with IFF_VNET_HDR takes header and packet in one write; an old-format fish0 (inherited)
 * gets the packet alone, a super-packet cut into segments first.
 *
 * <p><b>Joined datagrams.</b> With a fish0 that takes UDP super-packets (USO), consecutive UDP
 * datagrams of one flow in one read batch, of one payload size (the last may be shorter), with the
 * same IP header fields but length and id, are joined into one UDP_L4 super-packet (headers of the
 * first, payloads back to back, the partial checksum of the whole: copied into a buffer of its
 * own, the one copy this path makes) and written once; the kernel
 * cuts it into the same datagrams again (IPv4 ids renumbered from the first's). At most
 * {@link #JOIN_MAX} datagrams or 64 KiB; a datagram that does not fit, any other packet, and the
 * end of a batch write what is pending first, so nothing is reordered.
 *
 * <p><b>New flows, a batch at a time</b> (issue 15). The first packet of a read batch that has no
 * flow looks ahead at the batch's later packets (parsed and checked in their slots, without
 * copying) for other new flows, and all of them are leased in one conntrack batch
 * ({@link PortLeases#leaseAll}: one write, every request create-exclusive and answered on its
 * own). Packets are still handled one by one in the order read, so a flow's packets are never
 * reordered; a packet of a flow that got no lease is refused as before (RST or ICMP, counted).
 */
final class ClientPath {
    private static final int READS_PER_WAKEUP = 4;
    /** Headroom for the virtio_net_hdr before the packet in the working buffer. */
    private static final int H = VnetHdr.SIZE;
    /** Most datagrams joined into one UDP super-packet (the kernel takes 64 before 6.10, 128 after). */
    static final int JOIN_MAX = 64;

    private final Clients clients;
    private final PortLeases leases;
    private final EgressCounters counters;
    private final int tun;
    /** fish0 has IFF_VNET_HDR: a write carries the header. */
    private final boolean tunVnet;
    /**
     * The read slots, where every message is handled: a slot takes a vnet_hdr client's largest
     * message ({@link VnetHdr#MAX_MESSAGE}) at headroom 0 and a plain client's largest packet
     * behind {@link #H} bytes of headroom.
     */
    private final RecvBatch rx = new RecvBatch(16, VnetHdr.MAX_MESSAGE + 64);
    /** The read slots' buffer: the message being handled starts at {@link #at} in it. */
    private final ByteBuffer buf = rx.buffer();
    /** Each slot's header (its start) and packet ({@link #H} in). */
    private final Pointer[] slotHdr = new Pointer[rx.count()];
    private final Pointer[] slotPkt = new Pointer[rx.count()];
    /** Where the message being handled starts in {@link #buf} (its header; the packet at + H). */
    private int at;
    /** One segment of a super-packet for an old-format fish0. */
    private final ByteBuffer seg = ByteBuffer.allocateDirect(65536 + 64);
    private final Pointer segPtr = Pointer.wrap(Native.RUNTIME, seg);
    private final Pointer segPtrH = Pointer.wrap(Native.RUNTIME, seg.slice(H, seg.capacity() - H));
    private final ByteBuffer scratch = ByteBuffer.allocateDirect(32);
    private final PacketView view = new PacketView();
    private final FlowKey key = new FlowKey();
    private final FlowKey rejectKey = new FlowKey();
    private final TraceCopy traceCopy = new TraceCopy();
    /** An answer to a client: a header at 0 (for a vnet_hdr client), the packet at {@link #H}. */
    private final ByteBuffer rejectBuf = ByteBuffer.allocateDirect(H + 1500);
    private final Pointer rejectPtr = Pointer.wrap(Native.RUNTIME, rejectBuf);
    private final ByteBuffer rejectOut = rejectBuf.slice(H, 1500);
    private final Pointer rejectPktPtr = Pointer.wrap(Native.RUNTIME, rejectOut);

    /**
     * @param tun fish0's fd (borrowed)
     * @param tunVnet fish0 has IFF_VNET_HDR
     */
    ClientPath(Clients clients, PortLeases leases, EgressCounters counters, int tun, boolean tunVnet) {
        this(clients, leases, counters, tun, tunVnet, false);
    }

    /** @param join fish0 takes UDP super-packets (TUN_F_USO4|USO6 set): datagrams are joined. */
    ClientPath(Clients clients, PortLeases leases, EgressCounters counters, int tun, boolean tunVnet, boolean join) {
        this.clients = clients;
        this.leases = leases;
        this.counters = counters;
        this.tun = tun;
        this.tunVnet = tunVnet;
        this.joining = join && tunVnet;
        this.uso = join;
        for (int i = 0; i < rx.count(); i++) {
            slotHdr[i] = rx.pointer(i);
            slotPkt[i] = rx.pointer(i).slice(H);
        }
    }

    // ---- joined datagrams (see the class comment); loop thread

    private final boolean joining;
    /** fish0 takes UDP_L4 super-packets (USO; Linux 6.2+): else a client's are cut before fish0. */
    private final boolean uso;
    /** The super-packet being joined: a header at 0, the first datagram's IP and UDP headers at H, payloads behind. */
    private final ByteBuffer join = ByteBuffer.allocateDirect(VnetHdr.MAX_MESSAGE + 64);
    private final Pointer joinPtr = Pointer.wrap(Native.RUNTIME, join);
    private final PacketView joinView = new PacketView();
    private final FlowKey joinKey = new FlowKey();
    private int joined; // datagrams in it; 0: none pending
    private int joinLength; // its IP packet's length so far
    private int joinSize; // the first datagram's payload length: the gso_size
    private boolean joinClosed; // a shorter datagram was last: no more
    private Flow joinFlow;

    /**
     * The rewritten UDP datagram in its slot joins the pending super-packet, or starts one;
     * false if it cannot be joined (then it goes out alone, after what is pending).
     */
    private boolean joinDatagram(Flow f) {
        int flags = VnetHdr.flags(buf, at); // a partial checksum is fine: the joined one gets its own
        if (!joining || key.protocol != Ip.UDP || (flags & ~VnetHdr.F_NEEDS_CSUM) != 0
                || VnetHdr.gsoType(buf, at) != VnetHdr.GSO_NONE
                || view.payloadLength() == 0 || view.payloadOffset() - view.offset() != (key.version == 4 ? 28 : 48)) {
            return false;
        }
        int payload = view.payloadLength();
        if (joined > 0 && (f != joinFlow || joinClosed || joined == JOIN_MAX || payload > joinSize
                || joinLength + payload > 65535 || !sameIpFields())) {
            flushJoin();
        }
        if (joined == 0) {
            int n = view.length();
            join.put(0, buf, at, H + n);
            joined = 1;
            joinLength = n;
            joinSize = payload;
            joinClosed = false;
            joinFlow = f;
            return true;
        }
        join.put(H + joinLength, buf, view.payloadOffset(), payload);
        joinLength += payload;
        joined++;
        joinClosed = payload < joinSize;
        return true;
    }

    /** The datagram in its slot has the pending one's IP header but for length, id and checksum. */
    private boolean sameIpFields() {
        int a = at + H;
        int j = H;
        if (key.version == 4) {
            return buf.get(a + 1) == join.get(j + 1) && buf.get(a + 6) == join.get(j + 6) && buf.get(a + 7) == join.get(j + 7)
                    && buf.get(a + 8) == join.get(j + 8);
        }
        return buf.getInt(a) == join.getInt(j) && buf.get(a + 7) == join.get(j + 7);
    }

    /** Writes the pending super-packet (or its one datagram) to fish0. */
    void flushJoin() {
        if (joined == 0) {
            return;
        }
        int n = joined;
        joined = 0;
        joinFlow = null;
        if (n > 1) {
            int v = (join.get(H) >> 4) & 0xF;
            int ip = v == 4 ? Ip.V4_HEADER : Ip.V6_HEADER;
            if (v == 4) {
                join.putShort(H + Ip.V4_TOTAL_LENGTH, (short) joinLength);
                join.putShort(H + Ip.V4_CHECKSUM, (short) 0);
                join.putShort(H + Ip.V4_CHECKSUM, (short) warren.packet.Checksum.finish(
                        warren.packet.Checksum.sum(join, H, Ip.V4_HEADER)));
            } else {
                join.putShort(H + Ip.V6_PAYLOAD_LENGTH, (short) (joinLength - Ip.V6_HEADER));
            }
            join.putShort(H + ip + 4, (short) (joinLength - ip)); // UDP length
            if (joinView.parse(join, H, joinLength, joinKey) != DropReason.NONE) {
                counters.drop(EgressCounters.Drop.TUN_FULL); // cannot happen: the first datagram parsed
                return;
            }
            joinView.setPartialChecksum();
            VnetHdr.writeFor(join, 0, joinView, true, joinSize);
            counters.offloadTunOut.increment();
            counters.offloadJoined.add(n);
        }
        if (Native.write(tun, joinPtr, H + joinLength) < 0) {
            for (int i = 0; i < n; i++) {
                counters.drop(EgressCounters.Drop.TUN_FULL);
            }
        }
    }

    /** The client's socket is readable (or hung up). */
    void read(Client c) {
        for (int round = 0; round < READS_PER_WAKEUP && !c.ended; round++) {
            int got = rx.receive(c.fd, c.vnet ? 0 : H); // a plain packet behind room for its header
            if (got < 0) {
                clients.end(c, EndReason.ERROR);
                return;
            }
            if (got > 0) {
                c.lastPacket = System.nanoTime(); // once per batch
            }
            newFlows.clear();
            received = got;
            for (int m = 0; m < got && !c.ended; m++) {
                current = m;
                at = rx.offset(m);
                int len = rx.length(m);
                if (len == 0) {
                    flushJoin();
                    clients.end(c, EndReason.FLOW_ENDED);
                    return;
                }
                if (c.vnet) { // header and packet, as sent
                    packet(c, len);
                } else { // the packet, received H bytes in: an empty header in front of it
                    VnetHdr.writeNone(buf, at);
                    packet(c, H + len);
                }
            }
            flushJoin(); // a batch's datagrams never wait for the next read
            if (got < rx.count()) {
                return;
            }
        }
    }

    /** One message from a client in slot {@link #current}: a header at {@link #at} and the packet behind it, {@code n} bytes in all. */
    private void packet(Client c, int n) {
        if (c.trace != null && n > H) {
            traceCopy.copy(c.trace, buf, at + H, n - H, TraceRing.CLIENT_IN, c.vnet && VnetHdr.needsCsum(buf, at));
        }
        DropReason r = c.vnet ? VnetHdr.parse(buf, at, n, view, key, EgressNamespace.MTU)
                : view.parse(buf, at + H, n - H, key);
        if (r != DropReason.NONE) {
            counters.drop(r);
            return;
        }
        if (key.protocol == Ip.ICMP || key.protocol == Ip.ICMPV6) {
            int type = buf.get(view.l4Offset()) & 0xFF;
            if (type != (key.version == 4 ? 8 : 128)) {
                counters.drop(EgressCounters.Drop.ICMP_NOT_ECHO);
                return;
            }
        }
        if ((key.version == 4) != (c.soft.addr.length == 4)) {
            counters.drop(EgressCounters.Drop.WRONG_FAMILY);
            return;
        }
        if (!c.haveIdentity) {
            System.arraycopy(key.src, 0, c.identity, 0, 16);
            c.haveIdentity = true;
            clients.identified(c); // once per client: the recovered flows need it
        } else if (!java.util.Arrays.equals(c.identity, key.src)) {
            counters.drop(EgressCounters.Drop.WRONG_SOURCE);
            return;
        }
        Flow f = c.flows.get(key);
        if (f == null) {
            f = newFlow(c);
            if (f == null) {
                reject(c, view.length());
                return;
            }
        }
        scratch.put(0, c.soft.addr);
        boolean partial = VnetHdr.needsCsum(buf, at);
        view.rewrite(true, scratch, 0, f.port, partial);
        if (c.trace == null && joinDatagram(f)) {
            c.packetsOut++;
            c.bytesOut += view.length();
            f.packet(System.nanoTime(), true, 0, view.length());
            leases.touched(f);
            return;
        }
        flushJoin(); // what is pending goes first
        if (!toTun(partial)) {
            counters.drop(EgressCounters.Drop.TUN_FULL);
            return;
        }
        if (c.trace != null) {
            traceCopy.copy(c.trace, buf, at + H, view.length(), TraceRing.TRANSLATED_OUT, VnetHdr.needsCsum(buf, at));
        }
        c.packetsOut++;
        c.bytesOut += view.length();
        f.packet(System.nanoTime(), true, f.proto == Flow.TCP ? view.tcpFlags() : 0, view.length());
        leases.touched(f);
    }

    // ---- new flows, leased together per read batch (issue 15)

    /** The new flows of the current read batch and how their leases went. */
    private final NewFlows newFlows = new NewFlows(rx.count());
    /** Messages in the current read batch, and the index of the one being handled. */
    private int received;
    private int current;
    private final PacketView scanView = new PacketView();
    private final FlowKey scanKey = new FlowKey();

    /**
     * The packet in slot {@link #current} (parsed into {@link #key}, checked) is of no flow: its flow is
     * leased, together with the new flows of the batch's later packets ({@link #gatherRest}), in
     * one conntrack batch ({@link PortLeases#leaseAll}); its flow, or null if it got none (counted
     * and logged by {@link PortLeases#refused}, as every packet of a flow without a lease). Packets
     * are still handled one by one in order: the later ones find their flows leased already. A
     * flow whose lease failed is not tried again before the next read batch: its later packets in
     * this one are refused alike.
     */
    private Flow newFlow(Client c) {
        int i = newFlows.indexOf(key);
        if (i < 0) {
            i = newFlows.add(key);
            gatherRest(c);
            leases.leaseAll(c, newFlows, i);
        }
        if (newFlows.outcome[i] == NewFlows.LEASED) {
            return newFlows.flows[i]; // (found again only if its flow ended meanwhile, which nothing in a batch does)
        }
        leases.refused(c, key, newFlows.outcome[i], newFlows.errors[i]);
        return null;
    }

    /**
     * The batch's packets after the current one whose flow is new too, read in their slots: those
     * that will pass {@link #packet}'s checks (parse, echo only, family, identity: the current
     * packet has set it if it was the first) with a key of no flow and none gathered yet.
     */
    private void gatherRest(Client c) {
        ByteBuffer b = rx.buffer();
        for (int m = current + 1; m < received && !newFlows.full(); m++) {
            int len = rx.length(m);
            if (len == 0) {
                return; // end of file: nothing after it is handled
            }
            int off = rx.offset(m);
            DropReason r = c.vnet ? VnetHdr.parse(b, off, len, scanView, scanKey, EgressNamespace.MTU)
                    : scanView.parse(b, off + H, len, scanKey); // a plain packet is received H bytes in
            if (r != DropReason.NONE || (scanKey.version == 4) != (c.soft.addr.length == 4)
                    || !java.util.Arrays.equals(c.identity, scanKey.src)) {
                continue;
            }
            if ((scanKey.protocol == Ip.ICMP || scanKey.protocol == Ip.ICMPV6)
                    && (b.get(scanView.l4Offset()) & 0xFF) != (scanKey.version == 4 ? 8 : 128)) {
                continue;
            }
            if (c.flows.get(scanKey) == null && newFlows.indexOf(scanKey) < 0) {
                newFlows.add(scanKey);
            }
        }
    }

    /**
     * The rewritten message in its slot to fish0: header and packet in one write to a fish0
     * with IFF_VNET_HDR; else the packet alone, its checksum completed if partial, a super-packet
     * cut into segments (one write each). False if fish0 refused a write.
     */
    private boolean toTun(boolean partial) {
        boolean gso = VnetHdr.isGso(buf, at);
        if (gso) {
            counters.offloadTunOut.increment();
        }
        if (tunVnet && !(gso && key.protocol == Ip.UDP && !uso)) {
            return Native.write(tun, slotHdr[current], H + view.length()) >= 0;
        }
        if (!gso) {
            if (partial) {
                view.completeChecksum();
                VnetHdr.writeNone(buf, at); // complete now (a second completion would corrupt it)
            }
            return Native.write(tun, slotPkt[current], view.length()) >= 0;
        }
        int size = VnetHdr.gsoSize(buf, at); // an old-format fish0, or UDP_L4 for a kernel without USO
        int k = Gso.segments(view, size);
        for (int i = 0; i < k; i++) {
            int len = Gso.segment(view, size, i, seg, H);
            VnetHdr.writeNone(seg, 0);
            if ((tunVnet ? Native.write(tun, segPtr, H + len) : Native.write(tun, segPtrH, len)) < 0) {
                return false;
            }
        }
        counters.offloadSegmented.increment();
        return true;
    }

    /**
     * No port left for a new flow: tell the client at once instead of letting it time out — a
     * TCP RST for a SYN, an ICMP "administratively prohibited" for anything else. The packet is
     * still in its slot at {@link #at} + {@link #H} ({@code n} bytes, parsed into {@code view}/{@code key});
     * the answer is built at {@link #H} of {@code rejectBuf}, behind an empty header for a
     * vnet_hdr client.
     */
    private void reject(Client c, int n) {
        boolean v4 = key.version == 4;
        int ip = v4 ? Ip.V4_HEADER : Ip.V6_HEADER;
        ByteBuffer out = rejectOut;
        int total;
        for (int i = 0; i < out.capacity(); i++) {
            out.put(i, (byte) 0);
        }
        if (key.protocol == Ip.TCP) {
            if ((view.tcpFlags() & Ip.TCP_RST) != 0) {
                return;
            }
            long seq = buf.getInt(view.l4Offset() + 4) & 0xFFFFFFFFL;
            total = ip + Ip.TCP_HEADER;
            header(out, v4, Ip.TCP, total);
            int t = ip;
            out.putShort(t, (short) key.dstPort).putShort(t + 2, (short) key.srcPort).putInt(t + 4, 0)
                    .putInt(t + 8, (int) (seq + 1)).put(t + 12, (byte) 0x50).put(t + 13, (byte) (Ip.TCP_RST | Ip.TCP_ACK));
        } else {
            int quote = Math.min(n, v4 ? 548 : 1232 - ip - 8);
            total = ip + Ip.ICMP_HEADER + quote;
            header(out, v4, v4 ? Ip.ICMP : Ip.ICMPV6, total);
            out.put(ip, (byte) (v4 ? 3 : 1)).put(ip + 1, (byte) (v4 ? 13 : 1)); // administratively prohibited
            for (int i = 0; i < quote; i++) {
                out.put(ip + Ip.ICMP_HEADER + i, buf.get(at + H + i));
            }
        }
        if (view.parse(out, 0, total, rejectKey) != DropReason.NONE) {
            return;
        }
        view.fixChecksums();
        VnetHdr.writeNone(rejectBuf, 0);
        long sent = c.vnet ? Native.send(c.fd, rejectPtr, H + total, Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL)
                : Native.send(c.fd, rejectPktPtr, total, Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL);
        if (sent >= 0 && c.trace != null) {
            c.trace.copy(out, 0, total, TraceRing.CLIENT_OUT);
        }
        counters.rejectsSent.increment();
    }

    /** An IP header from the packet's destination back to its source (the one in {@code key}). */
    private void header(ByteBuffer out, boolean v4, int protocol, int total) {
        if (v4) {
            out.put(0, (byte) 0x45).putShort(Ip.V4_TOTAL_LENGTH, (short) total).put(Ip.V4_TTL, (byte) 64)
                    .put(Ip.V4_PROTOCOL, (byte) protocol);
            out.put(Ip.V4_SRC, key.dst, 0, 4).put(Ip.V4_DST, key.src, 0, 4);
            out.putShort(Ip.V4_CHECKSUM, (short) warren.packet.Checksum.finish(warren.packet.Checksum.sum(out, 0, 20)));
        } else {
            out.put(0, (byte) 0x60).putShort(Ip.V6_PAYLOAD_LENGTH, (short) (total - Ip.V6_HEADER))
                    .put(Ip.V6_NEXT_HEADER, (byte) protocol).put(Ip.V6_HOP_LIMIT, (byte) 64);
            out.put(Ip.V6_SRC, key.dst, 0, 16).put(Ip.V6_DST, key.src, 0, 16);
        }
    }
}
