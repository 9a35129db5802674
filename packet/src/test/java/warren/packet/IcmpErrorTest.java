package warren.packet;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import org.junit.jupiter.api.Test;

/** ICMP errors: the inner packet is found, read leniently and rewritten with every checksum right. */
class IcmpErrorTest {

    /** An ICMP error (type/code) from {@code from} to the source of {@code about}, quoting 28 bytes of it. */
    static ByteBuffer error(int version, int type, int code, byte[] from, ByteBuffer about, int quote) {
        int ip = version == 4 ? 20 : 40;
        int total = ip + 8 + quote;
        ByteBuffer b = ByteBuffer.allocate(total);
        if (version == 4) {
            b.put(0, (byte) 0x45).putShort(2, (short) total).put(8, (byte) 64).put(9, (byte) Ip.ICMP);
            b.put(12, from).put(16, about, 12, 4);
        } else {
            b.put(0, (byte) 0x60).putShort(4, (short) (8 + quote)).put(6, (byte) Ip.ICMPV6).put(7, (byte) 64);
            b.put(8, from).put(24, about, 8, 16);
        }
        b.put(ip, (byte) type).put(ip + 1, (byte) code).putShort(ip + 6, (short) 1000); // MTU 1000
        b.put(ip + 8, about, 0, quote);
        if (version == 4) {
            b.putShort(10, (short) Checksum.finish(Checksum.sum(b, 0, 20)));
        }
        PacketView v = new PacketView();
        assertEquals(DropReason.NONE, v.parse(b, 0, total, new FlowKey()));
        v.fixChecksums();
        return b;
    }

    @Test
    void theInnerPacketOfAnErrorIsTranslatedWithChecksumsRight() {
        for (int version : new int[] {4, 6}) {
            byte[] c = version == 4 ? Packets.v4(198, 18, 50, 1) : Packets.v6(1);
            byte[] s = version == 4 ? Packets.v4(198, 18, 99, 9) : Packets.v6(9);
            byte[] router = version == 4 ? Packets.v4(198, 18, 50, 254) : Packets.v6(254);
            ByteBuffer sent = Packets.build(version, Ip.TCP, s, c, 80, 5555, 100); // what the server sent
            for (int quote : new int[] {version == 4 ? 28 : 48, sent.capacity()}) { // cut after 8 L4 bytes, or whole
                ByteBuffer err = error(version, version == 4 ? 3 : 2, version == 4 ? 4 : 0, router, sent, quote);
                PacketView v = new PacketView();
                FlowKey outer = new FlowKey();
                assertEquals(DropReason.NONE, v.parse(err, 0, err.capacity(), outer));
                assertTrue(IcmpError.is(v, err));
                FlowKey inner = new FlowKey();
                assertTrue(IcmpError.innerKey(v, err, inner));
                assertEquals(80, inner.srcPort);
                assertEquals(5555, inner.dstPort);
                ByteBuffer a = ByteBuffer.allocate(32);
                byte[] nat = version == 4 ? Packets.v4(198, 19, 0, 7) : Packets.v6(7);
                byte[] lis = version == 4 ? Packets.v4(198, 19, 255, 254) : Packets.v6(254);
                a.put(0, lis).put(16, nat);
                IcmpError.rewriteInner(v, err, true, a, 0, 8080);
                IcmpError.rewriteInner(v, err, false, a, 16, 40000);
                v.setAddress(false, a, 0);
                v.setAddress(true, a, 16);
                IcmpError.fixOuter(v);
                assertEquals(DropReason.NONE, v.parse(err, 0, err.capacity(), outer), "outer checksums right");
                assertEquals(v.computeL4Checksum(), v.storedL4Checksum(), "ICMP checksum right");
                assertEquals(1000, err.getShort(v.l4Offset() + 6), "the MTU field is untouched");
                assertTrue(IcmpError.innerKey(v, err, inner));
                assertEquals(8080, inner.srcPort);
                assertEquals(40000, inner.dstPort);
                int io = IcmpError.innerOffset(v);
                if (version == 4) {
                    assertEquals(0xFFFF, Checksum.fold(Checksum.sum(err, io, 20)), "inner IPv4 header checksum");
                }
                if (quote == sent.capacity()) { // the whole inner packet: its TCP checksum must be right too
                    PacketView iv = new PacketView();
                    assertEquals(DropReason.NONE, iv.parse(err, io, quote, new FlowKey()));
                    assertEquals(iv.computeL4Checksum(), iv.storedL4Checksum(), "inner TCP checksum");
                }
            }
        }
    }
}
