package warren.packet;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.code_intelligence.jazzer.junit.FuzzTest;
import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * Fuzz target for {@link VnetHdr#parse} (the virtio_net_hdr checked against its packet) and
 * {@link Gso} (a super-packet cut into segments). Input: 3 bytes of parameters, then the message
 * (a 10-byte header and the packet):
 * <pre>
 *  0    bits 0-2 the message's offset in the buffer, bit 3 little-endian buffers
 *  1-2  maxSegment (the path's MTU), big-endian; below 68 taken as 68
 * </pre>
 * Invariants for a message that validates: a GSO one is TCP or UDP of the type its header says and
 * has NEEDS_CSUM; its segments each parse, fit maxSegment, carry the super-packet's 5-tuple, a valid
 * IPv4 header checksum and a transport checksum that verifies, TCP sequence numbers advancing by
 * gso_size (FIN/PSH on the last only, CWR on the first only), at most UDP_MAX_SEGMENTS UDP
 * datagrams; their payloads joined are the super-packet's payload. {@code ./warren fuzz gso}.
 */
class GsoFuzzTest {
    static final int PARAMS = 3;

    @FuzzTest
    void segment(byte[] in) {
        if (in.length < PARAMS) {
            return;
        }
        int pad = in[0] & 7;
        ByteOrder order = (in[0] & 8) != 0 ? ByteOrder.LITTLE_ENDIAN : ByteOrder.BIG_ENDIAN;
        int maxSegment = Math.max(68, PacketViewFuzzTest.u16(in, 1));
        int length = in.length - PARAMS;
        ByteBuffer b = ByteBuffer.allocateDirect(pad + length + 8).order(order);
        for (int i = 0; i < length; i++) {
            b.put(pad + i, in[PARAMS + i]);
        }
        PacketView v = new PacketView();
        FlowKey key = new FlowKey();
        DropReason r = VnetHdr.parse(b, pad, length, v, key, maxSegment);
        assertNotNull(r);
        if (r != DropReason.NONE) {
            return;
        }
        PacketViewFuzzTest.checkParsed(v, key, pad + VnetHdr.SIZE, length - VnetHdr.SIZE);
        boolean gso = VnetHdr.isGso(b, pad);
        boolean partial = VnetHdr.needsCsum(b, pad);
        int gsoSize = gso ? VnetHdr.gsoSize(b, pad) : 0;
        boolean transport = v.protocol() == Ip.TCP || v.protocol() == Ip.UDP;
        if (!transport) {
            assertFalse(gso || partial, "GSO or NEEDS_CSUM accepted for protocol " + v.protocol());
            return;
        }
        if (gso) {
            assertTrue(partial, "GSO without NEEDS_CSUM accepted");
            int type = VnetHdr.gsoType(b, pad) & ~VnetHdr.GSO_ECN;
            assertEquals(v.protocol() == Ip.UDP ? VnetHdr.GSO_UDP_L4 : v.version() == 4 ? VnetHdr.GSO_TCPV4
                    : VnetHdr.GSO_TCPV6, type);
            assertTrue(gsoSize > 0 && gsoSize != VnetHdr.GSO_BY_FRAGS);
        }
        int n = Gso.segments(v, gsoSize);
        assertTrue(n >= 1);
        if (gso && v.protocol() == Ip.UDP) {
            assertTrue(n <= VnetHdr.UDP_MAX_SEGMENTS, n + " UDP segments");
        }
        int headers = v.payloadOffset() - v.offset();
        int l4 = v.l4Offset() - v.offset();
        ByteArrayOutputStream joined = new ByteArrayOutputStream();
        int flags = v.protocol() == Ip.TCP ? v.tcpFlags() : 0;
        long seq0 = v.protocol() == Ip.TCP ? b.getInt(v.l4Offset() + 4) & 0xFFFFFFFFL : 0;
        if (order == ByteOrder.LITTLE_ENDIAN && v.protocol() == Ip.TCP) {
            seq0 = Integer.reverseBytes((int) seq0) & 0xFFFFFFFFL;
        }
        for (int i = 0; i < n; i++) {
            int segLen = Gso.segmentLength(v, gsoSize, i);
            assertTrue(segLen >= headers);
            if (gso && n > 1) {
                assertTrue(segLen <= maxSegment, "segment of " + segLen + " > " + maxSegment);
            }
            int dpad = (i * 3) & 7;
            ByteBuffer d = ByteBuffer.allocateDirect(dpad + segLen).order(order);
            assertEquals(segLen, Gso.segment(v, gsoSize, i, d, dpad));
            PacketView sv = new PacketView();
            FlowKey sk = new FlowKey();
            assertEquals(DropReason.NONE, sv.parse(d, dpad, segLen, sk), "segment " + i + " of " + n);
            assertEquals(key, sk, "segment " + i + " 5-tuple");
            assertEquals(segLen, sv.length());
            assertTrue(sv.ipChecksumOk(), "segment IPv4 header checksum");
            assertTrue(PacketViewFuzzTest.l4Verifies(sv), "segment " + i + " transport checksum");
            for (int k = sv.payloadOffset(); k < dpad + segLen; k++) {
                joined.write(d.get(k));
            }
            if (v.protocol() == Ip.TCP) {
                long seq = ((d.get(dpad + l4 + 4) & 0xFFL) << 24) | ((d.get(dpad + l4 + 5) & 0xFF) << 16)
                        | ((d.get(dpad + l4 + 6) & 0xFF) << 8) | (d.get(dpad + l4 + 7) & 0xFF);
                assertEquals((seq0 + (long) i * gsoSize) & 0xFFFFFFFFL, seq, "segment " + i + " sequence");
                int f = sv.tcpFlags();
                int expect = flags;
                if (i != n - 1) {
                    expect &= ~(Ip.TCP_FIN | 0x08);
                }
                if (i != 0) {
                    expect &= ~0x80;
                }
                assertEquals(expect, f, "segment " + i + " TCP flags");
            }
        }
        byte[] payload = new byte[v.payloadLength()];
        for (int k = 0; k < payload.length; k++) {
            payload[k] = b.get(v.payloadOffset() + k);
        }
        assertArrayEquals(payload, joined.toByteArray(), "segments' payloads joined");
    }

    static Map<String, byte[]> seeds() {
        Map<String, byte[]> s = new LinkedHashMap<>();
        int[][] cases = { // version, protocol, payload, gso_size, tcp flags
            {4, Ip.TCP, 4000, 1448, 0x18 | 0x80}, {6, Ip.TCP, 3000, 1428, 0x19}, {4, Ip.UDP, 3000, 1200, 0},
            {6, Ip.UDP, 2500, 1000, 0}, {4, Ip.TCP, 500, 1448, 0x10}, {4, Ip.TCP, 100, 0, 0x18},
        };
        for (int[] c : cases) {
            ByteBuffer b = ByteBuffer.allocate(VnetHdr.MAX_MESSAGE);
            int len = SuperPackets.build(b, 0, c[0], c[1], c[2], c[3], c[4]);
            byte[] in = new byte[PARAMS + len];
            in[0] = (byte) (c[0] == 6 ? 8 | 5 : 2);
            in[1] = (byte) (1500 >>> 8);
            in[2] = (byte) 1500;
            for (int i = 0; i < len; i++) {
                in[PARAMS + i] = b.get(i);
            }
            s.put(FlowKey.protoName(c[1]) + c[0] + "-" + c[2] + "-by-" + c[3], in);
        }
        return s;
    }

    @Test
    void seedsAreInTheCorpus() {
        Map<String, byte[]> s = seeds();
        s.values().forEach(this::segment);
        FuzzSeeds.writeOrCheck(GsoFuzzTest.class, "segment", s);
    }
}
