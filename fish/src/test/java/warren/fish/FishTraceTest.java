package warren.fish;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import java.io.OutputStream;
import java.net.InetAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Egress;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Trace;
import warren.daemon.client.PcapWriter;
import warren.daemon.client.TraceRecorder;
import warren.daemon.testing.Tcpdump;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.netns.TunPump;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;

/**
 * Trace of one Fish client beside another: the pcap (read by tcpdump) holds its HTTP exchange's
 * handshake and data as the client sent and got them and as egressed from the soft-unicast IP
 * and a port of its range, with right checksums, and nothing of the other client.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class FishTraceTest {
    @TempDir
    Path dir;
    private final List<AutoCloseable> pumps = new ArrayList<>();

    @AfterEach
    void tearDown() throws Exception {
        for (AutoCloseable p : pumps) {
            p.close();
        }
    }

    /** A client namespace with address {@code addr} and its own Egress; returns its task number. */
    private long client(Topology t, TestNetwork.Namespace ns, String addr, int first, int last) throws Exception {
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
        CompletableFuture<Response> accepted = new CompletableFuture<>();
        try (Fd theirs = Fd.adopt(sv[1])) {
            t.control.call(Request.newBuilder().setEgress(Egress.newBuilder().setFdPackets(0)
                    .setSoftUnicastIp(ByteString.copyFrom(InetAddress.getByName(Topology.SOFT).getAddress()))
                    .setPortFirst(first).setPortLast(last).setTenant(ns.name)), List.of(theirs), accepted::complete)
                    .whenComplete((r, e) -> {
                        if (r != null) {
                            r.close();
                        }
                    });
        }
        long task = accepted.get(10, TimeUnit.SECONDS).getAccepted().getTask();
        pumps.add(new TunPump("/run/netns/" + ns.name, "cl0", 1500, List.of(addr + "/24"), Fd.adopt(sv[0])));
        return task;
    }

    private static void curl(TestNetwork.Namespace ns, Topology t, String expect) throws Exception {
        TestNetwork.Result r = ns.exec("curl", "-sS", "--max-time", "10", "http://" + t.link.v4b() + "/");
        assertEquals(0, r.status(), r.output() + "\n" + t.net.dump());
        assertTrue(r.output().startsWith("you are " + Topology.SOFT + ":" + expect), r.output());
    }

    @Test
    void aTracedClientsExchangeAppearsInBothFormsAndNoOtherClientsPackets(TestNetwork net) throws Exception {
        Path file = dir.resolve("client.pcap");
        try (Topology t = new Topology(net, dir, "")) {
            TestNetwork.Namespace a = net.namespace("cl-a");
            TestNetwork.Namespace b = net.namespace("cl-b");
            long traced = client(t, a, "198.18.60.1", 20000, 20009);
            client(t, b, "198.18.61.1", 20100, 20109);
            curl(b, t, "2010"); // b is live before the trace and during it
            try (OutputStream out = Files.newOutputStream(file); PcapWriter pcap = new PcapWriter(out, 65_535)) {
                TraceRecorder rec = new TraceRecorder(t.control, pcap, null)
                        .start(Trace.newBuilder().setTask(traced).setSeconds(60).build());
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
                while (rec.traceTask() == 0 && System.nanoTime() < deadline) {
                    Thread.sleep(5);
                }
                assertTrue(rec.traceTask() > 0, "the trace started");
                curl(a, t, "2000");
                curl(b, t, "2010");
                Thread.sleep(200); // everything seen is sent within 50 ms
                rec.cancel();
                Response end = rec.await(10_000);
                assertEquals("cancelled", end.getTraceEnded().getReason(), end.toString());
                assertEquals(0, end.getTraceEnded().getDropped());
                assertEquals(pcap.packets(), end.getTraceEnded().getPackets());
            }
            Tcpdump.Read read = Tcpdump.read(file);
            System.out.println(read.raw());
            String all = String.join("\n", read.packets());
            String server = t.link.v4b();
            assertTrue(read.header().contains("link-type RAW"), read.raw());
            // the handshake, as the client sent and got it and as it left and came back
            assertEquals(1, count(read, "198.18.60.1.", " > " + server + ".80: Flags [S]"), all);
            assertEquals(1, count(read, Topology.SOFT + ".2000", " > " + server + ".80: Flags [S]"), all);
            assertEquals(1, count(read, server + ".80 > " + Topology.SOFT + ".2000", ": Flags [S.]"), all);
            assertEquals(1, count(read, server + ".80 > 198.18.60.1.", ": Flags [S.]"), all);
            // the request and the answer, both forms
            assertEquals(1, count(read, "198.18.60.1.", "GET / HTTP/1.1"), all);
            assertEquals(1, count(read, Topology.SOFT + ".2000", "GET / HTTP/1.1"), all);
            assertEquals(1, count(read, server + ".80 > " + Topology.SOFT + ".2000", "HTTP/1.1 200 OK"), all);
            assertEquals(1, count(read, server + ".80 > 198.18.60.1.", "HTTP/1.1 200 OK"), all);
            for (String p : read.packets()) {
                assertFalse(p.contains("incorrect") || p.contains("bad cksum"), p);
                assertTrue(!p.contains("proto TCP") || p.contains("(correct)"), "TCP checksum checked and right: " + p);
                assertFalse(p.contains("198.18.61.1") || p.contains(Topology.SOFT + ".2010"), "the other client's: " + p);
            }
        }
    }

    /** Packets whose text has {@code from} and then {@code then}. */
    private static long count(Tcpdump.Read r, String from, String then) {
        return r.packets().stream().filter(p -> p.contains(from) && p.indexOf(then) > p.indexOf(from)).count();
    }
}
