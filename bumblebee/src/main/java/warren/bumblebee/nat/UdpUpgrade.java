package warren.bumblebee.nat;

import java.nio.ByteBuffer;
import java.util.List;
import jnr.ffi.Pointer;
import warren.control.v1.Response;
import warren.control.v1.Upgraded;
import warren.daemon.loop.EventLoop;
import warren.daemon.trace.TraceRing;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.packet.Checksum;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.Ip;
import warren.packet.PacketView;
import warren.packet.VnetHdr;

/**
 * UDP upgrades, in userspace: a flow whose first packet is UDP is answered at once with one end of
 * an AF_UNIX datagram socketpair; the flow path strips the headers of the flow's packets and
 * sends their payloads there, and payloads coming back are framed here into UDP packets of the
 * reversed 5-tuple and sent to the flow. Nothing of a UDP flow reaches the namespace's kernel.
 *
 * <p>Per datagram: one recv into a preallocated direct buffer behind room for either header, the
 * headers written in front, one send; no allocation. Loop thread only.
 *
 * <p>A flow that declared {@code vnet_hdr} gets each datagram behind an empty virtio_net_hdr
 * (gso_type NONE, flags 0: the checksum is complete), written in front of the IP header; what it
 * sends is {@link FlowPath}'s (a UDP_L4 super-packet becomes one datagram per gso_size bytes).
 */
final class UdpUpgrade {
    /** Datagrams read per wakeup at most (the loop's budget). */
    private static final int BUDGET = 64;
    private static final int BUF = 65536 + 64;
    /** Room for a virtio_net_hdr in front of the IP header (a vnet_hdr flow's). */
    private static final int H = VnetHdr.SIZE;
    /** Payloads are received at offset 58 so a virtio_net_hdr and either IP header fit in front of them. */
    private static final int UDP_PAYLOAD = H + Ip.V6_HEADER + Ip.UDP_HEADER;
    private static final int V4_START = UDP_PAYLOAD - Ip.V4_HEADER - Ip.UDP_HEADER;
    private static final int V6_START = H;

    private final EventLoop loop;
    private final EventLoop.Group group;
    private final NatCounters counters;
    private final Lifecycle life;
    private final FlowStore store;
    private final ByteBuffer buf = ByteBuffer.allocateDirect(BUF);
    private final Pointer bufPtr = Pointer.wrap(Native.RUNTIME, buf);
    private final Pointer payloadPtr = bufPtr.slice(UDP_PAYLOAD);
    private final Pointer v4PacketPtr = bufPtr.slice(V4_START);
    private final Pointer v6PacketPtr = bufPtr.slice(V6_START);
    /** The same behind a header (a vnet_hdr flow's message). */
    private final Pointer v4MessagePtr = bufPtr.slice(V4_START - H);
    private final Pointer v6MessagePtr = bufPtr.slice(V6_START - H);
    private final PacketView view = new PacketView();
    private final FlowKey key = new FlowKey();

    UdpUpgrade(EventLoop loop, EventLoop.Group group, NatCounters counters, Lifecycle life, FlowStore store) {
        this.loop = loop;
        this.group = group;
        this.counters = counters;
        this.life = life;
        this.store = store;
    }

