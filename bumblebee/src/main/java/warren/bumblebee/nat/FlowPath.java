package warren.bumblebee.nat;

import java.nio.ByteBuffer;
import jnr.ffi.Pointer;
import warren.fdpass.Fd;
import warren.daemon.loop.EventLoop;
import warren.daemon.trace.TraceCopy;
import warren.daemon.trace.TraceRing;
import warren.fdpass.RecvBatch;
import warren.fdpass.SendBatch;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.Gso;
import warren.packet.IcmpError;
import warren.packet.Ip;
import warren.packet.PacketView;
import warren.packet.VnetHdr;

/**
 * The flow side: packets read from a flow socket go to the TUN (TCP) or to the upgraded datagram
 * socket (UDP). Each is parsed ({@link PacketView}; malformed ones are dropped and counted by
 * reason) and checked against the flow's 5-tuple: the first packet defines it and must be a TCP
 * SYN (or UDP, which starts a {@link UdpUpgrade}). A TCP packet gets its MSS clamped, its source
 * rewritten to the slot's pool address and NAT port and its destination to the listener (a
 * downgrade's: its inner socket), then is written to the TUN. An ICMP error about a packet the
 * kernel sent is translated into the namespace ({@link #icmpToKernel}).
 *
 * <p>Flow sockets are read with recvmmsg(2) into one preallocated {@link RecvBatch}; per packet one
 * parse, two in-place rewrites with incremental checksums and one write, no allocation. Loop
 * thread only.
 *
 * <p><b>Offloads</b> (issue 15). Each rx slot holds a virtio_net_hdr at its start and the packet
 * {@link VnetHdr#SIZE} bytes in, whoever sent it: a flow that declared {@code vnet_hdr} sends both
 * (received at the slot's start; the header is validated against the packet and the flow's MTU,
 * {@link VnetHdr#parse}, a misfit dropped and counted by reason), a plain flow's packet is
 * received behind that much headroom and gets an empty header there, so nothing is copied. A bb0
 * with IFF_VNET_HDR takes header and packet in one write: a vnet_hdr flow's TCP super-packet goes
 * to the kernel whole ({@code offload.tun_out}), its partial checksum kept right through the
 * rewrite. A bb0 without it gets the packet alone: a partial checksum completed, a super-packet
 * cut into segments first ({@code offload.segmented}). A UDP flow's UDP_L4 super-packet is one
 * datagram per gso_size bytes of payload on the upgraded socket (one sendmmsg).
 */
final class FlowPath {
    /** Packets read from one flow socket per wakeup at most (the loop's budget). */
    private static final int BUDGET = 64;
    /** recvmmsg(2) batch: RX_BATCH slots of RX_SLOT bytes (a header and a 64 KiB super-packet). */
    private static final int RX_BATCH = 16;
    private static final int RX_SLOT = 65536 + 128;
    /** Where the packet starts in an rx slot: behind a virtio_net_hdr. */
    private static final int H = VnetHdr.SIZE;
    /** Datagrams of one UDP super-packet sent with one sendmmsg (the kernel's UDP_MAX_SEGMENTS). */
    private static final int DATAGRAMS = VnetHdr.UDP_MAX_SEGMENTS;
    /** The longest datagram payload the sendmmsg slots hold (a longer one is sent alone). */
    private static final int DATAGRAM_MAX = 9216;
    private static final int SEND_FLAGS = Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL;
    private static final ByteBuffer LISTEN4 = ByteBuffer.allocateDirect(4).put(0, AddressPlan.LISTEN4);
    private static final ByteBuffer LISTEN6 = ByteBuffer.allocateDirect(16).put(0, AddressPlan.LISTEN6);

