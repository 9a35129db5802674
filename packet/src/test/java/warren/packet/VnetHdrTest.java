package warren.packet;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** Every malformed virtio_net_hdr is refused with its own DropReason; a hostile loop never throws. */
class VnetHdrTest {
    private final PacketView view = new PacketView();
    private final FlowKey key = new FlowKey();

    @Test
    void fieldsAreLittleEndian() {
        ByteBuffer b = ByteBuffer.allocate(12);
        VnetHdr.write(b, 1, VnetHdr.F_NEEDS_CSUM, VnetHdr.GSO_TCPV4 | VnetHdr.GSO_ECN, 66, 1448, 20, 16);
        assertEquals(1, b.get(1));
        assertEquals((byte) 0x81, b.get(2));
        assertEquals(66, b.get(3));
        assertEquals(0xa8, b.get(5) & 0xFF); // 1448 = 0x05a8
        assertEquals(0x05, b.get(6));
        assertEquals(1448, VnetHdr.gsoSize(b, 1));
        assertEquals(20, VnetHdr.csumStart(b, 1));
        assertEquals(16, VnetHdr.csumOffset(b, 1));
        assertEquals(66, VnetHdr.hdrLen(b, 1));
        VnetHdr.writeNone(b, 1);
        for (int i = 1; i < 11; i++) {
            assertEquals(0, b.get(i));
        }
    }

    @Test
    void wellFormedHeadersPass() {
        ByteBuffer b = ByteBuffer.allocateDirect(VnetHdr.MAX_MESSAGE);
        for (int version : new int[] {4, 6}) {
            for (int proto : new int[] {Ip.TCP, Ip.UDP}) {
                int len = SuperPackets.build(b, 0, version, proto, 9000, 1000, Ip.TCP_ACK);
                assertEquals(DropReason.NONE, VnetHdr.parse(b, 0, len, view, key, 1500), version + "/" + proto);
                if (proto == Ip.TCP) {
                    b.put(1, (byte) (b.get(1) | VnetHdr.GSO_ECN));
                    assertEquals(DropReason.NONE, VnetHdr.parse(b, 0, len, view, key, 1500), "TCP with ECN");
                }
                VnetHdr.writeNone(b, 0); // a plain packet: the field is then not partial, but that is not checked
                assertEquals(DropReason.NONE, VnetHdr.parse(b, 0, len, view, key, 1500));
                b.put(0, (byte) VnetHdr.F_DATA_VALID);
                assertEquals(DropReason.NONE, VnetHdr.parse(b, 0, len, view, key, 1500));
                VnetHdr.write(b, 0, 0, 0, 0, 0xFFFF, 0, 0); // gso_size of a NONE packet is ignored
                assertEquals(DropReason.NONE, VnetHdr.parse(b, 0, len, view, key, 1500));
            }
        }
    }

