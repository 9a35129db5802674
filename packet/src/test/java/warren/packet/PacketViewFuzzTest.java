package warren.packet;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.code_intelligence.jazzer.junit.FuzzTest;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * Fuzz targets for {@link PacketView} (parse, the NAT rewrite with complete and partial
 * checksums, the MSS clamp) and {@link IcmpError} (the inner packet's translation). Input:
 * {@link #PARAMS} bytes of parameters, then the packet:
 * <pre>
 *  0     bit 0 rewrite the source (else the destination), bit 1 partial checksum,
 *        bit 2 little-endian buffer, bits 3-5 the packet's offset in the buffer
 *  1-2   the new port (echo id), big-endian
 *  3-18  the new address (the first 4 bytes for IPv4)
 *  19-20 the MSS to clamp to
 * </pre>
 * Invariants: parse never throws and its offsets stay inside the packet; a rewritten packet
 * parses again to the rewritten 5-tuple with every checksum that verified before still verifying
 * (a partial one still the pseudo-header sum); the same for an ICMP error's inner packet.
 * {@code ./warren fuzz packet-view} / {@code icmp-error} fuzz them; {@code ./warren test} replays
 * {@code PacketViewFuzzTestInputs}.
 */
class PacketViewFuzzTest {
    static final int PARAMS = 21;

    @FuzzTest
    void rewrite(byte[] in) {
        if (in.length < PARAMS) {
            return;
        }
        boolean source = (in[0] & 1) != 0;
        boolean partialAsked = (in[0] & 2) != 0;
        int pad = (in[0] >>> 3) & 7;
        int port = u16(in, 1);
        ByteBuffer addr = ByteBuffer.wrap(in, 3, 16).slice();
        int mss = u16(in, 19);
        ByteBuffer b = packet(in, pad);
        int length = in.length - PARAMS;

        PacketView v = new PacketView();
        FlowKey key = new FlowKey();
        DropReason r = v.parse(b, pad, length, key);
        assertNotNull(r);
        if (r != DropReason.NONE) {
            return;
        }
        checkParsed(v, key, pad, length);
        assertTrue(v.ipChecksumOk(), "parse accepted a bad IPv4 header checksum");
        boolean l4Transport = v.protocol() == Ip.TCP || v.protocol() == Ip.UDP;
        boolean partial = partialAsked && l4Transport;
        if (partial) {
            v.setPartialChecksum();
        }
        boolean udpNone = !partial && v.protocol() == Ip.UDP && v.version() == 4 && v.storedL4Checksum() == 0;
        boolean l4Ok = !partial && !udpNone && l4Verifies(v);

        v.rewrite(source, addr, 0, port, partial);

        FlowKey expected = new FlowKey().copyFrom(key);
        byte[] a = source ? expected.src : expected.dst;
        for (int i = 0; i < expected.addressLength(); i++) {
            a[i] = addr.get(i);
        }
        if (v.protocol() == Ip.ICMP || v.protocol() == Ip.ICMPV6) {
            expected.srcPort = port;
            expected.dstPort = port;
        } else if (source) {
            expected.srcPort = port;
        } else {
            expected.dstPort = port;
        }
        FlowKey again = new FlowKey();
        assertEquals(DropReason.NONE, new PacketView().parse(b, pad, v.length(), again), "rewritten packet");
        assertEquals(expected, again);
        if (partial) {
            assertEquals(v.pseudoHeaderChecksum(), v.storedL4Checksum(), "partial checksum after the rewrite");
            v.completeChecksum();
            assertTrue(l4Verifies(v), "completed checksum");
        } else if (udpNone) {
            assertEquals(0, v.storedL4Checksum(), "UDP without a checksum keeps none");
        } else if (l4Ok) {
            assertTrue(l4Verifies(v), "transport checksum after the rewrite");
        }
        if (v.protocol() == Ip.UDP && !udpNone) {
            assertNotEquals(0, v.storedL4Checksum(), "a UDP checksum of 0 is sent as 0xFFFF");
        }

        boolean before = l4Verifies(v);
        if (v.clampMss(mss)) {
            assertEquals(Ip.TCP, v.protocol());
            assertEquals(DropReason.NONE, new PacketView().parse(b, pad, v.length(), new FlowKey()));
            assertEquals(before, l4Verifies(v), "checksum after the MSS clamp");
        }
    }

    @FuzzTest
    void icmpError(byte[] in) {
        if (in.length < PARAMS) {
            return;
        }
        boolean source = (in[0] & 1) != 0;
        int pad = (in[0] >>> 3) & 7;
        int port = u16(in, 1);
        ByteBuffer addr = ByteBuffer.wrap(in, 3, 16).slice();
        ByteBuffer b = packet(in, pad);
        int length = in.length - PARAMS;

        PacketView v = new PacketView();
        FlowKey key = new FlowKey();
        if (v.parse(b, pad, length, key) != DropReason.NONE || !IcmpError.is(v, b)) {
            return;
        }
        FlowKey inner = new FlowKey();
        if (!IcmpError.innerKey(v, b, inner)) {
            return;
        }
        int innerOff = IcmpError.innerOffset(v);
        int innerLen = IcmpError.innerLength(v);
        assertTrue(innerOff >= v.l4Offset() && innerOff + innerLen <= v.offset() + v.length());
        assertEquals(v.version(), inner.version);
        boolean innerIpOk = inner.version != 4 || Checksum.fold(Checksum.sum(b, innerOff, Ip.V4_HEADER)) == 0xFFFF;
        PacketView iv = new PacketView();
        boolean innerWhole = iv.parse(b, innerOff, innerLen, new FlowKey()) == DropReason.NONE && iv.length() == innerLen
                && !(iv.protocol() == Ip.UDP && iv.version() == 4 && iv.storedL4Checksum() == 0) && l4Verifies(iv);

        IcmpError.rewriteInner(v, b, source, addr, 0, port);
        IcmpError.fixOuter(v);

        FlowKey outerAgain = new FlowKey();
        assertEquals(DropReason.NONE, new PacketView().parse(b, pad, v.length(), outerAgain), "translated error");
        assertEquals(key, outerAgain, "the outer 5-tuple is not the inner rewrite's business");
        assertTrue(l4Verifies(v), "ICMP checksum after fixOuter");
        assertTrue(IcmpError.is(v, b));
        FlowKey innerAgain = new FlowKey();
        assertTrue(IcmpError.innerKey(v, b, innerAgain));
        FlowKey expected = new FlowKey().copyFrom(inner);
        byte[] a = source ? expected.src : expected.dst;
        for (int i = 0; i < expected.addressLength(); i++) {
            a[i] = addr.get(i);
        }
        if (source) {
            expected.srcPort = port;
        } else {
            expected.dstPort = port;
        }
        assertEquals(expected, innerAgain);
        if (inner.version == 4 && innerIpOk) {
            assertEquals(0xFFFF, Checksum.fold(Checksum.sum(b, innerOff, Ip.V4_HEADER)), "inner IPv4 header checksum");
        }
        if (innerWhole) {
            assertEquals(DropReason.NONE, iv.parse(b, innerOff, innerLen, new FlowKey()));
            assertTrue(l4Verifies(iv), "inner transport checksum");
        }
    }

    /** The packet's bytes at {@code pad} of a direct buffer (order from bit 2 of the flags), guard bytes after. */
    static ByteBuffer packet(byte[] in, int pad) {
        ByteBuffer b = ByteBuffer.allocateDirect(pad + in.length - PARAMS + 8)
                .order((in[0] & 4) != 0 ? ByteOrder.LITTLE_ENDIAN : ByteOrder.BIG_ENDIAN);
        for (int i = PARAMS; i < in.length; i++) {
            b.put(pad + i - PARAMS, in[i]);
        }
        for (int i = 0; i < 8; i++) {
            b.put(pad + in.length - PARAMS + i, (byte) 0xA5);
        }
        return b;
    }

    static void checkParsed(PacketView v, FlowKey key, int pad, int length) {
        assertEquals(pad, v.offset());
        assertTrue(v.length() <= length, "IP length past what was received");
        assertTrue(pad < v.l4Offset() && v.l4Offset() <= v.payloadOffset() && v.payloadOffset() <= pad + v.length(),
                () -> "offsets " + v.l4Offset() + ", " + v.payloadOffset() + " outside " + pad + "+" + v.length());
        assertTrue(v.payloadLength() >= 0);
        assertEquals(v.version(), key.version);
        assertEquals(v.protocol(), key.protocol);
        assertTrue(key.srcPort >= 0 && key.srcPort <= 0xFFFF && key.dstPort >= 0 && key.dstPort <= 0xFFFF);
        if (v.version() == 4) {
            for (int i = 4; i < 16; i++) {
                assertFalse(key.src[i] != 0 || key.dst[i] != 0, "IPv4 key with bytes past 4");
            }
        }
    }

    /** True if the transport checksum verifies (RFC 1071: the sum over it, the field included, is all ones). */
    static boolean l4Verifies(PacketView v) {
        ByteBuffer b = v.buffer();
        int l4 = v.l4Offset();
        int end = v.offset() + v.length();
        long sum = Checksum.sum(b, l4, end - l4);
        if (v.protocol() != Ip.ICMP) {
            int alen = v.version() == 4 ? 4 : 16;
            sum += Checksum.sum(b, v.offset() + (v.version() == 4 ? Ip.V4_SRC : Ip.V6_SRC), 2 * alen);
            sum += v.protocol() + (end - l4);
        }
        return Checksum.fold(sum) == 0xFFFF;
    }

    static int u16(byte[] a, int i) {
        return ((a[i] & 0xFF) << 8) | (a[i + 1] & 0xFF);
    }

    // ---- seeds: packets made by the test builders, the parameters in front

    static byte[] input(int flags, int port, byte[] addr, int mss, ByteBuffer packet, int length) {
        byte[] out = new byte[PARAMS + length];
        out[0] = (byte) flags;
        out[1] = (byte) (port >>> 8);
        out[2] = (byte) port;
        System.arraycopy(addr, 0, out, 3, addr.length);
        out[19] = (byte) (mss >>> 8);
        out[20] = (byte) mss;
        for (int i = 0; i < length; i++) {
            out[PARAMS + i] = packet.get(i);
        }
        return out;
    }

    static ByteBuffer icmpError(int version, int innerProtocol) {
        byte[] a = version == 4 ? Packets.v4(198, 18, 0, 1) : Packets.v6(1);
        byte[] c = version == 4 ? Packets.v4(198, 19, 0, 9) : Packets.v6(9);
        ByteBuffer inner = Packets.build(version, innerProtocol, a, c, 40000, 443, 12);
        int innerLen = inner.capacity();
        ByteBuffer outer = Packets.build(version, version == 4 ? Ip.ICMP : Ip.ICMPV6, c, a, 0, 0, innerLen);
        int l4 = version == 4 ? Ip.V4_HEADER : Ip.V6_HEADER;
        outer.put(l4, (byte) (version == 4 ? 3 : 1)); // destination unreachable
        outer.put(l4 + 1, (byte) (version == 4 ? 3 : 4)); // port unreachable
        outer.putInt(l4 + 4, 0);
        for (int i = 0; i < innerLen; i++) {
            outer.put(l4 + Ip.ICMP_HEADER + i, inner.get(i));
        }
        PacketView v = new PacketView();
        v.parse(outer, 0, outer.capacity(), new FlowKey());
        v.fixChecksums();
        return outer;
    }

    static Map<String, byte[]> rewriteSeeds() {
        Map<String, byte[]> s = new LinkedHashMap<>();
        byte[] to4 = Arrays.copyOf(Packets.v4(203, 0, 113, 7), 16);
        byte[] to6 = Packets.v6(0x77);
        int[] protocols = {Ip.TCP, Ip.UDP, Ip.ICMP};
        for (int version : new int[] {4, 6}) {
            for (int p : protocols) {
                int proto = p == Ip.ICMP && version == 6 ? Ip.ICMPV6 : p;
                byte[] src = version == 4 ? Packets.v4(198, 18, 0, 1) : Packets.v6(1);
                byte[] dst = version == 4 ? Packets.v4(198, 19, 0, 2) : Packets.v6(2);
                ByteBuffer pkt = Packets.build(version, proto, src, dst, 40000, 80, 33);
                String name = FlowKey.protoName(proto) + version;
                s.put(name + "-source", input(1 | (2 << 3), 61000, version == 4 ? to4 : to6, 1460, pkt, pkt.capacity()));
                s.put(name + "-dest-partial-le", input(2 | 4, 8080, version == 4 ? to4 : to6, 1200, pkt, pkt.capacity()));
            }
        }
        // a SYN with an MSS option (data offset 6), clamped
        ByteBuffer syn = ByteBuffer.allocate(Ip.V4_HEADER + Ip.TCP_HEADER + 4);
        ByteBuffer base = Packets.build(4, Ip.TCP, Packets.v4(198, 18, 0, 1), Packets.v4(198, 19, 0, 2), 40000, 80, 4);
        for (int i = 0; i < syn.capacity(); i++) {
            syn.put(i, base.get(i));
        }
        syn.put(Ip.V4_HEADER + 12, (byte) 0x60);
        syn.put(Ip.V4_HEADER + Ip.TCP_HEADER, (byte) 2).put(Ip.V4_HEADER + Ip.TCP_HEADER + 1, (byte) 4)
                .putShort(Ip.V4_HEADER + Ip.TCP_HEADER + 2, (short) 1460);
        PacketView v = new PacketView();
        v.parse(syn, 0, syn.capacity(), new FlowKey());
        v.fixChecksums();
        s.put("tcp4-syn-mss", input(1, 50000, to4, 1400, syn, syn.capacity()));
        return s;
    }

    static Map<String, byte[]> icmpSeeds() {
        Map<String, byte[]> s = new LinkedHashMap<>();
        for (int version : new int[] {4, 6}) {
            for (int p : new int[] {Ip.TCP, Ip.UDP}) {
                ByteBuffer e = icmpError(version, p);
                byte[] to = version == 4 ? Arrays.copyOf(Packets.v4(203, 0, 113, 7), 16) : Packets.v6(0x77);
                s.put("icmp" + version + "-" + FlowKey.protoName(p) + "-source", input(1, 61000, to, 0, e, e.capacity()));
                s.put("icmp" + version + "-" + FlowKey.protoName(p) + "-dest-le", input(4 | (3 << 3), 8080, to, 0, e,
                        e.capacity()));
                // cut after the inner L4's first 8 bytes, as routers send it
                int cut = e.capacity() - (p == Ip.TCP ? 12 + Ip.TCP_HEADER - 8 : 12);
                ByteBuffer c = ByteBuffer.allocate(cut);
                for (int i = 0; i < cut; i++) {
                    c.put(i, e.get(i));
                }
                if (version == 4) {
                    c.putShort(2, (short) cut);
                    c.putShort(10, (short) 0);
                    c.putShort(10, (short) Checksum.finish(Checksum.sum(c, 0, Ip.V4_HEADER)));
                } else {
                    c.putShort(4, (short) (cut - Ip.V6_HEADER));
                }
                PacketView v = new PacketView();
                v.parse(c, 0, cut, new FlowKey());
                v.fixChecksums();
                s.put("icmp" + version + "-" + FlowKey.protoName(p) + "-cut", input(1, 61001, to, 0, c, cut));
            }
        }
        return s;
    }

    @Test
    void seedsAreInTheCorpus() {
        Map<String, byte[]> r = rewriteSeeds();
        r.values().forEach(this::rewrite);
        FuzzSeeds.writeOrCheck(PacketViewFuzzTest.class, "rewrite", r);
        Map<String, byte[]> i = icmpSeeds();
        i.values().forEach(this::icmpError);
        FuzzSeeds.writeOrCheck(PacketViewFuzzTest.class, "icmpError", i);
    }
}
