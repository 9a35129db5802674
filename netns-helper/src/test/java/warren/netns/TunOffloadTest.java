package warren.netns;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.util.HexFormat;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import warren.fdpass.Fd;
import warren.fdpass.RecvBatch;
import warren.fdpass.SendBatch;
import warren.fdpass.libc.Native;
import warren.linux.net.Netns;
import warren.linux.net.Rtnetlink;
import warren.linux.net.Tun;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;
import warren.packet.Checksum;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.Gso;
import warren.packet.Ip;
import warren.packet.PacketView;
import warren.packet.VnetHdr;

/**
 * TUN offloads on the real kernel, in a private namespace: a TUN {@code wvnet0} opened with
 * IFF_VNET_HDR and offloads CSUM|TSO4|TSO6|TSO_ECN|USO4|USO6, 198.18.210.1/24 and fd00:210::1/64,
 * with 198.18.211.0/24 and fd00:211::/64 routed through it.
 *
 * <ul>
 *   <li>A UDP socket with UDP_SEGMENT 1000 sending 8,000 bytes through the TUN: one read gives one
 *       UDP_L4 super-packet whose checksum field is the pseudo-header sum over the whole
 *       super-packet's length; {@link Gso} cuts it into 8 valid datagrams, sent and received
 *       through {@link SendBatch}/{@link RecvBatch}.</li>
 *   <li>A UDP_L4 super-packet written into the TUN reaches a socket in the namespace as 8
 *       datagrams with the right payloads.</li>
 *   <li>With forwarding on and a second, plain TUN {@code wplain0} (no offloads) as the route to
 *       198.18.213.0/24 and fd00:213::/64, TCPv4, TCPv6, UDPv4 and UDPv6 super-packets written into
 *       {@code wvnet0} come out of {@code wplain0} segmented by the kernel: byte for byte what
 *       {@link Gso} makes of them (after the forwarding hop's TTL decrement). This pins down the
 *       partial checksum convention and the per-segment rules against the kernel itself.</li>
 *   <li>A kernel TCP connection through the TUN, whose handshake the test answers, sends a
 *       TCPV4 super-packet; {@link Gso} cuts it into valid segments.</li>
 *   <li>The device, not the fd, has the IFF_VNET_HDR format: a queue asking for the other format
 *       is refused, and {@link Tun#flags} tells an inheritor which one the device has.</li>
 * </ul>
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class TunOffloadTest {
    private static final String VNET = "wvnet0";
    private static final String PLAIN = "wplain0";
    private static final int SOL_UDP = 17;
    private static final int UDP_SEGMENT = 103;

    /** The namespace with its TUNs; reads into a direct buffer the packet classes look at. */
    private static final class Rig implements AutoCloseable {
        final String path;
        final Fd vnet;
        Fd plain;
        final int offloads;
        final ByteBuffer in = ByteBuffer.allocateDirect(VnetHdr.MAX_MESSAGE);
        final Pointer inPtr = Pointer.wrap(Native.RUNTIME, in);
        final ByteBuffer out = ByteBuffer.allocateDirect(VnetHdr.MAX_MESSAGE);
        final Pointer outPtr = Pointer.wrap(Native.RUNTIME, out);
        final PacketView view = new PacketView();
        final FlowKey key = new FlowKey();

        Rig(TestNetwork net, boolean forwarding) throws Exception {
            TestNetwork.Namespace ns = net.namespace("offload");
            path = "/run/netns/" + ns.name;
            if (forwarding) {
                ns.exec("sysctl", "-qw", "net.ipv4.ip_forward=1");
                ns.exec("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1");
            }
            int[] off = new int[1];
            vnet = Netns.call(path, () -> {
                Fd fd = Tun.open(VNET, false, true);
                try {
                    Tun.enableVnetHdr(fd);
                    off[0] = Tun.setOffload(fd, Tun.OFFLOADS_ALL);
                    configure(VNET, "198.18.210.1", "fd00:210::1", "198.18.211.0", "fd00:211::");
                    return fd;
                } catch (Exception | Error e) {
                    fd.close();
                    throw e;
                }
            });
            offloads = off[0];
            if (forwarding) {
                plain = Netns.call(path, () -> {
                    Fd fd = Tun.open(PLAIN, false);
                    try {
                        configure(PLAIN, "198.18.212.1", "fd00:212::1", "198.18.213.0", "fd00:213::");
                        return fd;
                    } catch (Exception | Error e) {
                        fd.close();
                        throw e;
                    }
                });
            }
        }

        private static void configure(String dev, String v4, String v6, String route4, String route6) throws Exception {
            int index = Tun.index(dev);
            try (Rtnetlink rt = new Rtnetlink()) {
                rt.addrGenModeNone(index); // no link-local address: no router solicitations to skip
                rt.linkUp(index, 1500);
                rt.addAddress(index, InetAddress.getByName(v4), 24);
                rt.addAddress(index, InetAddress.getByName(v6), 64);
                rt.addRoute(InetAddress.getByName(route4), 24, index);
                rt.addRoute(InetAddress.getByName(route6), 64, index);
            }
        }

        /** Reads one message from {@code tun} into {@link #in}: its length. */
        int read(Fd tun) throws Exception {
            assertTrue((Native.pollOne(tun.get(), Native.POLLIN, 5000) & Native.POLLIN) != 0, "a packet on the TUN");
            return (int) Native.ioResult("read", Native.read(tun.get(), inPtr, in.capacity()));
        }

        /** Reads from the vnet TUN until a valid message of {@code protocol} to {@code port}; parsed into view/key. */
        int readVnet(int protocol, int dstPort) throws Exception {
            for (int tries = 0; tries < 50; tries++) {
                int n = read(vnet);
                if (VnetHdr.parse(in, 0, n, view, key, 65535) == DropReason.NONE && key.protocol == protocol
                        && key.dstPort == dstPort) {
                    return n;
                }
            }
            throw new AssertionError("no " + protocol + " packet to port " + dstPort);
        }

        void write(Fd tun, ByteBuffer b, Pointer p, int len) throws Exception {
            assertEquals(len, Native.ioResult("write", Native.write(tun.get(), p, len)));
        }

        @Override
        public void close() {
            vnet.close();
            if (plain != null) {
                plain.close();
            }
        }
    }

    @Test
    void aUdpGsoSendComesOutOfTheTunAsOneSuperPacketAndGsoCutsItIntoDatagrams(TestNetwork net) throws Exception {
        try (Rig rig = new Rig(net, false)) {
            assumeUso(rig);
            Fd udp = Netns.call(rig.path, () -> Fd.adopt(Native.socket(Native.AF_INET, Native.SOCK_DGRAM | Native.SOCK_CLOEXEC, 0)));
            try (udp) {
                Native.setsockoptInt(udp.get(), SOL_UDP, UDP_SEGMENT, 1000);
                ByteBuffer data = ByteBuffer.allocateDirect(8000);
                for (int k = 0; k < 8000; k++) {
                    data.put(k, (byte) (k * 7 + (k >>> 8)));
                }
                byte[] sa = Native.sockaddr(new InetSocketAddress(InetAddress.getByName("198.18.211.7"), 9999));
                Pointer saPtr = Native.allocate(sa.length);
                saPtr.put(0, sa, 0, sa.length);
                assertEquals(8000, Native.ioResult("sendto",
                        Native.sendto(udp.get(), Pointer.wrap(Native.RUNTIME, data), 8000, 0, saPtr, sa.length)));
                int n = rig.readVnet(Ip.UDP, 9999);
                ByteBuffer in = rig.in;
                assertEquals(VnetHdr.SIZE + 20 + 8 + 8000, n, "one read, the whole 8,000 bytes");
                assertEquals(VnetHdr.F_NEEDS_CSUM, VnetHdr.flags(in, 0));
                assertEquals(VnetHdr.GSO_UDP_L4, VnetHdr.gsoType(in, 0));
                assertEquals(1000, VnetHdr.gsoSize(in, 0));
                assertEquals(20, VnetHdr.csumStart(in, 0));
                assertEquals(6, VnetHdr.csumOffset(in, 0));
                assertEquals(DropReason.NONE, VnetHdr.validate(in, 0, rig.view, 1500));
                assertEquals(rig.view.pseudoHeaderChecksum(), rig.view.storedL4Checksum(),
                        "the kernel's partial checksum: the pseudo-header over the whole super-packet's UDP length");

                int segments = Gso.segments(rig.view, 1000);
                assertEquals(8, segments);
                SendBatch batch = new SendBatch(8, 1500);
                for (int i = 0; i < segments; i++) {
                    batch.length(i, Gso.segment(rig.view, 1000, i, batch.buffer(), batch.offset(i)));
                }
                int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
                try (Fd a = Fd.adopt(sv[0]); Fd b = Fd.adopt(sv[1])) {
                    assertEquals(8, batch.send(a.get(), 8), "one sendmmsg for the 8 datagrams");
                    RecvBatch got = new RecvBatch(8, 1500);
                    assertEquals(8, got.receive(b.get()));
                    PacketView seg = new PacketView();
                    FlowKey segKey = new FlowKey();
                    for (int i = 0; i < 8; i++) {
                        assertEquals(20 + 8 + 1000, got.length(i));
                        assertEquals(DropReason.NONE, seg.parse(got.buffer(), got.offset(i), got.length(i), segKey));
                        assertTrue(segKey.matches(rig.key));
                        assertTrue(seg.ipChecksumOk());
                        assertEquals(seg.computeL4Checksum(), seg.storedL4Checksum(), "UDP checksum of datagram " + i);
                        for (int k = 0; k < 1000; k++) {
                            assertEquals(data.get(i * 1000 + k), got.buffer().get(seg.payloadOffset() + k));
                        }
                    }
                }
            }
        }
    }

    @Test
    void aUdpSuperPacketWrittenIntoTheTunReachesASocketAsDatagrams(TestNetwork net) throws Exception {
        try (Rig rig = new Rig(net, false);
                DatagramSocket s = Netns.call(rig.path,
                        () -> new DatagramSocket(new InetSocketAddress(InetAddress.getByName("198.18.210.1"), 0)))) {
            s.setSoTimeout(5000);
            int len = superPacket(rig.out, 4, Ip.UDP, "198.18.211.7", "198.18.210.1", 5555, s.getLocalPort(), 8000, 1000,
                    0, rig.view, rig.key);
            rig.write(rig.vnet, rig.out, rig.outPtr, len);
            for (int i = 0; i < 8; i++) {
                DatagramPacket p = new DatagramPacket(new byte[2000], 2000);
                s.receive(p);
                assertEquals(1000, p.getLength(), "datagram " + i);
                assertEquals(InetAddress.getByName("198.18.211.7"), p.getAddress());
                assertEquals(5555, p.getPort());
                for (int k = 0; k < 1000; k++) {
                    assertEquals(payloadByte(i * 1000 + k), p.getData()[k], "byte " + k + " of datagram " + i);
                }
            }
        }
    }

    @Test
    void theKernelSegmentsForwardedSuperPacketsExactlyAsGsoDoes(TestNetwork net) throws Exception {
        try (Rig rig = new Rig(net, true)) {
            int tcpFlags = Ip.TCP_ACK | 0x08 /* PSH */ | Ip.TCP_FIN | 0x80 /* CWR */;
            // IPv4: 20 + 20 + 1460 = 1500; IPv6: 40 + 20 + 1440 = 1500; the last segment short
            kernelAgrees(rig, 4, Ip.TCP, "198.18.211.7", "198.18.213.9", 20_000, 1460, tcpFlags);
            kernelAgrees(rig, 6, Ip.TCP, "fd00:211::7", "fd00:213::9", 20_000, 1440, tcpFlags);
            if ((rig.offloads & Tun.TUN_F_USO4) != 0) { // a kernel with USO also takes UDP_L4 from a writer
                kernelAgrees(rig, 4, Ip.UDP, "198.18.211.7", "198.18.213.9", 8_500, 1000, 0);
                kernelAgrees(rig, 6, Ip.UDP, "fd00:211::7", "fd00:213::9", 8_500, 1000, 0);
            }
        }
    }

    private static void kernelAgrees(Rig rig, int version, int protocol, String src, String dst, int payload, int gso,
            int tcpFlags) throws Exception {
        PacketView view = new PacketView();
        FlowKey key = new FlowKey();
        int len = superPacket(rig.out, version, protocol, src, dst, 40000, 80, payload, gso, tcpFlags, view, key);
        assertEquals(DropReason.NONE, VnetHdr.validate(rig.out, 0, view, 1500));
        rig.write(rig.vnet, rig.out, rig.outPtr, len);
        int segments = Gso.segments(view, gso);
        ByteBuffer mine = ByteBuffer.allocateDirect(1500);
        PacketView kernelView = new PacketView();
        FlowKey kernelKey = new FlowKey();
        for (int i = 0; i < segments; i++) {
            int n = 0;
            for (int tries = 0; tries < 20; tries++) { // skip anything else (there should be nothing)
                n = rig.read(rig.plain);
                if (kernelView.parse(rig.in, 0, n, kernelKey) == DropReason.NONE && kernelKey.matches(key)) {
                    break;
                }
            }
            int l = Gso.segment(view, gso, i, mine, 0);
            forwardHop(mine, version);
            byte[] want = new byte[l];
            mine.get(0, want);
            byte[] got = new byte[n];
            rig.in.get(0, got);
            String what = (version == 4 ? "IPv4 " : "IPv6 ") + (protocol == Ip.TCP ? "TCP" : "UDP") + " segment " + i + "/"
                    + segments;
            if (!java.util.Arrays.equals(want, got)) {
                int d = java.util.Arrays.mismatch(want, got);
                HexFormat hex = HexFormat.of();
                int from = Math.max(0, d - 8);
                throw new AssertionError(what + " differs at byte " + d + ": ours "
                        + hex.formatHex(want, from, Math.min(want.length, d + 8)) + ", the kernel's "
                        + hex.formatHex(got, from, Math.min(got.length, d + 8)));
            }
            assertTrue(kernelView.ipChecksumOk());
            assertEquals(kernelView.computeL4Checksum(), kernelView.storedL4Checksum(), what);
        }
    }

    /** What forwarding does to a packet: TTL / hop limit - 1 (and the IPv4 header checksum again). */
    private static void forwardHop(ByteBuffer b, int version) {
        if (version == 4) {
            b.put(Ip.V4_TTL, (byte) (b.get(Ip.V4_TTL) - 1));
            b.putShort(Ip.V4_CHECKSUM, (short) 0);
            b.putShort(Ip.V4_CHECKSUM, (short) Checksum.finish(Checksum.sum(b, 0, Ip.V4_HEADER)));
        } else {
            b.put(Ip.V6_HOP_LIMIT, (byte) (b.get(Ip.V6_HOP_LIMIT) - 1));
        }
    }

    @Test
    void aKernelTcpConnectionThroughTheTunSendsTcpSuperPackets(TestNetwork net) throws Exception {
        try (Rig rig = new Rig(net, false);
                SocketChannel client = Netns.call(rig.path, () -> {
                    SocketChannel c = SocketChannel.open();
                    c.configureBlocking(false);
                    c.connect(new InetSocketAddress(InetAddress.getByName("198.18.211.7"), 80));
                    return c;
                })) {
            rig.readVnet(Ip.TCP, 80); // the SYN
            int port = rig.key.srcPort; // a connecting channel does not know its local address yet
            assertEquals(Ip.TCP_SYN, rig.view.tcpFlags() & (Ip.TCP_SYN | Ip.TCP_ACK));
            int clientSeq = rig.in.getInt(rig.view.l4Offset() + 4);
            // SYN-ACK from 198.18.211.7:80: MSS 1460, window scale 7, a window of 65535 << 7
            ByteBuffer o = rig.out;
            int p = VnetHdr.SIZE;
            for (int k = 0; k < 48; k++) {
                o.put(p + k, (byte) 0);
            }
            o.put(p, (byte) 0x45).putShort(p + 2, (short) 48).put(p + 6, (byte) 0x40).put(p + 8, (byte) 64)
                    .put(p + 9, (byte) Ip.TCP);
            o.put(p + 12, InetAddress.getByName("198.18.211.7").getAddress());
            o.put(p + 16, InetAddress.getByName("198.18.210.1").getAddress());
            int t = p + 20;
            o.putShort(t, (short) 80).putShort(t + 2, (short) port).putInt(t + 4, 1_000_000).putInt(t + 8, clientSeq + 1);
            o.put(t + 12, (byte) 0x70).put(t + 13, (byte) (Ip.TCP_SYN | Ip.TCP_ACK)).putShort(t + 14, (short) 65535);
            o.put(t + 20, (byte) 2).put(t + 21, (byte) 4).putShort(t + 22, (short) 1460); // MSS
            o.put(t + 24, (byte) 1).put(t + 25, (byte) 3).put(t + 26, (byte) 3).put(t + 27, (byte) 7); // NOP, WS 7
            o.putShort(p + 10, (short) Checksum.finish(Checksum.sum(o, p, 20)));
            PacketView v = new PacketView();
            assertEquals(DropReason.NONE, v.parse(o, p, 48, new FlowKey()));
            v.fixChecksums();
            VnetHdr.writeNone(o, 0);
            rig.write(rig.vnet, o, rig.outPtr, VnetHdr.SIZE + 48);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
            while (!client.finishConnect()) {
                assertTrue(System.nanoTime() < deadline, "the handshake completes");
                Thread.onSpinWait();
            }
            ByteBuffer data = ByteBuffer.allocate(256 * 1024);
            for (int k = 0; k < data.capacity(); k++) {
                data.put(k, (byte) (k * 11));
            }
            client.write(data);
            for (int tries = 0; tries < 50; tries++) {
                rig.readVnet(Ip.TCP, 80);
                if (VnetHdr.isGso(rig.in, 0)) {
                    break;
                }
            }
            ByteBuffer in = rig.in;
            assertEquals(VnetHdr.GSO_TCPV4, VnetHdr.gsoType(in, 0) & ~VnetHdr.GSO_ECN, "a TSO super-packet");
            assertEquals(VnetHdr.F_NEEDS_CSUM, VnetHdr.flags(in, 0));
            int gso = VnetHdr.gsoSize(in, 0);
            assertTrue(gso > 0 && gso <= 1460, "gso_size " + gso);
            assertTrue(rig.view.payloadLength() > gso, "more than one segment: " + rig.view.payloadLength());
            assertEquals(DropReason.NONE, VnetHdr.validate(in, 0, rig.view, 1500));
            assertEquals(rig.view.pseudoHeaderChecksum(), rig.view.storedL4Checksum(),
                    "the kernel's partial TCP checksum: the pseudo-header over the whole super-packet's length");
            int firstSeq = in.getInt(rig.view.l4Offset() + 4);
            int payloadAt = rig.view.payloadOffset();
            ByteBuffer seg = ByteBuffer.allocateDirect(1500);
            PacketView sv = new PacketView();
            FlowKey sk = new FlowKey();
            int n = Gso.segments(rig.view, gso);
            for (int i = 0; i < n; i++) {
                int l = Gso.segment(rig.view, gso, i, seg, 0);
                assertTrue(l <= 1500);
                assertEquals(DropReason.NONE, sv.parse(seg, 0, l, sk));
                assertTrue(sv.ipChecksumOk());
                assertEquals(sv.computeL4Checksum(), sv.storedL4Checksum(), "TCP checksum of segment " + i);
                assertEquals(firstSeq + i * gso, seg.getInt(sv.l4Offset() + 4));
                for (int k = 0; k < sv.payloadLength(); k++) {
                    assertEquals(in.get(payloadAt + i * gso + k), seg.get(sv.payloadOffset() + k));
                }
            }
            System.out.printf("kernel TCP through the TUN: a %d-byte TCPV4 super-packet, gso_size %d, %d segments%n",
                    rig.view.length(), gso, n);
        }
    }

    @Test
    void theDeviceNotTheQueueHasTheVnetFormat(TestNetwork net) throws Exception {
        TestNetwork.Namespace ns = net.namespace("flags");
        String path = "/run/netns/" + ns.name;
        Netns.call(path, () -> {
            Fd[] plain = Tun.openQueues("wmq0", 2, false, false);
            try {
                assertEquals(0, Tun.flags(plain[0]) & Tun.IFF_VNET_HDR);
                assertTrue((Tun.flags(plain[0]) & Tun.IFF_MULTI_QUEUE) != 0);
                IllegalStateException e = assertThrows(IllegalStateException.class, () -> Tun.openQueue("wmq0", false, true));
                assertTrue(e.getMessage().contains("not in IFF_VNET_HDR format"), e.getMessage());
                assertEquals(0, Tun.flags(plain[1]) & Tun.IFF_VNET_HDR, "the device kept the format of its queues");
                Fd third = Tun.openQueue("wmq0", false); // the unchecked overload still attaches, in the device's format
                assertEquals(0, Tun.flags(third) & Tun.IFF_VNET_HDR);
                third.close();
                assertThrows(IllegalStateException.class, () -> Tun.setOffload(plain[0], Tun.TUN_F_CSUM),
                        "no offloads for readers without headers");
                assertEquals(0, Tun.setOffload(plain[0], 0));
            } finally {
                Tun.shrinkQueues(plain, 0);
            }
            Fd[] vnet = Tun.openQueues("wmq1", 2, false, true);
            try {
                assertTrue(Tun.hasVnetHdr(vnet[1]));
                assertThrows(IllegalStateException.class, () -> Tun.growQueues("wmq1", vnet, 3, false, false));
                Fd[] grown = Tun.growQueues("wmq1", vnet, 3, false, Tun.hasVnetHdr(vnet[0]));
                assertTrue(Tun.hasVnetHdr(grown[2]));
                Tun.shrinkQueues(grown, 2);
                Tun.enableVnetHdr(vnet[0]);
                assertEquals(Tun.OFFLOADS_ALL & ~(Tun.TUN_F_USO4 | Tun.TUN_F_USO6),
                        Tun.setOffload(vnet[1], Tun.OFFLOADS_ALL) & ~(Tun.TUN_F_USO4 | Tun.TUN_F_USO6));
                assertEquals(0, Tun.setOffload(vnet[0], 0));
            } finally {
                Tun.shrinkQueues(vnet, 0);
            }
            return null;
        });
    }

    private static void assumeUso(Rig rig) {
        Assumptions.assumeTrue((rig.offloads & Tun.TUN_F_USO4) != 0, "the kernel has no USO for TUN (before 6.2)");
    }

    static byte payloadByte(int k) {
        return (byte) (k * 31 + (k >>> 8));
    }

    /**
     * Writes a virtio_net_hdr (NEEDS_CSUM, GSO of gsoSize) and a TCP (no options, seq 0x7FFFF000)
     * or UDP super-packet with {@code payload} bytes of {@link #payloadByte} into {@code b} at 0,
     * its checksum field the pseudo-header sum (CHECKSUM_PARTIAL); parses it into view/key.
     */
    static int superPacket(ByteBuffer b, int version, int protocol, String src, String dst, int sport, int dport,
            int payload, int gsoSize, int tcpFlags, PacketView view, FlowKey key) throws Exception {
        int p = VnetHdr.SIZE;
        int ipLen = version == 4 ? Ip.V4_HEADER : Ip.V6_HEADER;
        int l4Len = protocol == Ip.TCP ? Ip.TCP_HEADER : Ip.UDP_HEADER;
        int total = ipLen + l4Len + payload;
        for (int k = 0; k < ipLen + l4Len; k++) {
            b.put(p + k, (byte) 0);
        }
        byte[] s = InetAddress.getByName(src).getAddress();
        byte[] d = InetAddress.getByName(dst).getAddress();
        if (version == 4) {
            b.put(p, (byte) 0x45).putShort(p + 2, (short) total).putShort(p + 4, (short) 0xFFFE).put(p + 6, (byte) 0x40)
                    .put(p + 8, (byte) 64).put(p + 9, (byte) protocol).put(p + 12, s).put(p + 16, d);
            b.putShort(p + 10, (short) Checksum.finish(Checksum.sum(b, p, 20)));
        } else {
            b.put(p, (byte) 0x60).putShort(p + 4, (short) (l4Len + payload)).put(p + 6, (byte) protocol)
                    .put(p + 7, (byte) 64).put(p + 8, s).put(p + 24, d);
        }
        int l4 = p + ipLen;
        b.putShort(l4, (short) sport).putShort(l4 + 2, (short) dport);
        if (protocol == Ip.TCP) {
            b.putInt(l4 + 4, 0x7FFFF000).putInt(l4 + 8, 12345).put(l4 + 12, (byte) 0x50).put(l4 + 13, (byte) tcpFlags)
                    .putShort(l4 + 14, (short) 4000);
        } else {
            b.putShort(l4 + 4, (short) (l4Len + payload));
        }
        for (int k = 0; k < payload; k++) {
            b.put(l4 + l4Len + k, payloadByte(k));
        }
        assertEquals(DropReason.NONE, view.parse(b, p, total, key));
        view.setPartialChecksum();
        VnetHdr.writeFor(b, 0, view, true, gsoSize);
        byte[] check = new byte[2];
        b.get(view.l4Offset() + (protocol == Ip.TCP ? 16 : 6), check);
        assertArrayEquals(new byte[] {(byte) (view.pseudoHeaderChecksum() >>> 8), (byte) view.pseudoHeaderChecksum()}, check);
        return VnetHdr.SIZE + total;
    }
}
