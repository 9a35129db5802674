package warren.fish;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.linux.net.Netns;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.Ip;
import warren.packet.PacketView;
import warren.packet.VnetHdr;

/**
 * fish0's offloads (issue 15): with fish.tun_offload (the default) fish0 gives Fish the kernel's
 * GSO super-packets, which a plain client gets cut into segments (one sendmmsg each) with valid
 * checksums; bulk TCP both ways arrives byte for byte, with the offloads and without. A client that
 * declared vnet_hdr has every message checked: a header that does not fit its packet is dropped
 * and counted, and the client goes on.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class FishOffloadTest {
    private static final int BULK = 8 << 20;
    private static final int BULK_PORT = 9000;

    @TempDir
    Path dir;

    @Test
    void bulkTcpBothWaysWithFish0SuperPacketsCutForAPlainClient(TestNetwork net) throws Exception {
        try (Topology t = new Topology(net, dir, "")) {
            TestNetwork.Namespace client = t.client("a", 20000, 20099, null);
            bulkBothWays(t, client); // warm-up: JIT, first-time paths
            long before = loopAllocation();
            long inBefore = counter(t, "offload.tun_in");
            bulkBothWays(t, client);
            long allocated = loopAllocation() - before;
            long in = counter(t, "offload.tun_in") - inBefore;
            long cut = counter(t, "offload.segmented");
            System.out.printf("fish0 gave %d super-packets, %d cut for the plain client; the loop allocated %d bytes for"
                    + " 16 MiB%n", in, cut, allocated);
            assertTrue(in > 0, "the download came from fish0 as super-packets");
            assertTrue(cut > 0, "and was cut into segments for the plain client");
            assertEquals(0L, counter(t, "drops.segments_too_many"));
            assertTrue(allocated < 64 << 10, allocated + " bytes allocated on the loop thread for 16 MiB of super-packets");
        }
    }

    /** Bytes allocated so far by Fish's loop threads (in-process daemon). */
    private static long loopAllocation() {
        com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory
                .getThreadMXBean();
        long n = 0;
        for (Thread th : Thread.getAllStackTraces().keySet()) {
            if (th.getName().equals("fish-loop") || th.getName().startsWith("fish-loop-")) {
                n += mx.getThreadAllocatedBytes(th.getId());
            }
        }
        return n;
    }

    @Test
    void aVnetClientsSuperPacketsCrossFishWhole(TestNetwork net) throws Exception {
        try (Topology t = new Topology(net, dir, "")) {
            TestNetwork.Namespace ns = net.namespace("cl-v");
            if (t.egress("v", Topology.SOFT, 20000, 20099, null, ns, true) != null) {
                throw new IllegalStateException("Egress refused");
            }
            bulkBothWays(t, ns); // warm-up
            long before = loopAllocation();
            bulkBothWays(t, ns);
            long allocated = loopAllocation() - before;
            assertTrue(allocated < 64 << 10, allocated + " bytes allocated on the loop thread for 16 MiB of super-packets");
            long out = counter(t, "offload.tun_out");
            long in = counter(t, "offload.tun_in");
            System.out.printf("vnet client: %d super-packets to fish0, %d from fish0, %d cut%n", out, in,
                    counter(t, "offload.segmented"));
            assertTrue(out > 0, "the upload went to fish0 as the client's super-packets");
            assertTrue(in > 0, "the download came from fish0 as super-packets");
            assertEquals(0L, counter(t, "offload.segmented"), "a vnet_hdr client gets them whole");
        }
    }

    @Test
    void withoutTunOffloadFish0CarriesPlainPackets(TestNetwork net) throws Exception {
        try (Topology t = new Topology(net, dir, "fish.tun_offload = false\n")) {
            TestNetwork.Namespace client = t.client("a", 20000, 20099, null);
            bulkBothWays(t, client);
            assertEquals(0L, counter(t, "offload.tun_in"), "fish0 without IFF_VNET_HDR gives no super-packets");
        }
    }

    @Test
    void aVnetClientsMalformedHeadersAreDroppedAndCountedAndItGoesOn(TestNetwork net) throws Exception {
        try (Topology t = new Topology(net, dir, "")) {
            Fd raw = t.rawVnetClient("v", 21000, 21009);
            ByteBuffer msg = ByteBuffer.allocateDirect(2048);
            Pointer p = Pointer.wrap(Native.RUNTIME, msg);
            int n = udpMessage(msg, t.server, "ping");
            send(raw, p, n);
            String answer;
            try {
                answer = answer(raw);
            } catch (AssertionError e) {
                throw new AssertionError(e.getMessage() + ": " + drops(t));
            }
            assertTrue(answer.startsWith("ping from " + Topology.SOFT + ":21"), answer);

            // a TCPV4 gso_type on a UDP packet
            n = udpMessage(msg, t.server, "bad1");
            VnetHdr.write(msg, 0, VnetHdr.F_NEEDS_CSUM, VnetHdr.GSO_TCPV4, 28, 100, 20, 6);
            send(raw, p, n);
            // NEEDS_CSUM with csum_start at the IP header
            n = udpMessage(msg, t.server, "bad2");
            VnetHdr.write(msg, 0, VnetHdr.F_NEEDS_CSUM, VnetHdr.GSO_NONE, 0, 0, 0, 6);
            send(raw, p, n);
            // UDP_L4 with gso_size 0
            n = udpMessage(msg, t.server, "bad3");
            VnetHdr.write(msg, 0, VnetHdr.F_NEEDS_CSUM, VnetHdr.GSO_UDP_L4, 28, 0, 20, 6);
            send(raw, p, n);
            // shorter than a header
            send(raw, p, 6);
            awaitCounter(t, "drops.bad_gso_type", 1);
            awaitCounter(t, "drops.bad_csum_start", 1);
            awaitCounter(t, "drops.bad_gso_size", 1);
            awaitCounter(t, "drops.truncated", 1);

            n = udpMessage(msg, t.server, "pong");
            send(raw, p, n);
            answer = answer(raw);
            assertTrue(answer.startsWith("pong from " + Topology.SOFT + ":21"), "the client goes on: " + answer);
        }
    }

    @Test
    void burstsOfDatagramsAreJoinedIntoUdpSuperPacketsAndArriveAsSent(TestNetwork net) throws Exception {
        try (Topology t = new Topology(net, dir, "threads = 1\n")) {
            Fd raw = t.rawClient("u", 22000, 22009);
            java.net.DatagramSocket sink = Netns.call("/run/netns/" + t.internet.name,
                    () -> new java.net.DatagramSocket(9001, t.server));
            try (sink) {
                sink.setSoTimeout(10_000);
                ByteBuffer msg = ByteBuffer.allocateDirect(2048);
                Pointer p = Pointer.wrap(Native.RUNTIME, msg).slice(VnetHdr.SIZE);
                java.net.DatagramPacket in = new java.net.DatagramPacket(new byte[2048], 2048);
                int bursts = 0;
                long joinedBefore = counter(t, "offload.joined");
                // bursts until Fish has read several of one in a batch (it reads as soon as one arrives)
                while (bursts < 200 && (bursts < 3 || counter(t, "offload.joined") == joinedBefore)) {
                    int count = 32;
                    for (int i = 0; i < count; i++) {
                        String text = String.format("burst %04d datagram %02d ", bursts, i);
                        text = text + "x".repeat((i == count - 1 ? 60 : 100) - text.length()); // the last one shorter
                        int n = udpMessage(msg, t.server, 5001, 9001, text) - VnetHdr.SIZE;
                        assertEquals(n, Native.send(raw.get(), p, n, Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL));
                    }
                    for (int i = 0; i < count; i++) {
                        sink.receive(in);
                        String got = new String(in.getData(), 0, in.getLength(), StandardCharsets.US_ASCII);
                        assertTrue(got.startsWith(String.format("burst %04d datagram %02d ", bursts, i)),
                                "in order, whole: " + got);
                        assertEquals(i == count - 1 ? 60 : 100, got.length(), got);
                        assertEquals(Topology.SOFT, in.getAddress().getHostAddress());
                    }
                    bursts++;
                }
                long joined = counter(t, "offload.joined") - joinedBefore;
                System.out.printf("%d bursts of 32 datagrams: %d joined into super-packets, every one arrived in order%n",
                        bursts, joined);
                assertTrue(joined > 0, "datagrams read in one batch were joined");
            }
        }
    }

    /** An IPv4/UDP packet from the client (198.18.60.1:5000) to {@code server}:7 behind an empty header; its length. */
    private static int udpMessage(ByteBuffer b, InetAddress server, String text) {
        return udpMessage(b, server, 5000, 7, text);
    }

    private static int udpMessage(ByteBuffer b, InetAddress server, int sport, int dport, String text) {
        byte[] payload = text.getBytes(StandardCharsets.US_ASCII);
        int h = VnetHdr.SIZE;
        int total = Ip.V4_HEADER + 8 + payload.length;
        for (int i = 0; i < h + total; i++) {
            b.put(i, (byte) 0);
        }
        VnetHdr.writeNone(b, 0);
        b.put(h, (byte) 0x45).putShort(h + Ip.V4_TOTAL_LENGTH, (short) total).put(h + Ip.V4_TTL, (byte) 64)
                .put(h + Ip.V4_PROTOCOL, (byte) Ip.UDP);
        b.put(h + Ip.V4_SRC, new byte[] {(byte) 198, 18, 60, 1}).put(h + Ip.V4_DST, server.getAddress());
        int u = h + Ip.V4_HEADER;
        b.putShort(u, (short) sport).putShort(u + 2, (short) dport).putShort(u + 4, (short) (8 + payload.length));
        b.put(u + 8, payload);
        b.putShort(h + Ip.V4_CHECKSUM, (short) warren.packet.Checksum.finish(warren.packet.Checksum.sum(b, h, Ip.V4_HEADER)));
        PacketView v = new PacketView();
        DropReason r = v.parse(b, h, total, new FlowKey());
        if (r != DropReason.NONE) {
            throw new IllegalStateException("test packet: " + r);
        }
        v.fixChecksums();
        return h + total;
    }

    private static void send(Fd raw, Pointer p, int n) {
        assertEquals(n, Native.send(raw.get(), p, n, Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL));
    }

    /** The UDP payload of the next message Fish sends the raw client (header + packet), within 10 s. */
    private static String answer(Fd raw) throws Exception {
        ByteBuffer b = ByteBuffer.allocateDirect(VnetHdr.MAX_MESSAGE);
        Pointer p = Pointer.wrap(Native.RUNTIME, b);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (System.nanoTime() < deadline) {
            long n = Native.recv(raw.get(), p, b.capacity(), Native.MSG_DONTWAIT);
            if (n > 0) {
                assertEquals(VnetHdr.GSO_NONE, VnetHdr.gsoType(b, 0), "a datagram answer is no super-packet");
                PacketView v = new PacketView();
                assertEquals(DropReason.NONE, v.parse(b, VnetHdr.SIZE, (int) n - VnetHdr.SIZE, new FlowKey()));
                if (VnetHdr.needsCsum(b, 0)) {
                    v.completeChecksum();
                }
                assertEquals(v.storedL4Checksum(), v.computeL4Checksum(), "a valid UDP checksum");
                byte[] text = new byte[v.payloadLength()];
                b.get(v.payloadOffset(), text);
                return new String(text, StandardCharsets.US_ASCII);
            }
            Thread.sleep(5);
        }
        throw new AssertionError("no answer within 10 s");
    }

    private static String drops(Topology t) throws Exception {
        StringBuilder sb = new StringBuilder();
        t.status().getStatus().getCountersMap().forEach((k, v) -> {
            if (k.startsWith("drops.") || k.startsWith("offload.") || k.startsWith("ip.")) {
                sb.append(k).append('=').append(v).append(' ');
            }
        });
        return sb.toString();
    }

    /**
     * 8 MiB from the internet namespace to the client (download: fish0's super-packets) and 8 MiB
     * back (upload), each compared by SHA-256.
     */
    static void bulkBothWays(Topology t, TestNetwork.Namespace client) throws Exception {
        byte[] data = new byte[BULK];
        new Random(15).nextBytes(data);
        byte[] want = MessageDigest.getInstance("SHA-256").digest(data);
        ExecutorService pool = Executors.newCachedThreadPool();
        try (ServerSocket server = Netns.call("/run/netns/" + t.internet.name,
                () -> new ServerSocket(BULK_PORT, 8, t.server))) {
            pool.submit(() -> {
                for (int i = 0; i < 2; i++) {
                    try (Socket s = server.accept(); InputStream in = s.getInputStream(); OutputStream out = s.getOutputStream()) {
                        int mode = in.read();
                        if (mode == 'D') {
                            out.write(data);
                        } else {
                            out.write(MessageDigest.getInstance("SHA-256").digest(in.readAllBytes()));
                        }
                    }
                }
                return null;
            });
            try (Socket down = connect(client, t.server)) {
                down.getOutputStream().write('D');
                byte[] got = down.getInputStream().readAllBytes();
                assertEquals(BULK, got.length, "every byte of the download");
                assertArrayEquals(want, MessageDigest.getInstance("SHA-256").digest(got), "the download, byte for byte");
            }
            try (Socket up = connect(client, t.server)) {
                up.getOutputStream().write('U');
                up.getOutputStream().write(data);
                up.shutdownOutput();
                assertArrayEquals(want, up.getInputStream().readAllBytes(), "the upload, byte for byte");
            }
        } finally {
            pool.shutdownNow();
        }
    }

    private static Socket connect(TestNetwork.Namespace client, InetAddress server) throws Exception {
        Socket s = Netns.call("/run/netns/" + client.name, () -> {
            Socket k = new Socket();
            k.connect(new InetSocketAddress(server, BULK_PORT), 5000);
            return k;
        });
        s.setSoTimeout(60_000);
        return s;
    }

    private static long counter(Topology t, String name) throws Exception {
        return t.status().getStatus().getCountersOrDefault(name, 0);
    }

    private static void awaitCounter(Topology t, String name, long atLeast) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (counter(t, name) < atLeast && System.nanoTime() < deadline) {
            Thread.sleep(10);
        }
        assertTrue(counter(t, name) >= atLeast, name + " = " + counter(t, name));
    }
}
