package warren.packet;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Software GSO cuts TCPv4/TCPv6/UDP super-packets into the packets the kernel would send: every
 * checksum verifies from scratch, the payloads concatenate back, sequence numbers, IPv4 ids and
 * lengths advance, FIN/PSH only on the last segment, CWR only on the first. Partial-checksum NAT
 * rewrites give, once completed, the bytes a complete-checksum rewrite gives.
 */
class GsoTest {
    private static final int TCP_PSH = 0x08;
    private static final int TCP_CWR = 0x80;
    private final PacketView view = new PacketView();
    private final PacketView seg = new PacketView();
    private final FlowKey key = new FlowKey();
    private final FlowKey segKey = new FlowKey();

    @Test
    void tcpV4AndV6SuperPacketsBecomeValidSegments() {
        for (int version : new int[] {4, 6}) {
            for (ByteOrder order : new ByteOrder[] {ByteOrder.BIG_ENDIAN, ByteOrder.LITTLE_ENDIAN}) {
                int flags = Ip.TCP_ACK | TCP_PSH | Ip.TCP_FIN | TCP_CWR;
                // the MSS of a 1500-byte MTU with timestamps: 1448 over IPv4, 1428 over IPv6
                byte[] payload = segmentAll(version, Ip.TCP, 20_000, version == 4 ? 1448 : 1428, flags, order,
                        version == 4 ? 14 : 15);
                assertEquals(20_000, payload.length);
            }
        }
    }

    @Test
    void udpL4SuperPacketsBecomeDatagrams() {
        segmentAll(4, Ip.UDP, 8_000, 1000, 0, ByteOrder.BIG_ENDIAN, 8);
        segmentAll(6, Ip.UDP, 8_500, 1000, 0, ByteOrder.BIG_ENDIAN, 9); // the last one 500 bytes
        segmentAll(4, Ip.UDP, 65_507, 1472, 0, ByteOrder.BIG_ENDIAN, 45); // the largest IPv4 datagram
    }

    @Test
    void aPacketThatFitsOneSegmentIsOneCompletedCopy() {
        segmentAll(4, Ip.TCP, 1000, 1448, Ip.TCP_ACK | Ip.TCP_FIN, ByteOrder.BIG_ENDIAN, 1);
        segmentAll(6, Ip.UDP, 0, 1000, 0, ByteOrder.BIG_ENDIAN, 1);
        segmentAll(4, Ip.TCP, 2896, 1448, Ip.TCP_ACK, ByteOrder.BIG_ENDIAN, 2); // exactly two
    }

    /**
     * Builds a super-packet, segments it into 1500-byte slots and checks every segment; returns
     * the concatenated payloads (compared with the original's).
     */
    private byte[] segmentAll(int version, int protocol, int payload, int gsoSize, int tcpFlags, ByteOrder order,
            int expectSegments) {
        ByteBuffer in = ByteBuffer.allocateDirect(VnetHdr.MAX_MESSAGE + 3).order(order);
        int len = SuperPackets.build(in, 3, version, protocol, payload, gsoSize, tcpFlags);
        assertEquals(DropReason.NONE, VnetHdr.parse(in, 3, len, view, key, 1500));
        int n = Gso.segments(view, VnetHdr.gsoSize(in, 3));
        assertEquals(expectSegments, n);
        int headers = view.payloadOffset() - view.offset();
        ByteBuffer slots = ByteBuffer.allocateDirect(n * 1500 + 1).order(order);
        ByteArrayOutputStream joined = new ByteArrayOutputStream();
        for (int i = 0; i < n; i++) {
            int at = 1 + i * 1500; // odd offsets on purpose
            int l = Gso.segment(view, VnetHdr.gsoSize(in, 3), i, slots, at);
            assertEquals(Gso.segmentLength(view, VnetHdr.gsoSize(in, 3), i), l);
            assertTrue(l <= 1500, "segment " + i + " fits: " + l);
            assertEquals(DropReason.NONE, seg.parse(slots, at, l, segKey), "segment " + i + " parses");
            assertTrue(segKey.matches(key), "same 5-tuple");
            assertTrue(seg.ipChecksumOk());
            assertEquals(seg.computeL4Checksum(), seg.storedL4Checksum(), "checksum of segment " + i);
            int segPayload = seg.payloadLength();
            assertEquals(i < n - 1 ? gsoSize : payload - (n - 1) * gsoSize, segPayload);
            for (int k = 0; k < segPayload; k++) {
                joined.write(slots.get(seg.payloadOffset() + k));
            }
            for (int k = 0; k < headers; k++) { // the fields GSO leaves alone are the super-packet's
                int rel = k;
                boolean changes = version == 4 && (rel == 2 || rel == 3 || rel == 4 || rel == 5 || rel == 10 || rel == 11)
                        || version == 6 && (rel == 4 || rel == 5);
                int l4rel = rel - (view.l4Offset() - view.offset());
                if (protocol == Ip.TCP) {
                    changes |= l4rel >= 4 && l4rel < 8 || l4rel == 13 || l4rel == 16 || l4rel == 17;
                } else {
                    changes |= l4rel >= 4 && l4rel < 8;
                }
                if (!changes) {
                    assertEquals(in.get(view.offset() + k), slots.get(at + k), "header byte " + k + " of segment " + i);
                }
            }
            if (version == 4) {
                assertEquals((SuperPackets.IP_ID + i) & 0xFFFF, u16(slots, at + 4), "IPv4 id of segment " + i);
                assertEquals(l, u16(slots, at + 2));
            } else {
                assertEquals(l - 40, u16(slots, at + 4));
            }
            if (protocol == Ip.TCP) {
                assertEquals(SuperPackets.SEQ + i * gsoSize, (u16(slots, seg.l4Offset() + 4) << 16) | u16(slots, seg.l4Offset() + 6),
                        "sequence number of segment " + i);
                int f = seg.tcpFlags();
                int expect = tcpFlags;
                if (i < n - 1) {
                    expect &= ~(Ip.TCP_FIN | TCP_PSH);
                }
                if (i > 0) {
                    expect &= ~TCP_CWR;
                }
                assertEquals(expect, f, "flags of segment " + i);
            } else {
                assertEquals(l - (seg.l4Offset() - at), u16(slots, seg.l4Offset() + 4), "UDP length");
            }
        }
        byte[] got = joined.toByteArray();
        byte[] want = new byte[payload];
        for (int k = 0; k < payload; k++) {
            want[k] = SuperPackets.payloadByte(k);
        }
        assertArrayEquals(want, got, "the payloads concatenate back");
        return got;
    }

