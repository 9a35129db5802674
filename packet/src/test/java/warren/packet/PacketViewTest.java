package warren.packet;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.util.Random;
import org.junit.jupiter.api.Test;

class PacketViewTest {
    private final PacketView view = new PacketView();
    private final FlowKey key = new FlowKey();

    @Test
    void rfc1071Example() {
        ByteBuffer b = ByteBuffer.wrap(new byte[] {0x00, 0x01, (byte) 0xf2, 0x03, (byte) 0xf4, (byte) 0xf5,
            (byte) 0xf6, (byte) 0xf7});
        assertEquals(0xddf2, Checksum.fold(Checksum.sum(b, 0, 8)));
        assertEquals(0x220d, Checksum.finish(Checksum.sum(b, 0, 8)));
    }

    @Test
    void parsesTheFiveTupleOfEachKind() {
        ByteBuffer b = Packets.build(4, Ip.TCP, Packets.v4(198, 18, 0, 1), Packets.v4(198, 18, 0, 2), 40000, 80, 10);
        assertEquals(DropReason.NONE, view.parse(b, 0, b.capacity(), key));
        assertEquals("tcp 198.18.0.1:40000 -> 198.18.0.2:80", key.toString());
        assertEquals(10, view.payloadLength());
        assertEquals(Ip.TCP_SYN, view.tcpFlags());
        b = Packets.build(6, Ip.UDP, Packets.v6(1), Packets.v6(2), 5353, 53, 3);
        assertEquals(DropReason.NONE, view.parse(b, 0, b.capacity(), key));
        assertEquals("udp [fd00:0:0:0:0:0:0:1]:5353 -> [fd00:0:0:0:0:0:0:2]:53", key.toString());
        b = Packets.build(4, Ip.ICMP, Packets.v4(198, 18, 0, 1), Packets.v4(198, 18, 0, 2), 777, 0, 8);
        assertEquals(DropReason.NONE, view.parse(b, 0, b.capacity(), key));
        assertEquals(777, key.srcPort);
    }

    @Test
    void incrementalRewritesKeepEveryChecksumRight() {
        Random rnd = new Random(1624);
        int[] protos = {Ip.TCP, Ip.UDP, Ip.ICMP, Ip.ICMPV6};
        ByteBuffer newAddr = ByteBuffer.allocate(16);
        for (int i = 0; i < 20_000; i++) {
            int version = rnd.nextBoolean() ? 4 : 6;
            int proto = protos[rnd.nextInt(4)];
            if ((proto == Ip.ICMP) != (version == 4) && (proto == Ip.ICMP || proto == Ip.ICMPV6)) {
                proto = version == 4 ? Ip.ICMP : Ip.ICMPV6;
            }
            byte[] s = new byte[version == 4 ? 4 : 16];
            byte[] d = new byte[s.length];
            rnd.nextBytes(s);
            rnd.nextBytes(d);
            s[0] = (byte) (version == 4 ? 198 : 0xfd);
            ByteBuffer b = Packets.build(version, proto, s, d, rnd.nextInt(65536), rnd.nextInt(65536), rnd.nextInt(300));
            assertEquals(DropReason.NONE, view.parse(b, 0, b.capacity(), key));
            byte[] a = new byte[16];
            rnd.nextBytes(a);
            newAddr.put(0, a);
            int port = rnd.nextInt(65536);
            view.rewrite(rnd.nextBoolean(), newAddr, 0, port);
            assertTrue(view.ipChecksumOk(), "IPv4 header checksum after rewrite");
            assertEquals(view.computeL4Checksum(), view.storedL4Checksum(), "transport checksum after rewrite " + i);
            assertEquals(DropReason.NONE, view.parse(b, 0, b.capacity(), key), "still parses");
        }
    }

