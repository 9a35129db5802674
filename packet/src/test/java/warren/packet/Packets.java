package warren.packet;

import java.nio.ByteBuffer;

/** Builds well-formed test packets with correct checksums. */
final class Packets {
    private Packets() {}

    static ByteBuffer build(int version, int protocol, byte[] src, byte[] dst, int sport, int dport, int payloadLen) {
        int ipLen = version == 4 ? Ip.V4_HEADER : Ip.V6_HEADER;
        int l4Len = protocol == Ip.TCP ? Ip.TCP_HEADER : protocol == Ip.UDP ? Ip.UDP_HEADER : Ip.ICMP_HEADER;
        int total = ipLen + l4Len + payloadLen;
        ByteBuffer b = ByteBuffer.allocate(total);
        if (version == 4) {
            b.put(0, (byte) 0x45);
            b.putShort(2, (short) total);
            b.put(6, (byte) 0x40); // DF
            b.put(8, (byte) 64);
            b.put(9, (byte) protocol);
            for (int i = 0; i < 4; i++) {
                b.put(12 + i, src[i]);
                b.put(16 + i, dst[i]);
            }
        } else {
            b.put(0, (byte) 0x60);
            b.putShort(4, (short) (l4Len + payloadLen));
            b.put(6, (byte) protocol);
            b.put(7, (byte) 64);
            for (int i = 0; i < 16; i++) {
                b.put(8 + i, src[i]);
                b.put(24 + i, dst[i]);
            }
        }
        int l4 = ipLen;
        if (protocol == Ip.TCP) {
            b.putShort(l4, (short) sport);
            b.putShort(l4 + 2, (short) dport);
            b.putInt(l4 + 4, 12345);
            b.put(l4 + 12, (byte) 0x50);
            b.put(l4 + 13, (byte) Ip.TCP_SYN);
            b.putShort(l4 + 14, (short) 65535);
        } else if (protocol == Ip.UDP) {
            b.putShort(l4, (short) sport);
            b.putShort(l4 + 2, (short) dport);
            b.putShort(l4 + 4, (short) (Ip.UDP_HEADER + payloadLen));
        } else {
            b.put(l4, (byte) (version == 4 ? 8 : 128)); // echo request
            b.putShort(l4 + 4, (short) sport);
            b.putShort(l4 + 6, (short) 1);
        }
        for (int i = 0; i < payloadLen; i++) {
            b.put(ipLen + l4Len + i, (byte) (i * 7));
        }
        PacketView v = new PacketView();
        DropReason r;
        // the IPv4 header checksum must be right before parse accepts the packet
        if (version == 4) {
            long sum = Checksum.sum(b, 0, Ip.V4_HEADER);
            b.putShort(10, (short) Checksum.finish(sum));
        }
        r = v.parse(b, 0, total, new FlowKey());
        if (r != DropReason.NONE) {
            throw new IllegalStateException("built a bad packet: " + r);
        }
        v.fixChecksums();
        return b;
    }

    static byte[] v4(int a, int b, int c, int d) {
        return new byte[] {(byte) a, (byte) b, (byte) c, (byte) d};
    }

    static byte[] v6(int last) {
        byte[] a = new byte[16];
        a[0] = (byte) 0xfd;
        a[15] = (byte) last;
        return a;
    }
}
