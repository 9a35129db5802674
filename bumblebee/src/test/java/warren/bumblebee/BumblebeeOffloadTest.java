package warren.bumblebee;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import warren.bumblebee.onramp.OnRamp;
import warren.control.v1.Request;
import warren.control.v1.Status;
import warren.control.v1.Upgrade;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;
import warren.linux.net.Netns;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;
import warren.packet.Checksum;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.Ip;
import warren.packet.PacketView;
import warren.packet.VnetHdr;

/**
 * bb0's offloads (issue 15): with bumblebee.tun_offload (the default) bb0 gives Bumblebee the
 * kernel's TSO super-packets of what an upgraded socket sends, which a plain client gets cut into
 * segments (one sendmmsg each) with valid checksums, and a vnet_hdr client whole; a vnet_hdr
 * client's super-packets go to the kernel whole. 8 MiB each way arrive byte for byte through a
 * plain and a vnet on-ramp, with the offloads and without, at one and two loops; the loop threads
 * allocate nothing per packet. A vnet_hdr client's headers are checked: one that does not fit its
 * packet is dropped and counted, and its flow and the others go on.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class BumblebeeOffloadTest {
    private static final int BULK = 8 << 20;
    private static final int BULK_PORT = 9000;
    private static final InetAddress SERVER = addr("198.18.99.9");
    private static final int H = VnetHdr.SIZE;

    @TempDir
    Path dir;
    private final ExecutorService servers = Executors.newCachedThreadPool();
    private final byte[] data = new byte[BULK];

    BumblebeeOffloadTest() {
        new Random(15).nextBytes(data);
    }

    @AfterEach
    void tearDown() {
        servers.shutdownNow();
    }

    private static InetAddress addr(String s) {
        try {
            return InetAddress.getByName(s);
        } catch (java.net.UnknownHostException e) {
            throw new IllegalStateException(e);
        }
    }

    @ParameterizedTest(name = "vnet on-ramp {0}, threads = {1}, tun_steering = {2}")
    @CsvSource({"false, 1, auto", "true, 1, auto", "false, 2, auto", "true, 2, off"})
    void bulkTcpBothWaysWithBb0SuperPackets(boolean vnet, int threads, String steering, TestNetwork net)
            throws Exception {
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("bb.sock"), "audit.path = /dev/null\nthreads = "
                        + threads + "\nbumblebee.tun_steering = " + steering + "\n");
                ControlClient c = ControlClient.connect(d.control);
                OnRamp ramp = new OnRamp(net.namespace("onramp").name, 1500, vnet, c, this::serveBulk)) {
            ramp.verifyChecksums();
            TestNetwork.Namespace client = BumblebeeTest.ns(net, ramp);
            bulkBothWays(ramp); // warm-up: JIT, first-time paths
            Map<String, Long> before = counters(c);
            long alloc = loopAllocation();
            bulkBothWays(ramp);
            long allocated = loopAllocation() - alloc;
            Map<String, Long> after = counters(c);
            long packets = delta(before, after, "packets.flow_to_kernel") + delta(before, after, "packets.kernel_to_flow");
            long in = delta(before, after, "offload.tun_in");
            long out = delta(before, after, "offload.tun_out");
            long cut = delta(before, after, "offload.segmented");
            System.out.printf("%s on-ramp, threads = %d (%s): bb0 gave %d super-packets, took %d whole, %d cut; %d"
                    + " messages; loop threads allocated %d bytes for 16 MiB (%.3f B/message); %d packets' checksums"
                    + " checked by the on-ramp; drops.socket_full %d; the client kernel got %d super-packets%n",
                    vnet ? "vnet" : "plain", threads, steering, in, out, cut, packets, allocated,
                    (double) allocated / packets, ramp.checked(), delta(before, after, "drops.socket_full"),
                    ramp.superPacketsToTun());
            assertTrue(in > 0, "the download came from bb0 as super-packets: " + after);
            if (vnet) {
                assertTrue(out > 0, "the upload went to bb0 as the client's super-packets: " + after);
                assertTrue(ramp.superPacketsFromTun() > 0 && ramp.superPacketsToTun() > 0,
                        "the vnet client gave and took super-packets");
                if (!"off".equals(steering)) {
                    assertEquals(0, cut, "a vnet_hdr client gets them whole: " + after);
                }
            } else {
                assertTrue(cut > 0, "and was cut into segments for the plain client: " + after);
                assertEquals(0, out, "a plain client sends no super-packets");
            }
            // a plain client gets ~6,000 packets per 8 MiB, a vnet client ~150 super-packets
            assertTrue(ramp.checked() > (vnet ? 100 : 1000), "the on-ramp checked the checksums: " + ramp.checked());
            assertEquals(0, ramp.badChecksums(), "every packet from Bumblebee has valid checksums");
            assertEquals(0, inCsumErrors(client), "the client kernel counted no bad checksum");
            assertTrue(ramp.errors.isEmpty(), ramp.errors.toString());
            assertEquals(0, after.getOrDefault("drops.tun_other_loop", 0L));
            // per flow, not per packet: two upgrades and their answers
            assertTrue(allocated < 256 << 10, allocated + " bytes allocated on the loop threads for 16 MiB");
        }
    }

    @Test
    void withoutTunOffloadBb0CarriesPlainPacketsForPlainAndVnetClients(TestNetwork net) throws Exception {
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("bb.sock"),
                "audit.path = /dev/null\nthreads = 1\nbumblebee.tun_offload = false\n");
                ControlClient c = ControlClient.connect(d.control)) {
            for (boolean vnet : new boolean[] {false, true}) {
                try (OnRamp ramp = new OnRamp(net.namespace(vnet ? "vnet" : "plain").name, 1500, vnet, c,
                        this::serveBulk)) {
                    ramp.verifyChecksums();
                    Map<String, Long> before = counters(c);
                    bulkBothWays(ramp);
                    Map<String, Long> after = counters(c);
                    System.out.printf("bumblebee.tun_offload = false, %s on-ramp: %s%n", vnet ? "vnet" : "plain",
                            offloadCounters(after));
                    assertEquals(0, after.getOrDefault("offload.tun_in", 0L), "bb0 without IFF_VNET_HDR gives none");
                    if (vnet) {
                        assertTrue(delta(before, after, "offload.segmented") > 0,
                                "the vnet client's super-packets were cut for a plain bb0: " + after);
                        assertTrue(ramp.superPacketsFromTun() > 0, "the vnet client gave super-packets");
                    }
                    assertTrue(ramp.checked() > 100, "checked: " + ramp.checked());
                    assertEquals(0, ramp.badChecksums());
                    assertEquals(0, inCsumErrors(BumblebeeTest.ns(net, ramp)));
                }
            }
        }
    }

    /**
     * A vnet_hdr client's malformed headers on a UDP flow and a TCP flow: each dropped and counted
     * by reason; then both flows carry a valid super-packet (UDP_L4: one datagram per gso_size on
     * the upgraded socket; TCPV4: the kernel reads all of it) and go on, and a plain flow beside
     * them is untouched.
     */
    @Test
    void aVnetClientsMalformedHeadersAreDroppedAndCountedAndItsFlowsAndOthersGoOn(TestNetwork net) throws Exception {
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("bb.sock"), "audit.path = /dev/null\nthreads = 1\n");
                ControlClient c = ControlClient.connect(d.control)) {
            ByteBuffer msg = ByteBuffer.allocateDirect(VnetHdr.MAX_MESSAGE);
            Pointer p = Pointer.wrap(Native.RUNTIME, msg);
            // a plain UDP flow beside, and the vnet_hdr UDP flow
            Fd plain = rawFlow(c, false, 5001, "plain one");
            Fd udp = rawFlow(c, true, 5000, "ping");

            int n = udpMessage(msg, 5000, "bad gso_type");
            VnetHdr.write(msg, 0, VnetHdr.F_NEEDS_CSUM, VnetHdr.GSO_TCPV4, 28, 100, 20, 6);
            send(udp, p, n);
            n = udpMessage(msg, 5000, "bad csum_start");
            VnetHdr.write(msg, 0, VnetHdr.F_NEEDS_CSUM, VnetHdr.GSO_NONE, 0, 0, 0, 6);
            send(udp, p, n);
            n = udpMessage(msg, 5000, "bad csum_offset");
            VnetHdr.write(msg, 0, VnetHdr.F_NEEDS_CSUM, VnetHdr.GSO_NONE, 0, 0, 20, 8);
            send(udp, p, n);
            n = udpMessage(msg, 5000, "gso_size 0");
            VnetHdr.write(msg, 0, VnetHdr.F_NEEDS_CSUM, VnetHdr.GSO_UDP_L4, 28, 0, 20, 6);
            send(udp, p, n);
            n = udpMessage(msg, 5000, "x".repeat(3000)); // segments of 28 + 1480 bytes: over the MTU of 1500
            VnetHdr.write(msg, 0, VnetHdr.F_NEEDS_CSUM, VnetHdr.GSO_UDP_L4, 28, 1480, 20, 6);
            send(udp, p, n);
            n = udpMessage(msg, 5000, "bad flags");
            msg.put(0, (byte) 0x80);
            send(udp, p, n);
            send(udp, p, 6); // shorter than a header
            awaitCounter(c, "drops.bad_gso_type", 1);
            awaitCounter(c, "drops.bad_csum_start", 1);
            awaitCounter(c, "drops.bad_csum_offset", 1);
            awaitCounter(c, "drops.bad_gso_size", 2);
            awaitCounter(c, "drops.bad_vnet_flags", 1);
            awaitCounter(c, "drops.truncated", 1);

            // a valid UDP_L4 super-packet: 4 datagrams of 100 bytes and one of 40, echoed one by one
            StringBuilder joined = new StringBuilder();
            for (int i = 0; i < 5; i++) {
                String s = String.format("datagram %d ", i);
                joined.append(s).append("y".repeat((i == 4 ? 40 : 100) - s.length()));
            }
            n = udpMessage(msg, 5000, joined.toString());
            PacketView v = new PacketView();
            assertEquals(DropReason.NONE, v.parse(msg, H, n - H, new FlowKey()));
            v.setPartialChecksum();
            VnetHdr.writeFor(msg, 0, v, true, 100);
            send(udp, p, n);
            for (int i = 0; i < 5; i++) {
                String got = udpAnswer(udp);
                assertTrue(got.startsWith(String.format("datagram %d ", i)), "in order, one by one: " + got);
                assertEquals(i == 4 ? 40 : 100, got.length(), got);
            }
            assertTrue(counter(c, "offload.segmented") >= 1);
            send(udp, p, udpMessage(msg, 5000, "pong"));
            assertEquals("pong", udpAnswer(udp), "the UDP flow goes on");

            // the vnet_hdr TCP flow: a handshake by hand, then malformed headers, then a super-packet
            CompletableFuture<Reply> upgraded = new CompletableFuture<>();
            Fd tcp = upgrade(c, true, upgraded);
            long kernelSeq = handshake(tcp, 5555);
            try (Reply r = upgraded.get(10, TimeUnit.SECONDS); Fd sock = r.takeFd(0)) {
                byte[] payload = new byte[3000];
                new Random(3).nextBytes(payload);
                tcpMessage(msg, 5555, 1001, kernelSeq, payload);
                n = H + 40 + payload.length;
                VnetHdr.write(msg, 0, VnetHdr.F_NEEDS_CSUM, VnetHdr.GSO_TCPV6, 40, 1000, 20, 16);
                send(tcp, p, n); // TCPV6 on IPv4
                tcpMessage(msg, 5555, 1001, kernelSeq, payload);
                VnetHdr.write(msg, 0, VnetHdr.F_NEEDS_CSUM, VnetHdr.GSO_TCPV4, 40, 1000, 20, 6);
                send(tcp, p, n); // UDP's csum_offset
                tcpMessage(msg, 5555, 1001, kernelSeq, payload);
                VnetHdr.write(msg, 0, VnetHdr.F_NEEDS_CSUM, VnetHdr.GSO_TCPV4, 40, 0, 20, 16);
                send(tcp, p, n); // gso_size 0
                tcpMessage(msg, 5555, 1001, kernelSeq, payload);
                VnetHdr.write(msg, 0, VnetHdr.F_NEEDS_CSUM, VnetHdr.GSO_TCPV4, 40, 1461, 20, 16);
                send(tcp, p, n); // 40 + 1461 > the MTU
                tcpMessage(msg, 5555, 1001, kernelSeq, payload);
                VnetHdr.write(msg, 0, VnetHdr.F_NEEDS_CSUM, VnetHdr.GSO_TCPV4, 40, 1000, 50, 16);
                send(tcp, p, n); // csum_start in the payload
                awaitCounter(c, "drops.bad_gso_type", 2);
                awaitCounter(c, "drops.bad_csum_offset", 2);
                awaitCounter(c, "drops.bad_gso_size", 4);
                awaitCounter(c, "drops.bad_csum_start", 2);

                long outBefore = counter(c, "offload.tun_out");
                tcpMessage(msg, 5555, 1001, kernelSeq, payload);
                v = new PacketView();
                assertEquals(DropReason.NONE, v.parse(msg, H, n - H, new FlowKey()));
                v.setPartialChecksum();
                VnetHdr.writeFor(msg, 0, v, true, 1000);
                send(tcp, p, n);
                Pointer sp = Native.allocate(4096);
                byte[] got = new byte[payload.length];
                for (int off = 0; off < got.length; ) {
                    off += TcpSockets.read(sock, sp, got, off, got.length - off);
                }
                assertArrayEquals(payload, got, "the kernel read the whole super-packet");
                assertEquals(outBefore + 1, counter(c, "offload.tun_out"), "written to bb0 whole");
                byte[] back = "pong from the kernel".getBytes(StandardCharsets.US_ASCII);
                TcpSockets.writeFully(sock, sp, back, 0, back.length);
                assertEquals("pong from the kernel", tcpData(tcp), "the TCP flow goes on");
            }
            assertEquals("plain two", udpRoundTrip(plain, false, 5001, "plain two"), "the plain flow beside goes on");
            plain.close();
            udp.close();
            tcp.close();
        }
    }

    // ---- the bulk transfer through an on-ramp

    /** Serves an upgraded socket: 'D' gets the 8 MiB, 'U' gets the SHA-256 of everything it sends. */
    private void serveBulk(Reply r) {
        Fd s = r.takeFd(r.response().getUpgraded().getFdSocket());
        r.close();
        servers.submit(() -> {
            try (s) {
                Pointer p = Native.allocate(1 << 16);
                byte[] b = new byte[1 << 16];
                if (TcpSockets.read(s, p, b, 0, 1) != 1) {
                    return null;
                }
                if (b[0] == 'D') {
                    TcpSockets.writeFully(s, p, data, 0, data.length);
                } else {
                    MessageDigest md = MessageDigest.getInstance("SHA-256");
                    int n;
                    while ((n = TcpSockets.read(s, p, b, 0, b.length)) > 0) {
                        md.update(b, 0, n);
                    }
                    byte[] digest = md.digest();
                    TcpSockets.writeFully(s, p, digest, 0, digest.length);
                }
                TcpSockets.shutdownOutput(s);
                while (TcpSockets.read(s, p, b, 0, b.length) > 0) {
                    // until the client closes: its last ACKs still cross
                }
            }
            return null;
        });
    }

    /** 8 MiB downloaded and 8 MiB uploaded by the client namespace's kernel, each compared by SHA-256. */
    private void bulkBothWays(OnRamp ramp) throws Exception {
        byte[] want = MessageDigest.getInstance("SHA-256").digest(data);
        try (Socket down = connect(ramp)) {
            down.getOutputStream().write('D');
            byte[] got = down.getInputStream().readAllBytes();
            assertEquals(BULK, got.length, "every byte of the download");
            assertArrayEquals(want, MessageDigest.getInstance("SHA-256").digest(got), "the download, byte for byte");
        }
        try (Socket up = connect(ramp)) {
            OutputStream out = up.getOutputStream();
            out.write('U');
            out.write(data);
            up.shutdownOutput();
            InputStream in = up.getInputStream();
            assertArrayEquals(want, in.readAllBytes(), "the upload, byte for byte");
        }
    }

    private static Socket connect(OnRamp ramp) throws Exception {
        Socket s = Netns.call("/run/netns/" + ramp.client, () -> {
            Socket k = new Socket();
            k.connect(new InetSocketAddress(SERVER, BULK_PORT), 10_000);
            return k;
        });
        s.setSoTimeout(60_000);
        return s;
    }

    /** Bytes allocated so far by Bumblebee's loop threads (bumblebee-loop, bumblebee-loop-1, ...). */
    private static long loopAllocation() {
        com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory
                .getThreadMXBean();
        long n = 0;
        for (Thread th : Thread.getAllStackTraces().keySet()) {
            if (th.getName().startsWith("bumblebee-loop")) {
                n += mx.getThreadAllocatedBytes(th.getId());
            }
        }
        return n;
    }

    /** Tcp InCsumErrors of the namespace's kernel (/proc/net/snmp read inside it). */
    private static long inCsumErrors(TestNetwork.Namespace ns) throws Exception {
        List<String> tcp = ns.exec("cat", "/proc/net/snmp").output().lines().filter(l -> l.startsWith("Tcp:")).toList();
        List<String> names = List.of(tcp.get(0).split("\\s+"));
        return Long.parseLong(tcp.get(1).split("\\s+")[names.indexOf("InCsumErrors")]);
    }

    // ---- raw flows made by hand

    /**
     * A UDP flow by hand (198.18.50.1:{@code sport} -> 198.18.99.9:7, vnet_hdr or plain) whose
     * Upgraded socket is echoed; {@code first} must come back. Our end of its flow socket.
     */
    private Fd rawFlow(ControlClient c, boolean vnet, int sport, String first) throws Exception {
        CompletableFuture<Reply> upgraded = new CompletableFuture<>();
        Fd flow = upgrade(c, vnet, upgraded);
        upgraded.thenAccept(this::echoDatagrams);
        assertEquals(first, udpRoundTrip(flow, vnet, sport, first));
        return flow;
    }

    private static Fd upgrade(ControlClient c, boolean vnet, CompletableFuture<Reply> upgraded) throws Exception {
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
        try (Fd theirs = Fd.adopt(sv[1])) {
            c.call(Request.newBuilder().setUpgrade(Upgrade.newBuilder().setFdFlow(0).setVnetHdr(vnet)), List.of(theirs))
                    .whenComplete((r, e) -> {
                        if (r != null) {
                            upgraded.complete(r);
                        } else {
                            upgraded.completeExceptionally(e);
                        }
                    });
        }
        return Fd.adopt(sv[0]);
    }

    /** Echoes datagrams on an upgraded UDP socket. */
    private void echoDatagrams(Reply r) {
        BumblebeeTest.echoDatagrams(r, servers);
    }

    private static String udpRoundTrip(Fd flow, boolean vnet, int sport, String text) throws Exception {
        ByteBuffer b = ByteBuffer.allocateDirect(2048);
        int n = udpMessage(b, sport, text);
        Pointer p = Pointer.wrap(Native.RUNTIME, b);
        send(flow, vnet ? p : p.slice(H), vnet ? n : n - H);
        return vnet ? udpAnswer(flow) : plainUdpAnswer(flow);
    }

    /** An IPv4/UDP packet 198.18.50.1:{@code sport} -> 198.18.99.9:7 behind an empty header at 0; the message's length. */
    private static int udpMessage(ByteBuffer b, int sport, String text) {
        byte[] payload = text.getBytes(StandardCharsets.US_ASCII);
        int total = Ip.V4_HEADER + 8 + payload.length;
        for (int i = 0; i < H + total; i++) {
            b.put(i, (byte) 0);
        }
        b.put(H, (byte) 0x45).putShort(H + Ip.V4_TOTAL_LENGTH, (short) total).put(H + Ip.V4_TTL, (byte) 64)
                .put(H + Ip.V4_PROTOCOL, (byte) Ip.UDP);
        b.put(H + Ip.V4_SRC, new byte[] {(byte) 198, 18, 50, 1}).put(H + Ip.V4_DST, SERVER.getAddress());
        int u = H + Ip.V4_HEADER;
        b.putShort(u, (short) sport).putShort(u + 2, (short) 7).putShort(u + 4, (short) (8 + payload.length));
        b.put(u + 8, payload);
        fix(b, total);
        return H + total;
    }

    /**
     * An IPv4/TCP segment 198.18.50.1:{@code sport} -> 198.18.99.9:80 (ACK|PSH, no options) behind
     * an empty header at 0, its checksums complete.
     */
    private static void tcpMessage(ByteBuffer b, int sport, long seq, long ack, byte[] payload) {
        byte[] seg = BumblebeeTraceTest.segment(sport, 0x18, seq, ack, 0, payload);
        VnetHdr.writeNone(b, 0);
        b.put(H, seg);
    }

    private static void fix(ByteBuffer b, int total) {
        b.putShort(H + Ip.V4_CHECKSUM, (short) 0);
        b.putShort(H + Ip.V4_CHECKSUM, (short) Checksum.finish(Checksum.sum(b, H, Ip.V4_HEADER)));
        PacketView v = new PacketView();
        DropReason r = v.parse(b, H, total, new FlowKey());
        if (r != DropReason.NONE) {
            throw new IllegalStateException("test packet: " + r);
        }
        v.fixChecksums();
    }

    private static void send(Fd flow, Pointer p, int n) {
        assertEquals(n, Native.send(flow.get(), p, n, Native.MSG_NOSIGNAL));
    }

    /** The next message on a vnet_hdr flow (header and packet), within 10 s; its packet parsed and checked into {@code v}. */
    private static ByteBuffer vnetMessage(Fd flow, PacketView v) throws Exception {
        ByteBuffer b = ByteBuffer.allocateDirect(VnetHdr.MAX_MESSAGE);
        Pointer p = Pointer.wrap(Native.RUNTIME, b);
        assertTrue((Native.pollOne(flow.get(), Native.POLLIN, 10_000) & Native.POLLIN) != 0, "a message within 10 s");
        long n = Native.recv(flow.get(), p, b.capacity(), 0);
        assertTrue(n >= H, "a header: " + n);
        assertEquals(DropReason.NONE, v.parse(b, H, (int) n - H, new FlowKey()));
        assertEquals(DropReason.NONE, VnetHdr.validate(b, 0, v, VnetHdr.MAX_MESSAGE), "a valid header");
        assertTrue(v.ipChecksumOk());
        if (VnetHdr.needsCsum(b, 0)) {
            assertEquals(v.pseudoHeaderChecksum(), v.storedL4Checksum(), "a partial checksum: the pseudo-header sum");
            v.completeChecksum();
        }
        assertEquals(v.computeL4Checksum(), v.storedL4Checksum(), "a valid transport checksum");
        return b;
    }

    /** The UDP payload of the next message on a vnet_hdr flow: a datagram behind an empty header. */
    private static String udpAnswer(Fd flow) throws Exception {
        PacketView v = new PacketView();
        ByteBuffer b = vnetMessage(flow, v);
        assertEquals(VnetHdr.GSO_NONE, VnetHdr.gsoType(b, 0), "one datagram per message");
        assertEquals(0, VnetHdr.flags(b, 0), "a complete checksum");
        byte[] text = new byte[v.payloadLength()];
        b.get(v.payloadOffset(), text);
        return new String(text, StandardCharsets.US_ASCII);
    }

    private static String plainUdpAnswer(Fd flow) throws Exception {
        ByteBuffer b = ByteBuffer.allocateDirect(65536);
        Pointer p = Pointer.wrap(Native.RUNTIME, b);
        assertTrue((Native.pollOne(flow.get(), Native.POLLIN, 10_000) & Native.POLLIN) != 0, "an answer within 10 s");
        long n = Native.recv(flow.get(), p, b.capacity(), 0);
        PacketView v = new PacketView();
        assertEquals(DropReason.NONE, v.parse(b, 0, (int) n, new FlowKey()));
        assertEquals(v.computeL4Checksum(), v.storedL4Checksum());
        byte[] text = new byte[v.payloadLength()];
        b.get(v.payloadOffset(), text);
        return new String(text, StandardCharsets.US_ASCII);
    }

    /** SYN (behind an empty header), the kernel's SYN-ACK (checked), ACK; the kernel's next sequence number. */
    private static long handshake(Fd flow, int sport) throws Exception {
        ByteBuffer b = ByteBuffer.allocateDirect(256);
        Pointer p = Pointer.wrap(Native.RUNTIME, b);
        byte[] syn = BumblebeeTraceTest.segment(sport, 0x02, 1000, 0, 1460, new byte[0]);
        VnetHdr.writeNone(b, 0);
        b.put(H, syn);
        send(flow, p, H + syn.length);
        PacketView v = new PacketView();
        ByteBuffer synAck = vnetMessage(flow, v);
        assertEquals(0x12, v.tcpFlags() & 0x12, "the kernel answers the SYN");
        long kernelSeq = (synAck.getInt(v.l4Offset() + 4) & 0xFFFFFFFFL) + 1;
        byte[] ack = BumblebeeTraceTest.segment(sport, 0x10, 1001, kernelSeq, 0, new byte[0]);
        b.put(H, ack);
        send(flow, p, H + ack.length);
        return kernelSeq;
    }

    /** The data of the next message on a vnet_hdr TCP flow that has some (bare ACKs skipped). */
    private static String tcpData(Fd flow) throws Exception {
        for (int i = 0; i < 10; i++) {
            PacketView v = new PacketView();
            ByteBuffer b = vnetMessage(flow, v);
            if (v.payloadLength() > 0) {
                byte[] text = new byte[v.payloadLength()];
                b.get(v.payloadOffset(), text);
                return new String(text, StandardCharsets.US_ASCII);
            }
        }
        throw new AssertionError("no data in 10 messages");
    }

    // ---- counters

    private static Map<String, Long> counters(ControlClient c) throws Exception {
        try (Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                .get(5, TimeUnit.SECONDS)) {
            return r.response().getStatus().getCountersMap();
        }
    }

    private static long counter(ControlClient c, String name) throws Exception {
        return counters(c).getOrDefault(name, 0L);
    }

    private static long delta(Map<String, Long> before, Map<String, Long> after, String name) {
        return after.getOrDefault(name, 0L) - before.getOrDefault(name, 0L);
    }

    private static String offloadCounters(Map<String, Long> m) {
        StringBuilder sb = new StringBuilder();
        new java.util.TreeMap<>(m).forEach((k, v) -> {
            if (k.startsWith("offload.") || k.startsWith("drops.") || k.startsWith("tun.drops.")) {
                sb.append(k).append('=').append(v).append(' ');
            }
        });
        return sb.toString().strip();
    }

    private static void awaitCounter(ControlClient c, String name, long atLeast) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (counter(c, name) < atLeast && System.nanoTime() < deadline) {
            Thread.sleep(10);
        }
        assertTrue(counter(c, name) >= atLeast, name + " = " + counter(c, name) + ": " + offloadCounters(counters(c)));
    }
}
