package warren.netns;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.function.LongSupplier;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import warren.fdpass.Fd;
import warren.fdpass.FdCount;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.linux.net.Netns;
import warren.linux.net.Tun;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.Ip;
import warren.packet.PacketView;
import warren.packet.VnetHdr;

/**
 * {@link TunPump} on the real kernel, in a private namespace: the pump's TUN {@code wpump0} has
 * 198.18.216.1/24 and the default route; the test holds the other end of the pump's SEQPACKET pair
 * and reads what a front proxy would get.
 *
 * <ul>
 *   <li>vnet mode: a TCP connect to 198.18.217.7:80 gives a SYN message that is a valid
 *       virtio_net_hdr (gso NONE) and the IPv4 packet behind it, nothing more; a UDP_SEGMENT 1000
 *       send of 8,000 bytes arrives as ONE message: gso_type UDP_L4, gso_size 1000 (needs USO,
 *       Linux 6.2+); a UDP_L4 super-packet sent on the socket reaches a socket in the namespace
 *       as 8 datagrams; the pump counted one super-packet each way.</li>
 *   <li>plain mode (the old constructor): the SYN message is the bare IPv4 packet.</li>
 *   <li>A pump that fails to start closes the socket it was given.</li>
 * </ul>
 * Every case checks that the pump's fds are gone after close.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class TunPumpTest {
    private static final String TUN = "wpump0";
    private static final String LOCAL = "198.18.216.1";
    private static final String REMOTE = "198.18.217.7";
    private static final int SOL_UDP = 17;
    private static final int UDP_SEGMENT = 103;

    /** The test's end of the pump's socket pair, read into a direct buffer the packet classes look at. */
    private static final class Peer implements AutoCloseable {
        final Fd fd;
        final ByteBuffer in = ByteBuffer.allocateDirect(VnetHdr.MAX_MESSAGE);
        final Pointer inPtr = Pointer.wrap(Native.RUNTIME, in);
        final PacketView view = new PacketView();
        final FlowKey key = new FlowKey();

        Peer(Fd fd) {
            this.fd = fd;
        }

        /** Receives messages until one (vnet: after its header) parses as {@code protocol} to {@code port}; its length. */
        int receive(boolean vnet, int protocol, int port) throws Exception {
            for (int tries = 0; tries < 50; tries++) { // skips IPv6 router solicitations, MLD reports
                assertTrue((Native.pollOne(fd.get(), Native.POLLIN, 5000) & Native.POLLIN) != 0, "a message from the pump");
                int n = (int) Native.ioResult("recv", Native.recv(fd.get(), inPtr, in.capacity(), Native.MSG_DONTWAIT));
                DropReason r = vnet ? VnetHdr.parse(in, 0, n, view, key, 65535) : view.parse(in, 0, n, key);
                if (r == DropReason.NONE && key.protocol == protocol && key.dstPort == port) {
                    return n;
                }
            }
            throw new AssertionError("no message of protocol " + protocol + " to port " + port);
        }

        @Override
        public void close() {
            fd.close();
        }
    }

    @Test
    void vnetMessagesCarryAHeaderAndAUdpGsoSendIsOneMessage(TestNetwork net) throws Exception {
        String path = "/run/netns/" + net.namespace("pump").name;
        Set<String> before = FdCount.snapshot();
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
        try (Peer peer = new Peer(Fd.adopt(sv[1]));
                TunPump pump = new TunPump(path, TUN, 1500, List.of(LOCAL + "/24"), Fd.adopt(sv[0]), true)) {
            assertTrue(pump.vnetHdr());
            assertTrue((pump.offloads() & Tun.TUN_F_TSO4) != 0, "offloads 0x" + Integer.toHexString(pump.offloads()));
            assertTrue(Native.getsockoptInt(sv[0], Native.SOL_SOCKET, Native.SO_SNDBUF) >= TunPump.VNET_SOCKET_BUFFER,
                    "the pump's send buffer holds dozens of 64 KiB messages");

            try (SocketChannel c = Netns.call(path, () -> {
                SocketChannel x = SocketChannel.open();
                x.configureBlocking(false);
                x.connect(new InetSocketAddress(InetAddress.getByName(REMOTE), 80));
                return x;
            })) {
                int n = peer.receive(true, Ip.TCP, 80);
                assertEquals(VnetHdr.SIZE + peer.view.length(), n, "a header and the packet, nothing else");
                assertEquals(VnetHdr.GSO_NONE, VnetHdr.gsoType(peer.in, 0));
                assertEquals(Ip.TCP_SYN, peer.view.tcpFlags() & (Ip.TCP_SYN | Ip.TCP_ACK));
                assertEquals(4, peer.view.version());
            }
            assertEquals(0, pump.superPacketsFromTun(), "a SYN is no super-packet");

            Assumptions.assumeTrue((pump.offloads() & Tun.TUN_F_USO4) != 0, "the kernel has no USO for TUN (before 6.2)");
            try (Fd udp = Netns.call(path, () -> Fd.adopt(Native.socket(Native.AF_INET, Native.SOCK_DGRAM | Native.SOCK_CLOEXEC, 0)))) {
                Native.setsockoptInt(udp.get(), SOL_UDP, UDP_SEGMENT, 1000);
                ByteBuffer data = ByteBuffer.allocateDirect(8000);
                byte[] sa = Native.sockaddr(new InetSocketAddress(InetAddress.getByName(REMOTE), 9999));
                Pointer saPtr = Native.allocate(sa.length);
                saPtr.put(0, sa, 0, sa.length);
                assertEquals(8000, Native.ioResult("sendto",
                        Native.sendto(udp.get(), Pointer.wrap(Native.RUNTIME, data), 8000, 0, saPtr, sa.length)));
            }
            int n = peer.receive(true, Ip.UDP, 9999);
            assertEquals(VnetHdr.SIZE + Ip.V4_HEADER + Ip.UDP_HEADER + 8000, n, "the 8,000 bytes in one message");
            assertEquals(VnetHdr.GSO_UDP_L4, VnetHdr.gsoType(peer.in, 0));
            assertEquals(1000, VnetHdr.gsoSize(peer.in, 0));
            assertEquals(1, await(pump::superPacketsFromTun, 1));

            // and back: a UDP_L4 super-packet on the socket reaches a socket in the namespace as 8 datagrams
            try (DatagramSocket s = Netns.call(path, () -> new DatagramSocket(new InetSocketAddress(InetAddress.getByName(LOCAL), 0)))) {
                s.setSoTimeout(5000);
                ByteBuffer out = ByteBuffer.allocateDirect(VnetHdr.MAX_MESSAGE);
                int len = TunOffloadTest.superPacket(out, 4, Ip.UDP, REMOTE, LOCAL, 5555, s.getLocalPort(), 8000, 1000, 0,
                        new PacketView(), new FlowKey());
                assertEquals(len, Native.ioResult("send",
                        Native.send(peer.fd.get(), Pointer.wrap(Native.RUNTIME, out), len, Native.MSG_DONTWAIT)));
                for (int i = 0; i < 8; i++) {
                    DatagramPacket p = new DatagramPacket(new byte[2000], 2000);
                    s.receive(p);
                    assertEquals(1000, p.getLength(), "datagram " + i);
                    for (int k = 0; k < 1000; k++) {
                        assertEquals(TunOffloadTest.payloadByte(i * 1000 + k), p.getData()[k], "byte " + k + " of datagram " + i);
                    }
                }
            }
            assertEquals(1, await(pump::superPacketsToTun, 1));
        }
        assertEquals(Set.of(), FdCount.openedSince(before));
    }

    @Test
    void aPlainPumpSendsBarePackets(TestNetwork net) throws Exception {
        String path = "/run/netns/" + net.namespace("plain").name;
        Set<String> before = FdCount.snapshot();
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
        try (Peer peer = new Peer(Fd.adopt(sv[1]));
                TunPump pump = new TunPump(path, TUN, 1500, List.of(LOCAL + "/24"), Fd.adopt(sv[0]));
                SocketChannel c = Netns.call(path, () -> {
                    SocketChannel x = SocketChannel.open();
                    x.configureBlocking(false);
                    x.connect(new InetSocketAddress(InetAddress.getByName(REMOTE), 80));
                    return x;
                })) {
            assertFalse(pump.vnetHdr());
            assertEquals(0, pump.offloads());
            int n = peer.receive(false, Ip.TCP, 80);
            assertEquals(peer.view.length(), n);
            assertEquals(0x45, peer.in.get(0) & 0xFF, "the message starts with the IPv4 header");
        }
        assertEquals(Set.of(), FdCount.openedSince(before));
    }

    /**
     * 300 UDP datagrams sent at once in the namespace all reach the socket, each its own message,
     * in the order sent: the pump reads the TUN into a batch and sends it with one sendmmsg.
     */
    @Test
    void aBurstLeavesTheTunInBatchesInOrder(TestNetwork net) throws Exception {
        String path = "/run/netns/" + net.namespace("burst").name;
        Set<String> before = FdCount.snapshot();
        int n = 300;
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
        try (Peer peer = new Peer(Fd.adopt(sv[1]));
                TunPump pump = new TunPump(path, TUN, 1500, List.of(LOCAL + "/24"), Fd.adopt(sv[0]));
                DatagramSocket s = Netns.call(path, () -> new DatagramSocket(new InetSocketAddress(InetAddress.getByName(LOCAL), 0)))) {
            InetSocketAddress to = new InetSocketAddress(InetAddress.getByName(REMOTE), 9999);
            for (int i = 0; i < n; i++) {
                byte[] b = ByteBuffer.allocate(4).putInt(i).array();
                s.send(new DatagramPacket(b, b.length, to));
            }
            for (int i = 0; i < n; i++) {
                int len = peer.receive(false, Ip.UDP, 9999);
                assertEquals(peer.view.length(), len, "one packet per message");
                assertEquals(4, peer.view.payloadLength());
                assertEquals(i, peer.in.getInt(peer.view.payloadOffset()), "in the order sent");
            }
            long messages = pump.messagesToSocket();
            long sends = pump.sendsToSocket();
            System.out.printf("TunPump: %d messages to the socket in %d sendmmsg calls (%.1f per call)%n", messages, sends,
                    (double) messages / sends);
            assertTrue(messages >= n && sends <= messages, messages + " messages, " + sends + " sends");
        }
        assertEquals(Set.of(), FdCount.openedSince(before));
    }

    @Test
    void aPumpThatFailsToStartClosesItsSocket(TestNetwork net) throws Exception {
        String path = "/run/netns/" + net.namespace("fail").name;
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
        Fd mine = Fd.adopt(sv[0]);
        try (Fd peer = Fd.adopt(sv[1])) {
            NativeIoException e = assertThrows(NativeIoException.class,
                    () -> new TunPump(path, TUN, 1500, List.of(LOCAL + "/99"), mine, true));
            assertTrue(e.getMessage().contains("EINVAL"), e.getMessage()); // the kernel refused the /99, after the TUN was made
            assertFalse(mine.isOpen(), "the pump owned the socket");
            Netns.call(path, () -> {
                assertEquals(0, Tun.index(TUN), "the TUN went with its fd");
                return null;
            });
        }
    }

    /** Polls {@code counter} until it reaches {@code want} (5 s at most); its last value. */
    private static long await(LongSupplier counter, long want) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        long v = counter.getAsLong();
        while (v < want && System.nanoTime() < deadline) {
            Thread.sleep(5);
            v = counter.getAsLong();
        }
        return v;
    }
}
