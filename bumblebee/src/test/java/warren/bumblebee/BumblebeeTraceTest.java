package warren.bumblebee;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.OutputStream;
import java.lang.management.ManagementFactory;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.bumblebee.onramp.OnRamp;
import warren.control.v1.FiveTuple;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.TaskInfo;
import warren.control.v1.Trace;
import warren.control.v1.Upgrade;
import warren.daemon.client.ControlClient;
import warren.daemon.client.PcapWriter;
import warren.daemon.client.Reply;
import warren.daemon.client.TraceRecorder;
import warren.daemon.testing.RunningDaemon;
import warren.daemon.testing.Tcpdump;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;
import warren.linux.net.Netns;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;

/**
 * Trace of one Bumblebee flow beside another: the pcap (read by tcpdump) holds the traced flow's
 * handshake and data as the client sent and got them and as translated on the TUN, with right
 * checksums, and nothing of the other flow. And the cost of the taps: the loop allocates nothing
 * per packet with no trace, and its CPU time per packet with and without a trace is printed.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class BumblebeeTraceTest {
    /** One loop: Trace follows flows of loop 0 only so far (docs/bumblebee.md, Threads). */
    private static final String TRACED_CONFIG = "audit.path = /dev/null\nthreads = 1\n";

    @TempDir
    Path dir;
    private final ExecutorService pool = Executors.newCachedThreadPool();

    @AfterEach
    void tearDown() {
        pool.shutdownNow();
    }

    /** A TCP segment 198.18.50.1:{@code sport} -> 198.18.99.9:80 with the given flags, numbers and payload. */
    static byte[] segment(int sport, int flags, long seq, long ack, int mss, byte[] payload) {
        int opt = mss > 0 ? 4 : 0;
        int len = 40 + opt + payload.length;
        ByteBuffer b = ByteBuffer.allocate(len);
        b.put(0, (byte) 0x45).putShort(2, (short) len).put(6, (byte) 0x40).put(8, (byte) 64).put(9, (byte) 6);
        b.put(12, new byte[] {(byte) 198, 18, 50, 1}).put(16, new byte[] {(byte) 198, 18, 99, 9});
        b.putShort(20, (short) sport).putShort(22, (short) 80).putInt(24, (int) seq).putInt(28, (int) ack);
        b.put(32, (byte) ((5 + opt / 4) << 4)).put(33, (byte) flags).putShort(34, (short) 65535);
        if (opt > 0) {
            b.put(40, (byte) 2).put(41, (byte) 4).putShort(42, (short) mss);
        }
        b.put(40 + opt, payload);
        BumblebeeFlowsTest.Hostile.fixIp(b);
        warren.packet.PacketView v = new warren.packet.PacketView();
        assertEquals(warren.packet.DropReason.NONE, v.parse(b, 0, len, new warren.packet.FlowKey()));
        v.fixChecksums();
        return b.array();
    }

    private static void send(Fd flow, byte[] pkt) {
        Pointer p = Native.allocate(pkt.length);
        p.put(0, pkt, 0, pkt.length);
        assertEquals(pkt.length, Native.send(flow.get(), p, pkt.length, Native.MSG_NOSIGNAL));
    }

    private static ByteBuffer receive(Fd flow) throws Exception {
        assertTrue((Native.pollOne(flow.get(), Native.POLLIN, 5000) & Native.POLLIN) != 0, "a packet from the kernel");
        Pointer p = Native.allocate(65536);
        long n = Native.recv(flow.get(), p, 65536, 0);
        byte[] got = new byte[(int) n];
        p.get(0, got, 0, got.length);
        return ByteBuffer.wrap(got);
    }

    /** A flow handed to Bumblebee by hand (no SYN yet): our end of its socket and its pending Upgrade. */
    private record HandFlow(Fd flow, CompletableFuture<Reply> upgraded, long task) {}

    private static HandFlow upgrade(ControlClient c) throws Exception {
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
        CompletableFuture<Reply> upgraded;
        try (Fd theirs = Fd.adopt(sv[1])) {
            upgraded = c.call(Request.newBuilder().setUpgrade(Upgrade.newBuilder().setFdFlow(0)), List.of(theirs));
        }
        long task = 0;
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        while (task == 0 && System.nanoTime() < deadline) { // Upgrade has no Accepted: the newest upgrade task is it
            try (Reply r = c.call(Request.newBuilder().setList(warren.control.v1.List.getDefaultInstance()), List.of())
                    .get(5, TimeUnit.SECONDS)) {
                task = r.response().getListing().getTasksList().stream().filter(t -> t.getKind().equals("upgrade"))
                        .mapToLong(TaskInfo::getTask).max().orElse(0);
            }
        }
        return new HandFlow(Fd.adopt(sv[0]), upgraded, task);
    }

    /** SYN, the kernel's SYN-ACK, ACK; returns the kernel's sequence number after the SYN-ACK. */
    private static long handshake(Fd flow, int sport) throws Exception {
        send(flow, segment(sport, 0x02, 1000, 0, 1460, new byte[0]));
        ByteBuffer synAck = receive(flow);
        assertEquals(0x12, synAck.get(33) & 0x12, "the kernel answers the SYN");
        long kernelSeq = (synAck.getInt(24) & 0xFFFFFFFFL) + 1;
        send(flow, segment(sport, 0x10, 1001, kernelSeq, 0, new byte[0]));
        return kernelSeq;
    }

    /**
     * The flow sends {@code out} (at {@code flowSeq}), the kernel's socket reads it and answers
     * {@code back}; both are checked, and the flow ACKs.
     */
    private static void exchange(Fd flow, Fd kernelSide, int sport, long flowSeq, long kernelSeq, String out, String back)
            throws Exception {
        byte[] o = out.getBytes();
        send(flow, segment(sport, 0x18, flowSeq, kernelSeq, 0, o));
        Pointer p = Native.allocate(4096);
        byte[] got = new byte[o.length];
        for (int off = 0; off < got.length; ) {
            off += TcpSockets.read(kernelSide, p, got, off, got.length - off);
        }
        assertEquals(out, new String(got));
        byte[] b = back.getBytes();
        TcpSockets.writeFully(kernelSide, p, b, 0, b.length);
        ByteBuffer seg;
        do {
            seg = receive(flow);
        } while (seg.capacity() == 40); // a bare ACK of our data first, maybe
        int dataOff = 20 + ((seg.get(32) & 0xFF) >>> 4) * 4;
        assertEquals(back, new String(seg.array(), dataOff, seg.capacity() - dataOff));
        send(flow, segment(sport, 0x10, flowSeq + o.length, kernelSeq + b.length, 0, new byte[0]));
    }

    private static String ip(FiveTuple t, boolean src) throws Exception {
        return InetAddress.getByAddress((src ? t.getSrcIp() : t.getDstIp()).toByteArray()).getHostAddress();
    }

    @Test
    void aTracedFlowsHandshakeAndDataAppearInBothFormsAndNoOtherFlowsPackets(TestNetwork net) throws Exception {
        Path file = dir.resolve("flow.pcap");
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("bb.sock"), TRACED_CONFIG);
                ControlClient c = ControlClient.connect(d.control)) {
            // the other flow, established before the trace and busy during it
            HandFlow other = upgrade(c);
            long otherSeq = handshake(other.flow(), 5556);
            Reply otherUp = other.upgraded().get(10, TimeUnit.SECONDS);
            FiveTuple otherNat = otherUp.response().getUpgraded().getTranslated();
            Fd otherSock = otherUp.takeFd(0);

            HandFlow traced = upgrade(c);
            TraceRecorder rec;
            try (OutputStream out = Files.newOutputStream(file); PcapWriter pcap = new PcapWriter(out, 65_535)) {
                rec = new TraceRecorder(c, pcap, null).start(Trace.newBuilder().setTask(traced.task())
                        .setSeconds(60).build());
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
                while (rec.traceTask() == 0 && System.nanoTime() < deadline) {
                    Thread.sleep(5); // Accepted: the tap is in place
                }
                assertTrue(rec.traceTask() > 0, "the trace started");
                long seq = handshake(traced.flow(), 5555);
                Reply up = traced.upgraded().get(10, TimeUnit.SECONDS);
                FiveTuple nat = up.response().getUpgraded().getTranslated();
                try (Fd sock = up.takeFd(0)) {
                    exchange(other.flow(), otherSock, 5556, 1001, otherSeq, "other flow", "not traced");
                    exchange(traced.flow(), sock, 5555, 1001, seq, "ping from the flow", "pong from the kernel");
                    exchange(other.flow(), otherSock, 5556, 1011, otherSeq + 10, "other again", "still not");
                    // everything the trace saw is sent within 50 ms; end it by cancelling
                    Thread.sleep(200);
                    rec.cancel();
                    Response end = rec.await(10_000);
                    assertEquals("cancelled", end.getTraceEnded().getReason(), end.toString());
                    assertEquals(0, end.getTraceEnded().getDropped());
                }
                String natSrc = ip(nat, true) + "." + nat.getSrcPort();
                String natDst = ip(nat, false) + "." + nat.getDstPort();
                Tcpdump.Read read = Tcpdump.read(file);
                System.out.println(read.raw());
                String all = String.join("\n", read.packets());
                assertTrue(read.header().contains("link-type RAW"), read.raw());
                // SYN, SYN-ACK, ACK, data, bare ACK (maybe), data, ACK: each in both forms
                assertTrue(read.packets().size() >= 12, read.raw());
                assertEquals(1, pcapPacketsOf(read, "198.18.50.1.5555 > 198.18.99.9.80: Flags [S]"), all);
                assertEquals(1, pcapPacketsOf(read, natSrc + " > " + natDst + ": Flags [S]"), all);
                assertEquals(1, pcapPacketsOf(read, natDst + " > " + natSrc + ": Flags [S.]"), all);
                assertEquals(1, pcapPacketsOf(read, "198.18.99.9.80 > 198.18.50.1.5555: Flags [S.]"), all);
                assertEquals(1, pcapPacketsOf(read, "198.18.50.1.5555 > 198.18.99.9.80: Flags [P.], cksum"), all);
                assertEquals(1, pcapPacketsOf(read, natSrc + " > " + natDst + ": Flags [P.]"), all);
                assertTrue(all.contains("length 18"), "the flow's data (18 bytes): " + all);
                assertTrue(all.contains("length 20"), "the kernel's data (20 bytes): " + all);
                assertEquals(1, pcapPacketsOf(read, natDst + " > " + natSrc + ": Flags [P.]"), all);
                assertEquals(1, pcapPacketsOf(read, "198.18.99.9.80 > 198.18.50.1.5555: Flags [P.]"), all);
                for (String p : read.packets()) {
                    assertTrue(p.contains("(correct)"), "TCP checksum checked and right: " + p);
                    assertFalse(p.contains("incorrect") || p.contains("bad cksum"), p);
                    assertFalse(p.contains(".5556") || p.contains("." + otherNat.getSrcPort() + " ")
                            || p.contains("." + otherNat.getSrcPort() + ":"), "the other flow's packet: " + p);
                }
                assertEquals(pcap.packets(), read.packets().size(), "every packet written was read");
            }
            otherSock.close();
            traced.flow().close();
            other.flow().close();
        }
    }

    private static int pcapPacketsOf(Tcpdump.Read r, String text) {
        return (int) r.packets().stream().filter(p -> p.contains(text)).count();
    }

    /**
     * Bulk TCP through an on-ramp flow: the loop thread's allocated bytes per packet with no trace
     * (must be ~0), and its CPU time per packet with no trace and with a trace of that flow.
     */
    @Test
    void theLoopAllocatesNothingPerPacketWithNoTraceAndTheTapsCostIsMeasured(TestNetwork net) throws Exception {
        CompletableFuture<Fd> accepted = new CompletableFuture<>();
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("bb.sock"), TRACED_CONFIG);
                ControlClient c = ControlClient.connect(d.control);
                OnRamp ramp = new OnRamp(net.namespace("onramp").name, c, r -> {
                    accepted.complete(r.takeFd(r.response().getUpgraded().getFdSocket()));
                    r.close();
                })) {
            Fd client = Netns.call("/run/netns/" + ramp.client,
                    () -> TcpSockets.connect(new InetSocketAddress(InetAddress.getByName("198.18.99.9"), 80)));
            Fd server = accepted.get(10, TimeUnit.SECONDS);
            long task;
            try (Reply r = c.call(Request.newBuilder().setList(warren.control.v1.List.getDefaultInstance()), List.of())
                    .get(5, TimeUnit.SECONDS)) {
                task = r.response().getListing().getTasks(0).getTask();
            }
            com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
            long loop = Thread.getAllStackTraces().keySet().stream().filter(t -> t.getName().equals("bumblebee-loop"))
                    .findFirst().orElseThrow().getId();
            pump(client, server, 16L << 20); // warm-up
            long[] off = measure(c, mx, loop, client, server, 32L << 20);
            double perPacket = (double) off[0] / off[2];
            System.out.printf("bumblebee loop, no trace: %d packets, %d bytes allocated (%.4f B/packet), %.0f ns CPU/packet%n",
                    off[2], off[0], perPacket, (double) off[1] / off[2]);
            // a per-packet allocation of even 8 bytes would be >= 8 B/packet here
            assertTrue(perPacket < 0.5, off[0] + " bytes allocated on the loop for " + off[2] + " packets");

            for (int round = 0; round < 2; round++) { // the first warms the drain and encoding code up
                Path file = dir.resolve("bulk" + round + ".pcap");
                try (OutputStream out = Files.newOutputStream(file); PcapWriter pcap = new PcapWriter(out, 128)) {
                    TraceRecorder rec = new TraceRecorder(c, pcap, null).start(Trace.newBuilder().setTask(task)
                            .setMaxPackets(-1).setSeconds(120).setSnaplen(128).build());
                    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
                    while (rec.traceTask() == 0 && System.nanoTime() < deadline) {
                        Thread.sleep(5);
                    }
                    long[] on = measure(c, mx, loop, client, server, round == 0 ? 16L << 20 : 32L << 20);
                    rec.cancel();
                    Response end = rec.await(20_000);
                    assertEquals("cancelled", end.getTraceEnded().getReason());
                    assertTrue(end.getTraceEnded().getPackets() > 0);
                    if (round == 1) {
                        System.out.printf("bumblebee loop, traced (snaplen 128, 2 copies per forwarded packet: as read,"
                                + " as written): %d packets, %.0f ns CPU/packet (drains and TraceChunk encoding included),"
                                + " %d copied, %d dropped%n", on[2], (double) on[1] / on[2],
                                end.getTraceEnded().getPackets(), end.getTraceEnded().getDropped());
                    }
                }
            }
            long[] again = measure(c, mx, loop, client, server, 32L << 20);
            System.out.printf("bumblebee loop, no trace again: %d packets, %.4f B/packet, %.0f ns CPU/packet%n",
                    again[2], (double) again[0] / again[2], (double) again[1] / again[2]);
            assertTrue((double) again[0] / again[2] < 0.5, "no allocation once the trace has ended: " + again[0]);
            client.close();
            server.close();
        }
    }

    /** Runs a transfer; returns {allocated bytes, CPU ns, packets} of the loop thread. */
    private long[] measure(ControlClient c, com.sun.management.ThreadMXBean mx, long loop, Fd client, Fd server,
            long bytes) throws Exception {
        long p0 = packets(c);
        long a0 = mx.getThreadAllocatedBytes(loop);
        long t0 = mx.getThreadCpuTime(loop);
        pump(client, server, bytes);
        long a1 = mx.getThreadAllocatedBytes(loop);
        long t1 = mx.getThreadCpuTime(loop);
        return new long[] {a1 - a0, t1 - t0, packets(c) - p0};
    }

    private static long packets(ControlClient c) throws Exception {
        try (Reply r = c.call(Request.newBuilder().setStatus(warren.control.v1.Status.getDefaultInstance()), List.of())
                .get(5, TimeUnit.SECONDS)) {
            var m = r.response().getStatus().getCountersMap();
            return m.getOrDefault("packets.flow_to_kernel", 0L) + m.getOrDefault("packets.kernel_to_flow", 0L);
        }
    }

    /** Writes {@code n} bytes into {@code from} and reads them all at {@code to}. */
    private void pump(Fd from, Fd to, long n) throws Exception {
        Future<?> w = pool.submit(() -> {
            byte[] buf = new byte[1 << 16];
            Pointer p = Native.allocate(buf.length);
            for (long s = 0; s < n; s += buf.length) {
                TcpSockets.writeFully(from, p, buf, 0, (int) Math.min(buf.length, n - s));
            }
            return null;
        });
        byte[] buf = new byte[1 << 16];
        Pointer p = Native.allocate(buf.length);
        long got = 0;
        while (got < n) {
            int r = TcpSockets.read(to, p, buf, 0, (int) Math.min(buf.length, n - got));
            assertTrue(r > 0, "EOF after " + got + " bytes");
            got += r;
        }
        w.get(60, TimeUnit.SECONDS);
    }
}