    @Test
    void completingAPartialChecksumGivesTheFullOne() {
        Random rnd = new Random(7);
        for (int round = 0; round < 2000; round++) {
            int version = rnd.nextBoolean() ? 4 : 6;
            int proto = rnd.nextBoolean() ? Ip.TCP : Ip.UDP;
            ByteBuffer b = randomPacket(rnd, version, proto);
            assertEquals(DropReason.NONE, view.parse(b, 0, b.capacity(), key));
            int full = view.storedL4Checksum();
            view.setPartialChecksum();
            view.completeChecksum();
            assertEquals(full, view.storedL4Checksum());
        }
    }

    @Test
    void aPartialChecksumRewriteCompletesToTheBytesOfAFullRewrite() {
        Random rnd = new Random(1624);
        ByteBuffer addr = ByteBuffer.allocate(16);
        PacketView partial = new PacketView();
        FlowKey pk = new FlowKey();
        for (int round = 0; round < 20_000; round++) {
            int version = rnd.nextBoolean() ? 4 : 6;
            int proto = rnd.nextBoolean() ? Ip.TCP : Ip.UDP;
            ByteBuffer full = randomPacket(rnd, version, proto);
            ByteBuffer part = ByteBuffer.allocate(full.capacity()).put(0, full, 0, full.capacity());
            assertEquals(DropReason.NONE, view.parse(full, 0, full.capacity(), key));
            assertEquals(DropReason.NONE, partial.parse(part, 0, part.capacity(), pk));
            partial.setPartialChecksum();
            for (int step = 0; step < 2; step++) { // source then destination, like NAT out and back
                byte[] a = new byte[16];
                rnd.nextBytes(a);
                addr.put(0, a);
                int port = rnd.nextInt(65536);
                boolean source = step == 0;
                view.rewrite(source, addr, 0, port);
                partial.rewrite(source, addr, 0, port, true);
                assertEquals(partial.pseudoHeaderChecksum(), partial.storedL4Checksum(),
                        "S' = S + ~old + new is the pseudo-header sum of the new addresses");
            }
            partial.completeChecksum();
            assertTrue(full.equals(part), "round " + round + ": completed partial rewrite = full rewrite");
            assertEquals(view.computeL4Checksum(), view.storedL4Checksum());
        }
    }

    @Test
    void aRewrittenPartialSuperPacketSegmentsIntoValidPackets() {
        ByteBuffer in = ByteBuffer.allocateDirect(VnetHdr.MAX_MESSAGE);
        int len = SuperPackets.build(in, 0, 4, Ip.TCP, 30_000, 1448, Ip.TCP_ACK);
        assertEquals(DropReason.NONE, VnetHdr.parse(in, 0, len, view, key, 1500));
        ByteBuffer addr = ByteBuffer.wrap(new byte[] {(byte) 198, 19, 7, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
        view.rewrite(true, addr, 0, 20001, true);
        ByteBuffer out = ByteBuffer.allocateDirect(1500);
        for (int i = 0; i < Gso.segments(view, 1448); i++) {
            int l = Gso.segment(view, 1448, i, out, 0);
            assertEquals(DropReason.NONE, seg.parse(out, 0, l, segKey));
            assertEquals("tcp 198.19.7.9:20001 -> 198.18.2.2:80", segKey.toString());
            assertEquals(seg.computeL4Checksum(), seg.storedL4Checksum());
        }
    }

    private static ByteBuffer randomPacket(Random rnd, int version, int proto) {
        byte[] s = new byte[version == 4 ? 4 : 16];
        byte[] d = new byte[s.length];
        rnd.nextBytes(s);
        rnd.nextBytes(d);
        ByteBuffer b = Packets.build(version, proto, s, d, rnd.nextInt(65536), rnd.nextInt(65536), rnd.nextInt(600));
        for (int i = (version == 4 ? 20 : 40) + (proto == Ip.TCP ? 20 : 8); i < b.capacity(); i++) {
            b.put(i, (byte) rnd.nextInt());
        }
        PacketView v = new PacketView();
        v.parse(b, 0, b.capacity(), new FlowKey());
        v.fixChecksums();
        return b;
    }

    private static int u16(ByteBuffer b, int abs) {
        return ((b.get(abs) & 0xFF) << 8) | (b.get(abs + 1) & 0xFF);
    }
}