    /**
     * A UDP flow: a datagram socketpair whose other end goes out in Upgraded; payloads cross it,
     * headers are stripped and added here. False if the flow had to end.
     */
    boolean start(Flow f) {
        int[] sv = null;
        try {
            sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_DGRAM | Native.SOCK_CLOEXEC);
            f.udpFd = sv[0]; // the flow's from here: closed when it ends
            Native.fcntl(sv[0], Native.F_SETFL, Native.O_NONBLOCK);
            register(f);
        } catch (NativeIoException e) {
            if (sv != null) {
                Native.close(sv[1]);
            }
            life.end(f, FlowEnd.ERROR, "cannot make the datagram socket: " + e.getMessage());
            return false;
        }
        f.udp = true;
        life.activate(f, counters.upgradeLatencyUdp);
        counters.upgradesUdp.increment();
        f.call.answerKeepingTask(Response.newBuilder().setUpgraded(Upgraded.newBuilder().setFdSocket(0)
                .setOriginal(Tuples.tuple(f.original))), List.of(Fd.adopt(sv[1])));
        store.store(f);
        return true;
    }

    /** Registers the datagram socket of {@code f} with the loop, in the NAT's group; sets {@code f.udpReg}. */
    void register(Flow f) throws NativeIoException {
        f.udpReg = loop.register(f.udpFd, Native.EPOLLIN, ev -> fromUdpSocket(f), group);
    }

    /** Payloads from the upgraded datagram socket become UDP packets on the flow (reversed tuple). */
    private void fromUdpSocket(Flow f) {
        FlowKey o = f.original;
        boolean v4 = o.version == 4;
        int start = v4 ? V4_START : V6_START;
        int hdr = v4 ? Ip.V4_HEADER : Ip.V6_HEADER;
        for (int i = 0; i < BUDGET && f.state == Flow.ACTIVE; i++) {
            long n = Native.recv(f.udpFd, payloadPtr, BUF - UDP_PAYLOAD - 64, Native.MSG_DONTWAIT);
            if (n < 0) {
                return;
            }
            int total = hdr + Ip.UDP_HEADER + (int) n;
            frame(o, v4, start, total, n);
            if (view.parse(buf, start, total, key) != DropReason.NONE) {
                counters.socketFull.increment(); // cannot happen for a payload we framed ourselves
                continue;
            }
            view.fixChecksums();
            long w;
            if (f.vnet) {
                VnetHdr.writeNone(buf, start - H);
                w = Native.send(f.flowFd, v4 ? v4MessagePtr : v6MessagePtr, H + total, Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL);
            } else {
                w = Native.send(f.flowFd, v4 ? v4PacketPtr : v6PacketPtr, total, Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL);
            }
            if (w < 0) {
                counters.socketFull.increment();
                continue;
            }
            if (f.trace != null) {
                f.trace.copy(buf, start, total, TraceRing.CLIENT_OUT);
            }
            FlowCopy.moved(f);
            f.packetsOut++;
            f.bytesOut += total;
            counters.packetsOut.increment();
            f.lastActiveNanos = System.nanoTime();
        }
    }

    /** Writes the IP and UDP headers of a payload of {@code n} bytes from {@code o}'s destination to its source. */
    private void frame(FlowKey o, boolean v4, int start, int total, long n) {
        for (int k = start; k < UDP_PAYLOAD; k++) {
            buf.put(k, (byte) 0);
        }
        if (v4) {
            buf.put(start, (byte) 0x45).putShort(start + Ip.V4_TOTAL_LENGTH, (short) total)
                    .putShort(start + Ip.V4_FRAG, (short) 0x4000).put(start + Ip.V4_TTL, (byte) 64)
                    .put(start + Ip.V4_PROTOCOL, (byte) Ip.UDP);
            buf.put(start + Ip.V4_SRC, o.dst, 0, 4).put(start + Ip.V4_DST, o.src, 0, 4);
            buf.putShort(start + Ip.V4_CHECKSUM, (short) Checksum.finish(Checksum.sum(buf, start, Ip.V4_HEADER)));
        } else {
            buf.put(start, (byte) 0x60).putShort(start + Ip.V6_PAYLOAD_LENGTH, (short) (Ip.UDP_HEADER + n))
                    .put(start + Ip.V6_NEXT_HEADER, (byte) Ip.UDP).put(start + Ip.V6_HOP_LIMIT, (byte) 64);
            buf.put(start + Ip.V6_SRC, o.dst, 0, 16).put(start + Ip.V6_DST, o.src, 0, 16);
        }
        int u = start + hdr(v4);
        buf.putShort(u, (short) o.dstPort).putShort(u + 2, (short) o.srcPort)
                .putShort(u + Ip.UDP_LENGTH, (short) (Ip.UDP_HEADER + n));
    }

    private static int hdr(boolean v4) {
        return v4 ? Ip.V4_HEADER : Ip.V6_HEADER;
    }
}