    @Test
    void eachMalformedHeaderHasItsDropReason() {
        ByteBuffer b = ByteBuffer.allocateDirect(VnetHdr.MAX_MESSAGE);
        int tcp4 = SuperPackets.build(b, 0, 4, Ip.TCP, 9000, 1000, Ip.TCP_ACK);
        expect(b, tcp4, DropReason.BAD_VNET_FLAGS, 4, VnetHdr.GSO_TCPV4, 0, 1000, 20, 16); // RSC_INFO
        expect(b, tcp4, DropReason.BAD_VNET_FLAGS, 3, VnetHdr.GSO_TCPV4, 0, 1000, 20, 16);
        expect(b, tcp4, DropReason.BAD_GSO_TYPE, 1, VnetHdr.GSO_UDP, 0, 1000, 20, 16); // UFO
        expect(b, tcp4, DropReason.BAD_GSO_TYPE, 1, 2, 0, 1000, 20, 16); // unknown
        expect(b, tcp4, DropReason.BAD_GSO_TYPE, 1, VnetHdr.GSO_ECN, 0, 1000, 20, 16); // NONE | ECN
        expect(b, tcp4, DropReason.BAD_GSO_TYPE, 1, VnetHdr.GSO_TCPV6, 0, 1000, 20, 16); // v6 type, v4 packet
        expect(b, tcp4, DropReason.BAD_GSO_TYPE, 1, VnetHdr.GSO_UDP_L4, 0, 1000, 20, 16); // UDP type, TCP packet
        expect(b, tcp4, DropReason.GSO_WITHOUT_CSUM, 0, VnetHdr.GSO_TCPV4, 0, 1000, 0, 0);
        expect(b, tcp4, DropReason.BAD_GSO_SIZE, 1, VnetHdr.GSO_TCPV4, 0, 0, 20, 16);
        expect(b, tcp4, DropReason.BAD_GSO_SIZE, 1, VnetHdr.GSO_TCPV4, 0, 0xFFFF, 20, 16);
        expect(b, tcp4, DropReason.BAD_GSO_SIZE, 1, VnetHdr.GSO_TCPV4, 0, 1449, 20, 16); // 52 + 1449 > 1500
        expect(b, tcp4, DropReason.NONE, 1, VnetHdr.GSO_TCPV4, 0, 1448, 20, 16); // 52 + 1448 = 1500
        expect(b, tcp4, DropReason.BAD_CSUM_START, 1, VnetHdr.GSO_TCPV4, 0, 1000, 19, 16);
        expect(b, tcp4, DropReason.BAD_CSUM_START, 1, VnetHdr.GSO_TCPV4, 0, 1000, 60000, 16);
        expect(b, tcp4, DropReason.BAD_CSUM_OFFSET, 1, VnetHdr.GSO_TCPV4, 0, 1000, 20, 6);
        expect(b, tcp4, DropReason.BAD_CSUM_OFFSET, 1, VnetHdr.GSO_TCPV4, 0, 1000, 20, 0xFFFF);
        expect(b, tcp4, DropReason.BAD_CSUM_START, 1, 0, 0, 0, 0, 16); // NEEDS_CSUM without GSO too
        expect(b, tcp4, DropReason.BAD_VNET_HDR_LEN, 1, VnetHdr.GSO_TCPV4, 9053, 1000, 20, 16);
        expect(b, tcp4, DropReason.NONE, 1, VnetHdr.GSO_TCPV4, 9052, 1000, 20, 16); // hdr_len = the whole packet
        expect(b, tcp4, DropReason.BAD_VNET_HDR_LEN, 0, 0, 0xFFFF, 0, 0, 0);

        int tcp6 = SuperPackets.build(b, 0, 6, Ip.TCP, 9000, 1000, Ip.TCP_ACK);
        expect(b, tcp6, DropReason.BAD_GSO_TYPE, 1, VnetHdr.GSO_TCPV4, 0, 1000, 40, 16); // v4 type, v6 packet
        expect(b, tcp6, DropReason.BAD_CSUM_START, 1, VnetHdr.GSO_TCPV6, 0, 1000, 20, 16);

        int udp = SuperPackets.build(b, 0, 4, Ip.UDP, 8000, 1000, 0);
        expect(b, udp, DropReason.BAD_GSO_TYPE, 1, VnetHdr.GSO_UDP_L4 | VnetHdr.GSO_ECN, 0, 1000, 20, 6);
        expect(b, udp, DropReason.BAD_GSO_TYPE, 1, VnetHdr.GSO_TCPV4, 0, 1000, 20, 6);
        expect(b, udp, DropReason.BAD_CSUM_OFFSET, 1, VnetHdr.GSO_UDP_L4, 0, 1000, 20, 16);
        expect(b, udp, DropReason.BAD_GSO_SIZE, 1, VnetHdr.GSO_UDP_L4, 0, 62, 20, 6); // 130 segments
        expect(b, udp, DropReason.NONE, 1, VnetHdr.GSO_UDP_L4, 0, 63, 20, 6); // 127 segments
        expect(b, udp, DropReason.GSO_WITHOUT_CSUM, 2, VnetHdr.GSO_UDP_L4, 0, 1000, 0, 0);

        ByteBuffer icmp = Packets.build(4, Ip.ICMP, Packets.v4(198, 18, 0, 1), Packets.v4(198, 18, 0, 2), 7, 0, 30);
        ByteBuffer m = ByteBuffer.allocate(10 + icmp.capacity()).put(10, icmp, 0, icmp.capacity());
        VnetHdr.write(m, 0, 1, 0, 0, 0, 20, 2);
        assertEquals(DropReason.BAD_CSUM_START, VnetHdr.parse(m, 0, m.capacity(), view, key, 1500), "ICMP with NEEDS_CSUM");
        VnetHdr.write(m, 0, 1, VnetHdr.GSO_UDP_L4, 0, 8, 20, 6);
        assertEquals(DropReason.BAD_GSO_TYPE, VnetHdr.parse(m, 0, m.capacity(), view, key, 1500), "ICMP with GSO");
    }