    @Test
    void eachMalformedClassHasItsDropReason() {
        ByteBuffer ok = Packets.build(4, Ip.TCP, Packets.v4(198, 18, 0, 1), Packets.v4(198, 18, 0, 2), 1, 2, 0);
        assertEquals(DropReason.TRUNCATED, view.parse(ok, 0, 19, key));
        assertEquals(DropReason.TRUNCATED, view.parse(ok, 0, 0, key));
        ByteBuffer b = copy(ok);
        b.put(0, (byte) 0x55);
        assertEquals(DropReason.BAD_VERSION, view.parse(b, 0, b.capacity(), key));
        b = copy(ok);
        b.put(0, (byte) 0x44);
        assertEquals(DropReason.BAD_IHL, view.parse(b, 0, b.capacity(), key));
        b = copy(ok);
        b.put(0, (byte) 0x46); // IHL 6: one word of options
        assertEquals(DropReason.IPV4_OPTIONS, view.parse(b, 0, b.capacity(), key));
        b = copy(ok);
        b.putShort(2, (short) 1000);
        assertEquals(DropReason.TRUNCATED, view.parse(b, 0, b.capacity(), key));
        b = copy(ok);
        b.putShort(2, (short) 10);
        assertEquals(DropReason.BAD_LENGTH, view.parse(b, 0, b.capacity(), key));
        b = copy(ok);
        b.putShort(6, (short) 0x2000); // MF
        fixIp(b);
        assertEquals(DropReason.FRAGMENT, view.parse(b, 0, b.capacity(), key));
        b = copy(ok);
        b.put(9, (byte) 47); // GRE
        fixIp(b);
        assertEquals(DropReason.UNSUPPORTED_PROTOCOL, view.parse(b, 0, b.capacity(), key));
        b = copy(ok);
        b.put(20 + 12, (byte) 0x40); // data offset 4
        assertEquals(DropReason.BAD_TCP_OFFSET, view.parse(b, 0, b.capacity(), key));
        b = copy(ok);
        b.put(10, (byte) (b.get(10) + 1));
        assertEquals(DropReason.BAD_IP_CHECKSUM, view.parse(b, 0, b.capacity(), key));
        ByteBuffer udp = Packets.build(4, Ip.UDP, Packets.v4(198, 18, 0, 1), Packets.v4(198, 18, 0, 2), 1, 2, 4);
        udp.putShort(20 + 4, (short) 99);
        assertEquals(DropReason.BAD_UDP_LENGTH, view.parse(udp, 0, udp.capacity(), key));
        ByteBuffer v6 = Packets.build(6, Ip.TCP, Packets.v6(1), Packets.v6(2), 1, 2, 0);
        v6.put(6, (byte) 0); // hop-by-hop options header
        assertEquals(DropReason.IPV6_EXTENSION, view.parse(v6, 0, v6.capacity(), key));
        v6.put(6, (byte) 44);
        assertEquals(DropReason.FRAGMENT, view.parse(v6, 0, v6.capacity(), key));
        ByteBuffer icmpInV6 = Packets.build(6, Ip.ICMPV6, Packets.v6(1), Packets.v6(2), 1, 0, 0);
        icmpInV6.put(6, (byte) Ip.ICMP);
        assertEquals(DropReason.UNSUPPORTED_PROTOCOL, view.parse(icmpInV6, 0, icmpInV6.capacity(), key));
    }

    @Test
    void mssIsClampedWithTheChecksumKeptRight() {
        for (int pad = 0; pad < 2; pad++) { // the MSS word aligned, and shifted by a NOP
            ByteBuffer b = ByteBuffer.allocate(20 + 24);
            ByteBuffer base = Packets.build(4, Ip.TCP, Packets.v4(198, 18, 0, 1), Packets.v4(198, 18, 0, 2), 1, 2, 0);
            b.put(0, base, 0, 40);
            b.putShort(2, (short) 44);
            b.put(32, (byte) 0x60); // data offset 6: 4 bytes of options
            int o = 40;
            if (pad == 1) {
                b.put(32, (byte) 0x70); // data offset 7
                b.putShort(2, (short) 48);
                b = ByteBuffer.allocate(48).put(0, b, 0, 44);
                b.put(o++, (byte) 1); // NOP
                b.put(o + 4, (byte) 1);
                b.put(o + 5, (byte) 1);
                b.put(o + 6, (byte) 1);
            }
            b.put(o, (byte) 2).put(o + 1, (byte) 4).putShort(o + 2, (short) 65495);
            b.putShort(10, (short) 0);
            b.putShort(10, (short) Checksum.finish(Checksum.sum(b, 0, 20)));
            assertEquals(DropReason.NONE, view.parse(b, 0, b.capacity(), key));
            view.fixChecksums();
            assertTrue(view.clampMss(1460));
            assertEquals(1460, b.getShort(o + 2) & 0xFFFF);
            assertEquals(view.computeL4Checksum(), view.storedL4Checksum());
            assertTrue(!view.clampMss(1460), "already small enough");
        }
    }

    @Test
    void aSeededHostileLoopNeverThrows() {
        Random rnd = new Random(20261126);
        int[] seen = new int[DropReason.values().length];
        for (int i = 0; i < 200_000; i++) {
            boolean v4 = rnd.nextBoolean();
            ByteBuffer b = Packets.build(v4 ? 4 : 6, rnd.nextBoolean() ? Ip.TCP : Ip.UDP,
                    v4 ? Packets.v4(198, 18, 0, 1) : Packets.v6(1), v4 ? Packets.v4(198, 18, 0, 2) : Packets.v6(2),
                    rnd.nextInt(65536), 80, rnd.nextInt(64));
            int flips = rnd.nextInt(4);
            for (int f = 0; f < flips; f++) {
                b.put(rnd.nextInt(b.capacity()), (byte) rnd.nextInt(256));
            }
            int len = rnd.nextInt(4) == 0 ? rnd.nextInt(b.capacity() + 1) : b.capacity();
            DropReason r = view.parse(b, 0, len, key);
            assertNotNull(r);
            seen[r.ordinal()]++;
        }
        assertTrue(seen[DropReason.NONE.ordinal()] > 0 && seen[DropReason.TRUNCATED.ordinal()] > 0);
    }

    private static ByteBuffer copy(ByteBuffer b) {
        ByteBuffer c = ByteBuffer.allocate(b.capacity());
        c.put(0, b, 0, b.capacity());
        return c;
    }

    private static void fixIp(ByteBuffer b) {
        b.putShort(10, (short) 0);
        b.putShort(10, (short) Checksum.finish(Checksum.sum(b, 0, 20)));
    }
}
