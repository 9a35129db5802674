package warren.fish;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Egress;
import warren.control.v1.EndReason;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.daemon.client.Reply;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.linux.net.Netns;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.Packets;
import warren.netns.testing.TestNetwork;

/**
 * A client on a SOCK_DGRAM pair, whose peer's close Fish cannot see (no EOF, no hang-up): it ends
 * once it has had no flow and no packet for fish.client_idle_timeout (IDLE_TIMEOUT), or at once
 * when a reply finds its peer gone; either way its range is free again.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class FishDatagramClientTest {
    @TempDir
    Path dir;

    private static CompletableFuture<Reply> egress(Topology t, Fd theirs, String tenant, int first, int last)
            throws Exception {
        CompletableFuture<Response> accepted = new CompletableFuture<>();
        CompletableFuture<Reply> r = t.control.call(Request.newBuilder().setEgress(Egress.newBuilder().setFdPackets(0)
                .setSoftUnicastIp(ByteString.copyFrom(InetAddress.getByName(Topology.SOFT).getAddress()))
                .setPortFirst(first).setPortLast(last).setTenant(tenant)), List.of(theirs), accepted::complete);
        CompletableFuture.anyOf(accepted, r).get(10, TimeUnit.SECONDS);
        assertTrue(accepted.isDone(), () -> "refused: " + r.join().response());
        return r;
    }

    @Test
    void aDatagramClientWhosePeerClosedEndsAndItsRangeIsFreeAgain(TestNetwork net) throws Exception {
        try (Topology t = new Topology(net, dir, "fish.client_idle_timeout = 1s\nfish.udp_timeout = 500ms\n");
                DatagramSocket silent = Netns.call("/run/netns/" + t.internet.name,
                        () -> new DatagramSocket(9999, t.server))) { // receives, never answers
            byte[] client = {(byte) 198, 18, 60, 1};
            byte[] server = t.server.getAddress();

            // no answer ever comes: the client ends by the idle timeout once its flow has expired
            int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_DGRAM | Native.SOCK_CLOEXEC);
            CompletableFuture<Reply> quiet;
            try (Fd theirs = Fd.adopt(sv[1]); Fd mine = Fd.adopt(sv[0])) {
                quiet = egress(t, theirs, "quiet", 20000, 20009);
                Packets.send(mine, Packets.udp4(client, 5000, server, 9999, "one"));
                FishSoftIpTest.waitFor(t, "reservations.made", 1);
            } // the peer closes: nothing Fish can see on a datagram socket
            long t0 = System.nanoTime();
            try (Reply r = quiet.get(30, TimeUnit.SECONDS)) {
                assertEquals(Response.BodyCase.EGRESS_ENDED, r.response().getBodyCase(), r.toString());
                assertEquals(EndReason.IDLE_TIMEOUT, r.response().getEgressEnded().getReason(), r.toString());
                assertEquals(1, r.response().getEgressEnded().getPacketsOut());
            }
            long waited = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
            assertTrue(waited < 10_000, "ended " + waited + " ms after the close (flow 0.5 s + client 1 s)");

            // a reply that finds the peer gone (ECONNREFUSED) ends the client at once
            sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_DGRAM | Native.SOCK_CLOEXEC);
            CompletableFuture<Reply> answered;
            try (Fd theirs = Fd.adopt(sv[1])) {
                answered = egress(t, theirs, "answered", 20000, 20009); // the same range: free again
            }
            try (Fd mine = Fd.adopt(sv[0])) {
                Packets.send(mine, Packets.udp4(client, 5001, server, 9999, "two"));
                silent.setSoTimeout(5000);
                DatagramPacket p = new DatagramPacket(new byte[64], 64);
                do {
                    silent.receive(p);
                } while (!new String(p.getData(), 0, p.getLength(), StandardCharsets.US_ASCII).equals("two"));
                mine.close(); // gone before the answer comes back
                silent.send(new DatagramPacket(new byte[] {1}, 1, p.getAddress(), p.getPort()));
            }
            try (Reply r = answered.get(30, TimeUnit.SECONDS)) {
                assertEquals(EndReason.FLOW_ENDED, r.response().getEgressEnded().getReason(), "ended by the refused"
                        + " reply, not by the idle timeout: " + r);
            }
        }
    }
}