    @Test
    void truncatedMessagesAreTruncated() {
        ByteBuffer b = ByteBuffer.allocateDirect(VnetHdr.MAX_MESSAGE);
        int len = SuperPackets.build(b, 0, 4, Ip.TCP, 9000, 1000, Ip.TCP_ACK);
        assertEquals(DropReason.TRUNCATED, VnetHdr.parse(b, 0, 9, view, key, 1500), "shorter than a header");
        assertEquals(DropReason.TRUNCATED, VnetHdr.parse(b, 0, 10, view, key, 1500), "a header and nothing");
        assertEquals(DropReason.TRUNCATED, VnetHdr.parse(b, 0, len - 1, view, key, 1500), "the IP length says more");
        assertEquals(DropReason.TRUNCATED, VnetHdr.parse(b, 0, 10 + 30, view, key, 1500), "headers cut");
    }

    @Test
    void aSeededHostileLoopNeverThrowsAndWhatPassesSegmentsWithinTheLimit() {
        Random rnd = new Random(20261127);
        ByteBuffer b = ByteBuffer.allocateDirect(VnetHdr.MAX_MESSAGE);
        ByteBuffer out = ByteBuffer.allocateDirect(1500);
        PacketView seg = new PacketView();
        FlowKey segKey = new FlowKey();
        int[] seen = new int[DropReason.values().length];
        for (int i = 0; i < 20_000; i++) {
            boolean v4 = rnd.nextBoolean();
            boolean tcp = rnd.nextBoolean();
            int len = SuperPackets.build(b, 0, v4 ? 4 : 6, tcp ? Ip.TCP : Ip.UDP, rnd.nextInt(12_000), 1 + rnd.nextInt(1400),
                    Ip.TCP_ACK);
            int flips = rnd.nextInt(4);
            for (int f = 0; f < flips; f++) {
                int at = rnd.nextInt(5) == 0 ? rnd.nextInt(len) : rnd.nextInt(10 + 64);
                b.put(at, (byte) rnd.nextInt(256));
            }
            int mlen = rnd.nextInt(8) == 0 ? rnd.nextInt(len + 1) : len;
            DropReason r = VnetHdr.parse(b, 0, mlen, view, key, 1500);
            assertNotNull(r);
            seen[r.ordinal()]++;
            if (r == DropReason.NONE && VnetHdr.isGso(b, 0)) {
                int gso = VnetHdr.gsoSize(b, 0);
                int n = Gso.segments(view, gso);
                for (int s = 0; s < n; s++) {
                    int l = Gso.segment(view, gso, s, out, 0);
                    assertTrue(l <= 1500);
                    assertEquals(DropReason.NONE, seg.parse(out, 0, l, segKey));
                    assertEquals(seg.computeL4Checksum(), seg.storedL4Checksum());
                }
            }
        }
        assertTrue(seen[DropReason.NONE.ordinal()] > 1000, "most pass");
        for (DropReason r : new DropReason[] {DropReason.BAD_VNET_FLAGS, DropReason.BAD_GSO_TYPE, DropReason.BAD_GSO_SIZE,
            DropReason.BAD_CSUM_START, DropReason.BAD_CSUM_OFFSET, DropReason.TRUNCATED}) {
            assertTrue(seen[r.ordinal()] > 0, "the loop reaches " + r);
        }
    }

    private void expect(ByteBuffer b, int len, DropReason want, int flags, int type, int hdrLen, int gso, int start,
            int off) {
        VnetHdr.write(b, 0, flags, type, hdrLen, gso, start, off);
        assertEquals(want, VnetHdr.parse(b, 0, len, view, key, 1500),
                "flags " + flags + " type " + type + " hdr_len " + hdrLen + " gso " + gso + " csum " + start + "/" + off);
    }
}
