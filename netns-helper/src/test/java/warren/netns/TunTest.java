package warren.netns;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.linux.net.Netns;
import warren.linux.net.Rtnetlink;
import warren.linux.net.Tun;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.Ip;
import warren.packet.PacketView;

/**
 * A TUN device made from Java in a private namespace, configured over rtnetlink from Java: a UDP
 * datagram sent inside the namespace comes out of the TUN fd as a raw IP packet with the right
 * 5-tuple, and a reply written into the TUN fd reaches the socket. IPv4 and IPv6.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class TunTest {

    @Test
    void packetsGoOutOfAndIntoATunConfiguredOverRtnetlink(TestNetwork net) throws Exception {
        TestNetwork.Namespace ns = net.namespace("tun");
        String path = "/run/netns/" + ns.name;
        Fd tun = Netns.call(path, () -> {
            Fd fd = Tun.open("wtun0", false);
            int index = Tun.index("wtun0");
            try (Rtnetlink rt = new Rtnetlink()) {
                rt.linkUp(index, 1500);
                rt.addAddress(index, InetAddress.getByName("198.18.200.1"), 24);
                rt.addAddress(index, InetAddress.getByName("fd00:200::1"), 64);
                rt.addRoute(InetAddress.getByName("198.18.201.0"), 24, index);
            }
            return fd;
        });
        try (tun) {
            String routes = ns.exec("ip", "route").output();
            assertTrue(routes.contains("198.18.201.0/24 dev wtun0"), routes);
            assertTrue(ns.exec("ip", "-6", "addr", "show", "dev", "wtun0").output().contains("fd00:200::1/64"));
            for (String[] pair : new String[][] {{"198.18.200.1", "198.18.200.2"}, {"198.18.200.1", "198.18.201.7"},
                    {"fd00:200::1", "fd00:200::2"}}) {
                roundTrip(path, tun, InetAddress.getByName(pair[0]), InetAddress.getByName(pair[1]));
            }
        }
    }

    private static void roundTrip(String path, Fd tun, InetAddress local, InetAddress remote) throws Exception {
        try (DatagramSocket s = Netns.call(path, () -> new DatagramSocket(new InetSocketAddress(local, 0)))) {
            s.setSoTimeout(5000);
            byte[] ping = "ping".getBytes(StandardCharsets.US_ASCII);
            s.send(new DatagramPacket(ping, ping.length, remote, 9999));
            Pointer p = Native.allocate(65536);
            ByteBuffer b = ByteBuffer.allocate(65536);
            PacketView view = new PacketView();
            FlowKey key = new FlowKey();
            int n = 0;
            for (int tries = 0; tries < 50; tries++) { // skip router solicitations, MLD reports
                assertTrue((Native.pollOne(tun.get(), Native.POLLIN, 5000) & Native.POLLIN) != 0, "a packet on the TUN");
                n = (int) Native.ioResult("read", Native.read(tun.get(), p, 65536));
                byte[] raw = new byte[n];
                p.get(0, raw, 0, n);
                b.clear();
                b.put(0, raw);
                if (view.parse(b, 0, n, key) == DropReason.NONE && key.protocol == Ip.UDP && key.dstPort == 9999) {
                    break;
                }
            }
            assertEquals(DropReason.NONE, view.parse(b, 0, n, key));
            assertEquals(s.getLocalPort(), key.srcPort);
            assertEquals(4, view.payloadLength());
            assertEquals(view.computeL4Checksum(), view.storedL4Checksum(), "the kernel's UDP checksum");
            // answer: swap the addresses and ports, change the payload, fix the checksums
            ByteBuffer addrs = ByteBuffer.allocate(32);
            addrs.put(0, key.dst, 0, 16).put(16, key.src, 0, 16);
            int sport = key.srcPort;
            int dport = key.dstPort;
            view.rewrite(true, addrs, 0, dport);
            view.rewrite(false, addrs, 16, sport);
            b.put(view.payloadOffset(), "pong".getBytes(StandardCharsets.US_ASCII));
            view.fixChecksums();
            byte[] out = new byte[view.length()];
            b.get(0, out);
            p.put(0, out, 0, out.length);
            assertEquals(out.length, Native.ioResult("write", Native.write(tun.get(), p, out.length)));
            DatagramPacket got = new DatagramPacket(new byte[16], 16);
            s.receive(got);
            assertEquals("pong", new String(got.getData(), 0, got.getLength(), StandardCharsets.US_ASCII));
            assertEquals(remote, got.getAddress());
            assertEquals(9999, got.getPort());
        }
    }
}