    private final EventLoop loop;
    private final EventLoop.Group group;
    private final Fd tun; // this loop's TUN queue
    /** bb0 has IFF_VNET_HDR: a write carries the header. */
    private final boolean tunVnet;
    private final NatCounters counters;
    private final Lifecycle life;
    private final UdpUpgrade udp;
    private final RecvBatch rxBatch = new RecvBatch(RX_BATCH, RX_SLOT);
    private final ByteBuffer rx = rxBatch.buffer();
    /** Each rx slot's header (its start) and packet ({@link #H} in). */
    private final Pointer[] rxMsg = new Pointer[RX_BATCH];
    private final Pointer[] rxPkt = new Pointer[RX_BATCH];
    /** Where a UDP payload starts in each rx slot, behind an IPv4 or IPv6 and a UDP header. */
    private final Pointer[] rxUdp4 = new Pointer[RX_BATCH];
    private final Pointer[] rxUdp6 = new Pointer[RX_BATCH];
    /** A UDP super-packet's datagrams, sent with one sendmmsg. */
    private final SendBatch datagrams;
    /** One segment or datagram at a time (a bb0 without IFF_VNET_HDR, or longer than a slot). */
    private final ByteBuffer seg = ByteBuffer.allocateDirect(65536 + 64);
    private final Pointer segPtr = Pointer.wrap(Native.RUNTIME, seg);
    private final ByteBuffer scratch = ByteBuffer.allocateDirect(64);
    private final PacketView view = new PacketView();
    private final FlowKey key = new FlowKey();
    private final FlowKey inner = new FlowKey();
    private final TraceCopy traceCopy = new TraceCopy();

    /**
     * @param tunVnet bb0 has IFF_VNET_HDR
     * @param mtu bb0's MTU (the flows' MTU is at most that)
     */
    FlowPath(EventLoop loop, EventLoop.Group group, Fd tun, boolean tunVnet, int mtu, NatCounters counters,
            Lifecycle life, UdpUpgrade udp) {
        this.loop = loop;
        this.group = group;
        this.tun = tun;
        this.tunVnet = tunVnet;
        this.counters = counters;
        this.life = life;
        this.udp = udp;
        this.datagrams = new SendBatch(DATAGRAMS, Math.min(mtu, DATAGRAM_MAX));
        for (int i = 0; i < RX_BATCH; i++) {
            rxMsg[i] = rxBatch.pointer(i);
            rxPkt[i] = rxBatch.pointer(i).slice(H);
            rxUdp4[i] = rxBatch.pointer(i).slice(H + Ip.V4_HEADER + Ip.UDP_HEADER);
            rxUdp6[i] = rxBatch.pointer(i).slice(H + Ip.V6_HEADER + Ip.UDP_HEADER);
        }
    }

    /**
     * Registers the flow socket of {@code f} (non-blocking already) with the loop, in the NAT's
     * group (paused or not); sets {@code f.flowReg}.
     */
    void register(Flow f) throws NativeIoException {
        f.flowReg = loop.register(f.flowFd, Native.EPOLLIN | Native.EPOLLRDHUP, ev -> fromFlow(f, ev), group);
    }

    private void fromFlow(Flow f, int events) {
        for (int round = 0; round < BUDGET / RX_BATCH && f.live(); round++) {
            int got = rxBatch.receive(f.flowFd, f.vnet ? 0 : H); // a plain packet behind room for its header
            if (got < 0) {
                life.end(f, FlowEnd.ERROR, "flow socket: " + Errno.describe(-got));
                return;
            }
            for (int i = 0; i < got && f.live(); i++) {
                int len = rxBatch.length(i);
                if (len == 0) {
                    life.end(f, FlowEnd.FLOW_ENDED, "flow socket closed");
                    return;
                }
                fromFlowPacket(f, i, len);
            }
            if (got < RX_BATCH) {
                return;
            }
        }
    }

    /** The longest IP packet a segment of the flow's super-packets may be: its MTU. */
    private static int mtu(Flow f) {
        return f.mss4 + Ip.V4_HEADER + Ip.TCP_HEADER;
    }

