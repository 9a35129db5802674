package warren.bumblebee.nat;

import java.nio.ByteBuffer;
import jnr.ffi.Pointer;
import warren.fdpass.Fd;
import warren.daemon.loop.EventLoop;
import warren.daemon.trace.TraceRing;
import warren.fdpass.RecvBatch;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.IcmpError;
import warren.packet.Ip;
import warren.packet.PacketView;

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
 */
final class FlowPath {
    /** Packets read from one flow socket per wakeup at most (the loop's budget). */
    private static final int BUDGET = 64;
    /** recvmmsg(2) batch: RX_BATCH slots of RX_SLOT bytes. */
    private static final int RX_BATCH = 16;
    private static final int RX_SLOT = 65536 + 128;
    private static final ByteBuffer LISTEN4 = ByteBuffer.allocateDirect(4).put(0, AddressPlan.LISTEN4);
    private static final ByteBuffer LISTEN6 = ByteBuffer.allocateDirect(16).put(0, AddressPlan.LISTEN6);

    private final EventLoop loop;
    private final EventLoop.Group group;
    private final Fd tun; // this loop's TUN queue
    private final NatCounters counters;
    private final Lifecycle life;
    private final UdpUpgrade udp;
    private final RecvBatch rxBatch = new RecvBatch(RX_BATCH, RX_SLOT);
    private final ByteBuffer rx = rxBatch.buffer();
    /** Where a UDP payload starts in each rx slot, behind an IPv4 or IPv6 and a UDP header. */
    private final Pointer[] rxUdp4 = new Pointer[RX_BATCH];
    private final Pointer[] rxUdp6 = new Pointer[RX_BATCH];
    private final ByteBuffer scratch = ByteBuffer.allocateDirect(64);
    private final PacketView view = new PacketView();
    private final FlowKey key = new FlowKey();
    private final FlowKey inner = new FlowKey();

    FlowPath(EventLoop loop, EventLoop.Group group, Fd tun, NatCounters counters, Lifecycle life, UdpUpgrade udp) {
        this.loop = loop;
        this.group = group;
        this.tun = tun;
        this.counters = counters;
        this.life = life;
        this.udp = udp;
        for (int i = 0; i < RX_BATCH; i++) {
            rxUdp4[i] = rxBatch.pointer(i).slice(Ip.V4_HEADER + Ip.UDP_HEADER);
            rxUdp6[i] = rxBatch.pointer(i).slice(Ip.V6_HEADER + Ip.UDP_HEADER);
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
            int got = rxBatch.receive(f.flowFd);
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

    /** One packet from a flow socket, in rx slot {@code i}. */
    private void fromFlowPacket(Flow f, int i, int n) {
        final int at = rxBatch.offset(i);
        final Pointer ptr = rxBatch.pointer(i);
        if (f.trace != null) {
            f.trace.copy(rx, at, n, TraceRing.CLIENT_IN);
        }
        DropReason r = view.parse(rx, at, n, key);
        if (r != DropReason.NONE) {
            counters.drop(r).increment();
            return;
        }
        if (key.protocol == Ip.ICMP || key.protocol == Ip.ICMPV6) {
            if (icmpToKernel(f, ptr) && f.trace != null) {
                f.trace.copy(rx, at, view.length(), TraceRing.TRANSLATED_OUT);
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
            udpPayload(f, i);
            return;
        }
        int flags = view.tcpFlags();
        if ((flags & Ip.TCP_SYN) != 0) {
            view.clampMss(view.version() == 4 ? f.mss4 : f.mss6);
        }
        AddressPlan.poolAddress(view.version(), f.slot, scratch, 0);
        view.rewrite(true, scratch, 0, f.natPort);
        ByteBuffer listen = view.version() == 4 ? LISTEN4 : LISTEN6;
        view.rewrite(false, listen, 0, f.downgrade ? f.innerPort : AddressPlan.LISTEN_PORT);
        if (Native.write(tun.get(), ptr, view.length()) < 0) {
            counters.socketFull.increment();
            return;
        }
        if (f.trace != null) {
            f.trace.copy(rx, at, view.length(), TraceRing.TRANSLATED_OUT);
        }
        life.forwarded(f, true, flags, view.length());
    }

    /** Userspace UDP: the headers stripped, the payload of rx slot {@code i} passed on to the datagram socket. */
    private void udpPayload(Flow f, int i) {
        long w = Native.send(f.udpFd, view.version() == 4 ? rxUdp4[i] : rxUdp6[i], view.payloadLength(),
                Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL);
        if (w < 0) {
            counters.socketFull.increment();
            return;
        }
        f.packetsIn++;
        f.bytesIn += view.length();
        counters.packetsIn.increment();
        f.lastActiveNanos = System.nanoTime();
    }

    /**
     * An ICMP error from the flow's side about a packet the kernel sent (e.g. "fragmentation
     * needed" from a smaller path): translated into the namespace, outer and inner header, so the
     * kernel's TCP adjusts its path MTU. Anything else ICMP on a flow is dropped and counted.
     */
    private boolean icmpToKernel(Flow f, Pointer ptr) {
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
        if (Native.write(tun.get(), ptr, view.length()) < 0) {
            counters.socketFull.increment();
            return false;
        }
        counters.icmpToKernel.increment();
        return true;
    }
}
