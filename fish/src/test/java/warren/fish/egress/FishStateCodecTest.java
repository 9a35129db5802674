package warren.fish.egress;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import com.google.protobuf.ByteString;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import warren.control.v1.FiveTuple;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fish.conntrack.Ctnetlink;
import warren.handoff.v1.FishClient;
import warren.handoff.v1.FishState;
import warren.handoff.v1.PendingCall;
import warren.handoff.v1.StoredTask;
import warren.handoff.v1.StoredTasks;

/** Fish's flow table survives the handoff encoding, fds included; a flow outside its range is refused. */
class FishStateCodecTest {

    @Test
    void clientsFlowsAndReservationsRoundTrip() throws Exception {
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
        try (Fd a = Fd.adopt(sv[0]); Fd b = Fd.adopt(sv[1])) {
            FiveTuple tcp = FiveTuple.newBuilder().setProtocol(6).setSrcIp(ByteString.copyFrom(new byte[] {(byte) 198, 18, 60, 1}))
                    .setSrcPort(45000).setDstIp(ByteString.copyFrom(new byte[] {(byte) 198, 18, 0, 2})).setDstPort(80).build();
            FishStateCodec.ClientRecord c = new FishStateCodec.ClientRecord("a", new byte[] {(byte) 198, 18, (byte) 202, 5},
                    20000, 20009, a.get(), new byte[] {(byte) 198, 18, 60, 1}, 20002, 10, 12, 1000, 1500, 7,
                    ByteString.copyFromUtf8("m"), List.of(new FishStateCodec.FlowRecord(tcp, 20001, true, true, false, false,
                            22, 2500, 1234)), 41, true);
            FishStateCodec.ClientRecord idle = new FishStateCodec.ClientRecord("b", new byte[] {(byte) 198, 18, (byte) 202, 5},
                    21000, 21009, -1, new byte[0], 21000, 0, 0, 0, 0, 8, ByteString.EMPTY, List.of(), 42, false);
            List<Integer> fds = new ArrayList<>();
            FishState state = FishStateCodec.write(List.of(c, idle), fds);
            assertEquals(List.of(a.get()), fds);
            FishState parsed = FishState.parseFrom(state.toByteArray());
            List<Fd> received = List.of(Fd.adopt(Native.fcntl(a.get(), Native.F_DUPFD_CLOEXEC, 0)));
            List<FishStateCodec.ClientRecord> back = FishStateCodec.read(parsed, received);
            assertEquals(2, back.size());
            FishStateCodec.ClientRecord r = back.get(0);
            assertEquals("a", r.tenant());
            assertEquals(41, r.callRef());
            assertEquals(42, back.get(1).callRef());
            assertArrayEquals(c.softIp(), r.softIp());
            assertEquals(c.first(), r.first());
            assertEquals(c.last(), r.last());
            assertArrayEquals(c.identity(), r.identity());
            assertEquals(c.nextPort(), r.nextPort());
            assertEquals(c.bytesIn(), r.bytesIn());
            assertEquals(c.flows(), r.flows());
            assertEquals(Native.fstat(a.get())[3], Native.fstat(r.fd())[3], "the same socket");
            Native.close(r.fd());
            assertEquals(-1, back.get(1).fd());
            FishState bad = parsed.toBuilder().setClients(0, parsed.getClients(0).toBuilder()
                    .setFlows(0, parsed.getClients(0).getFlows(0).toBuilder().setEgressPort(30000))).build();
            assertThrows(IllegalArgumentException.class, () -> FishStateCodec.read(bad, List.of()));
        }
    }

    /**
     * After a crash a client's flows are its conntrack entries (mark = its task and the client's
     * source port, source = its soft-unicast IP and a port of its range), in either orientation: a
     * refresh's delete/create gap lets a server's packet make the entry with the server's tuple as
     * the original, and the recovery looked only at original tuples, so such a flow was not rebuilt
     * and its next packet got a new port (the server answered RST: seen once in a 10-minute soak).
     */
    @Test
    void aRecoveryRebuildsFlowsFromEntriesInEitherOrientation() throws Exception {
        java.net.InetAddress soft = java.net.InetAddress.getByName("198.18.202.5");
        java.net.InetAddress server = java.net.InetAddress.getByName("198.18.203.2");
        java.net.InetAddress other = java.net.InetAddress.getByName("198.18.202.6");
        int task = 9;
        FishClient client = FishClient.newBuilder().setTenant("t").setSoftUnicastIp(ByteString.copyFrom(soft.getAddress()))
                .setPortFirst(20000).setPortLast(20009).setIdentity(ByteString.copyFrom(new byte[] {(byte) 198, 18, 60, 1}))
                .setNextPort(20003).build();
        StoredTasks stored = StoredTasks.newBuilder().addExtras("fish0")
                .addTasks(StoredTask.newBuilder().setCall(PendingCall.newBuilder().setTask(task)).setItem("fish.egress")
                        .setPayload(client.toByteString()))
                .addFdCounts(1).build();
        Ctnetlink.Tuple asMade = new Ctnetlink.Tuple(6, soft, server, 20001, 9000);
        Ctnetlink.Tuple reversed = new Ctnetlink.Tuple(6, soft, server, 20002, 9000);
        List<Ctnetlink.Entry> entries = List.of(
                entry(asMade, asMade.reversed(), (task << 16) | 41001),
                entry(reversed.reversed(), reversed, (task << 16) | 41002), // the server's packet made it
                entry(new Ctnetlink.Tuple(6, soft, server, 20003, 9000), new Ctnetlink.Tuple(6, server, soft, 9000, 20003),
                        (7 << 16) | 41003), // another task's
                entry(new Ctnetlink.Tuple(6, soft, server, 30000, 9000), new Ctnetlink.Tuple(6, server, soft, 9000, 30000),
                        (task << 16) | 41004), // outside the range
                entry(new Ctnetlink.Tuple(6, server, other, 9000, 20004), new Ctnetlink.Tuple(6, other, server, 20004, 9000),
                        (task << 16) | 41005)); // another soft-unicast IP's
        FishState st = FishStateCodec.fromFdStore(stored, "fish.egress", "fish0", entries);
        List<warren.handoff.v1.FishFlow> flows = st.getClients(0).getFlowsList();
        assertEquals(2, flows.size(), flows.toString());
        assertEquals(20001, flows.get(0).getEgressPort());
        assertEquals(41001, flows.get(0).getClient().getSrcPort());
        assertEquals(20002, flows.get(1).getEgressPort(), "the entry in the reply's orientation: " + flows.get(1));
        assertEquals(41002, flows.get(1).getClient().getSrcPort());
        assertEquals(9000, flows.get(1).getClient().getDstPort());
        assertArrayEquals(server.getAddress(), flows.get(1).getClient().getDstIp().toByteArray());
    }

    private static Ctnetlink.Entry entry(Ctnetlink.Tuple original, Ctnetlink.Tuple reply, int mark) {
        return new Ctnetlink.Entry(original, reply, 100, Ctnetlink.STATUS_ESTABLISHED | Ctnetlink.IPS_FIXED_TIMEOUT,
                Ctnetlink.TCP_CONNTRACK_ESTABLISHED, mark, 1, 0, 0, 0, 0);
    }
}