    /**
     * One message from a flow socket, {@code n} bytes in rx slot {@code i}: a vnet_hdr flow's
     * header and packet, or a plain flow's packet (received {@link #H} bytes in).
     */
    private void fromFlowPacket(Flow f, int i, int n) {
        final int at = rxBatch.offset(i); // the header; the packet at + H
        if (!f.vnet) {
            VnetHdr.writeNone(rx, at);
        }
        if (f.trace != null && (f.vnet ? n - H : n) > 0) {
            traceCopy.copy(f.trace, rx, at + H, f.vnet ? n - H : n, TraceRing.CLIENT_IN,
                    f.vnet && VnetHdr.needsCsum(rx, at));
        }
        DropReason r = f.vnet ? VnetHdr.parse(rx, at, n, view, key, mtu(f)) : view.parse(rx, at + H, n, key);
        if (r != DropReason.NONE) {
            counters.drop(r).increment();
            return;
        }
        if (key.protocol == Ip.ICMP || key.protocol == Ip.ICMPV6) {
            if (icmpToKernel(f, i, at) && f.trace != null) {
                f.trace.copy(rx, at + H, view.length(), TraceRing.TRANSLATED_OUT);
            }
            return;
        }
        if (!f.haveKey) {
            if (key.protocol == Ip.UDP) {
                f.original.copyFrom(key);
                f.haveKey = true;
                if (!udp.start(f)) {
                    return;
                }
            } else if (key.protocol != Ip.TCP || (view.tcpFlags() & (Ip.TCP_SYN | Ip.TCP_ACK)) != Ip.TCP_SYN) {
                counters.notSyn.increment();
                return;
            } else {
                f.original.copyFrom(key);
                f.haveKey = true;
                if (!f.downgrade) {
                    f.openPort = f.natPort;
                    f.accept.set(Flow.ACCEPT_OPEN); // after the key: the control loop may accept it now
                }
            }
        } else if (!key.matches(f.original)) {
            counters.drop(DropReason.WRONG_FLOW).increment();
            return;
        }
        if (f.udp) {
            udpPayload(f, i, at);
            return;
        }
        boolean partial = VnetHdr.needsCsum(rx, at);
        int flags = view.tcpFlags();
        if ((flags & Ip.TCP_SYN) != 0 && view.clampMss(view.version() == 4 ? f.mss4 : f.mss6) && partial) {
            view.setPartialChecksum(); // the clamp updated the field as a full checksum: partial again
        }
        AddressPlan.poolAddress(view.version(), f.slot, scratch, 0);
        view.rewrite(true, scratch, 0, f.natPort, partial);
        ByteBuffer listen = view.version() == 4 ? LISTEN4 : LISTEN6;
        view.rewrite(false, listen, 0, f.downgrade ? f.innerPort : AddressPlan.LISTEN_PORT, partial);
        if (!toTun(i, at)) {
            counters.socketFull.increment();
            return;
        }
        if (f.trace != null) {
            traceCopy.copy(f.trace, rx, at + H, view.length(), TraceRing.TRANSLATED_OUT, VnetHdr.needsCsum(rx, at));
        }
        life.forwarded(f, true, flags, view.length());
    }

    /**
     * The rewritten message in rx slot {@code i} to the TUN: header and packet in one write to a
     * bb0 with IFF_VNET_HDR (a super-packet whole); else the packet alone, its checksum completed
     * if partial, a super-packet cut into segments (one write each). False if the TUN refused a
     * write.
     */
    private boolean toTun(int i, int at) {
        boolean gso = VnetHdr.isGso(rx, at);
        if (tunVnet) {
            if (Native.write(tun.get(), rxMsg[i], H + view.length()) < 0) {
                return false;
            }
            if (gso) {
                counters.offloadTunOut.increment();
            }
            return true;
        }
        if (!gso) {
            if (VnetHdr.needsCsum(rx, at)) {
                view.completeChecksum();
                VnetHdr.writeNone(rx, at); // complete now (a second completion would corrupt it)
            }
            return Native.write(tun.get(), rxPkt[i], view.length()) >= 0;
        }
        int size = VnetHdr.gsoSize(rx, at);
        int k = Gso.segments(view, size);
        counters.offloadSegmented.increment();
        for (int s = 0; s < k; s++) {
            if (Native.write(tun.get(), segPtr, Gso.segment(view, size, s, seg, 0)) < 0) {
                return false;
            }
        }
        return true;
    }

