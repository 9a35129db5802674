package warren.bumblebee.nat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.handoff.v1.BumblebeeState;

/** The flow/NAT table survives the handoff encoding: states, tuples, counters, and its fds. */
class FlowTableCodecTest {

    @Test
    void aTableRoundTripsThroughTheHandoffEncoding() throws Exception {
        long now = System.nanoTime();
        Flow[] table = new Flow[8];
        for (int i = 0; i < table.length; i++) {
            table[i] = new Flow(i);
        }
        List<Fd> sockets = new ArrayList<>();
        // slot 1: an established IPv4 TCP flow
        Flow tcp = table[1];
        tcp.state = Flow.ACTIVE;
        tcp.haveKey = true;
        tcp.original.version = 4;
        tcp.original.protocol = 6;
        tcp.original.src[0] = (byte) 198;
        tcp.original.src[1] = 18;
        tcp.original.src[3] = 1;
        tcp.original.dst[0] = (byte) 198;
        tcp.original.dst[1] = 18;
        tcp.original.dst[3] = 2;
        tcp.original.srcPort = 40000;
        tcp.original.dstPort = 443;
        tcp.flowFd = pair(sockets);
        tcp.finFromFlow = true;
        tcp.packetsIn = 10;
        tcp.packetsOut = 12;
        tcp.bytesIn = 1000;
        tcp.bytesOut = 15000;
        tcp.lastActiveNanos = now - 2_000_000_000L;
        tcp.natPort = 12345;
        // slot 5: an IPv6 UDP flow with its datagram socket
        Flow udp = table[5];
        udp.state = Flow.ACTIVE;
        udp.haveKey = true;
        udp.udp = true;
        udp.original.version = 6;
        udp.original.protocol = 17;
        udp.original.src[0] = (byte) 0xfd;
        udp.original.src[15] = 1;
        udp.original.dst[0] = (byte) 0xfd;
        udp.original.dst[15] = 2;
        udp.original.srcPort = 5353;
        udp.original.dstPort = 53;
        udp.flowFd = pair(sockets);
        udp.udpFd = pair(sockets);
        udp.lastActiveNanos = now;
        udp.vnet = true; // its messages carry a virtio_net_hdr (Upgrade.vnet_hdr)
        // slot 6: in quarantine, no fds
        table[6].state = Flow.QUARANTINED;
        // slot 7: waiting for its handshake, no key yet
        table[7].state = Flow.RESERVED;
        table[7].flowFd = pair(sockets);

        List<Integer> fds = new ArrayList<>();
        BumblebeeState state = FlowTableCodec.write(table, 1500, now, fds);
        assertEquals(4, state.getFlowsCount(), "only slots that are not free");
        assertEquals(4, fds.size());
        BumblebeeState parsed = BumblebeeState.parseFrom(state.toByteArray());
        List<Fd> received = new ArrayList<>();
        for (int fd : fds) {
            received.add(Fd.adopt(Native.fcntl(fd, Native.F_DUPFD_CLOEXEC, 0))); // as SCM_RIGHTS would
        }
        Flow[] back = FlowTableCodec.read(parsed, received, now);
        assertEquals(table.length, back.length);
        for (int i = 0; i < table.length; i++) {
            Flow a = table[i];
            Flow b = back[i];
            assertEquals(a.state, b.state, "slot " + i);
            assertEquals(a.haveKey, b.haveKey);
            if (a.haveKey) {
                assertTrue(a.original.matches(b.original), a.original + " vs " + b.original);
            }
            assertEquals(a.udp, b.udp);
            assertEquals(a.vnet, b.vnet, "slot " + i + ": vnet_hdr survives");
            assertEquals(a.flowFd >= 0, b.flowFd >= 0);
            assertEquals(a.udpFd >= 0, b.udpFd >= 0);
            assertEquals(a.packetsIn, b.packetsIn);
            assertEquals(a.bytesOut, b.bytesOut);
            assertEquals(a.finFromFlow, b.finFromFlow);
            if (a.state != Flow.FREE) {
                assertEquals(a.natPort, b.natPort); // a free slot's port starts anywhere (random per table)
            }
            assertEquals(a.lastActiveNanos / 1_000_000, b.lastActiveNanos / 1_000_000, 1);
            if (b.flowFd >= 0) {
                assertEquals(Native.fstat(a.flowFd)[3], Native.fstat(b.flowFd)[3], "the same socket");
                Native.close(b.flowFd);
            }
            if (b.udpFd >= 0) {
                Native.close(b.udpFd);
            }
        }
        assertEquals("tcp 198.18.0.1:40000 -> 198.18.0.2:443", back[1].original.toString());
        assertThrows(IllegalArgumentException.class,
                () -> FlowTableCodec.read(parsed.toBuilder().setFormat(2).build(), received, now));
        Fd.closeAll(sockets);
    }

    private static int pair(List<Fd> keep) throws Exception {
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
        keep.add(Fd.adopt(sv[0]));
        keep.add(Fd.adopt(sv[1]));
        return sv[0];
    }
}
