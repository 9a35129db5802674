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
import warren.handoff.v1.FishState;

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
}