    /**
     * Userspace UDP: the headers stripped, the payload of rx slot {@code i} passed on to the
     * datagram socket; a UDP_L4 super-packet's payload as one datagram per gso_size bytes.
     */
    private void udpPayload(Flow f, int i, int at) {
        if (VnetHdr.isGso(rx, at)) {
            udpDatagrams(f, at);
        } else {
            long w = Native.send(f.udpFd, view.version() == 4 ? rxUdp4[i] : rxUdp6[i], view.payloadLength(), SEND_FLAGS);
            if (w < 0) {
                counters.socketFull.increment();
                return;
            }
        }
        FlowCopy.moved(f);
        f.packetsIn++;
        f.bytesIn += view.length();
        counters.packetsIn.increment();
        f.lastActiveNanos = System.nanoTime();
    }

    /**
     * A vnet_hdr flow's UDP super-packet (validated: UDP_L4, at most {@link VnetHdr#UDP_MAX_SEGMENTS}
     * datagrams of gso_size bytes, the last may be shorter) as its datagrams' payloads on the
     * upgraded socket, with one sendmmsg(2) (or one send each when a payload is longer than a
     * slot). Datagrams the socket does not take are dropped and counted.
     */
    private void udpDatagrams(Flow f, int at) {
        int size = VnetHdr.gsoSize(rx, at);
        int payload = view.payloadLength();
        int k = Gso.segments(view, size);
        int from = view.payloadOffset();
        counters.offloadSegmented.increment();
        if (k > datagrams.count() || size > datagrams.slotSize()) {
            for (int s = 0; s < k; s++) {
                int len = Math.min(size, payload - s * size);
                seg.put(0, rx, from + s * size, len);
                if (Native.send(f.udpFd, segPtr, len, SEND_FLAGS) < 0) {
                    counters.socketFull.add(k - s);
                    return;
                }
            }
            return;
        }
        ByteBuffer b = datagrams.buffer();
        for (int s = 0; s < k; s++) {
            int len = Math.min(size, payload - s * size);
            b.put(datagrams.offset(s), rx, from + s * size, len);
            datagrams.length(s, len);
        }
        int sent = datagrams.send(f.udpFd, k);
        if (sent < k) {
            counters.socketFull.add(k - Math.max(sent, 0));
        }
    }

    /**
     * An ICMP error from the flow's side about a packet the kernel sent (e.g. "fragmentation
     * needed" from a smaller path): translated into the namespace, outer and inner header, so the
     * kernel's TCP adjusts its path MTU. Anything else ICMP on a flow is dropped and counted.
     */
    private boolean icmpToKernel(Flow f, int i, int at) {
        if (!f.haveKey || f.udp || !IcmpError.is(view, rx) || !IcmpError.innerKey(view, rx, inner)
                || !inner.isReverseOf(f.original)) {
            counters.icmpNotForFlow.increment();
            return false;
        }
        int v = view.version();
        ByteBuffer listen = v == 4 ? LISTEN4 : LISTEN6;
        AddressPlan.poolAddress(v, f.slot, scratch, 0);
        IcmpError.rewriteInner(view, rx, true, listen, 0, f.downgrade ? f.innerPort : AddressPlan.LISTEN_PORT);
        IcmpError.rewriteInner(view, rx, false, scratch, 0, f.natPort);
        view.setAddress(true, scratch, 0);
        view.setAddress(false, listen, 0);
        IcmpError.fixOuter(view);
        VnetHdr.writeNone(rx, at); // (a vnet_hdr flow's ICMP has neither GSO nor NEEDS_CSUM: validated)
        long w = tunVnet ? Native.write(tun.get(), rxMsg[i], H + view.length())
                : Native.write(tun.get(), rxPkt[i], view.length());
        if (w < 0) {
            counters.socketFull.increment();
            return false;
        }
        counters.icmpToKernel.increment();
        return true;
    }
}
