package warren.packet;

import java.nio.ByteBuffer;

/**
 * Builds GSO super-packets the way the kernel hands them to a TUN reader: a virtio_net_hdr at
 * {@code off}, then an IP packet whose lengths cover the whole payload and whose transport checksum
 * field holds the partial (pseudo-header) sum. Payload byte k is {@link #payloadByte}(k).
 */
final class SuperPackets {
    private SuperPackets() {}

    static final int SEQ = 0xFFFFF000; // wraps inside the super-packet
    static final int IP_ID = 0xFFFA; // wraps too

    static byte payloadByte(int k) {
        return (byte) (k * 31 + (k >>> 8));
    }

    /**
     * A TCP super-packet (12 bytes of timestamp options) or a UDP one; {@code tcpFlags} for TCP.
     * Returns the total message length (header + packet).
     */
    static int build(ByteBuffer b, int off, int version, int protocol, int payload, int gsoSize, int tcpFlags) {
        byte[] src = version == 4 ? Packets.v4(198, 18, 1, 1) : Packets.v6(1);
        byte[] dst = version == 4 ? Packets.v4(198, 18, 2, 2) : Packets.v6(2);
        int p = off + VnetHdr.SIZE;
        int ipLen = version == 4 ? Ip.V4_HEADER : Ip.V6_HEADER;
        int l4Len = protocol == Ip.TCP ? Ip.TCP_HEADER + 12 : Ip.UDP_HEADER;
        int total = ipLen + l4Len + payload;
        for (int i = 0; i < total; i++) {
            b.put(p + i, (byte) 0);
        }
        if (version == 4) {
            b.put(p, (byte) 0x45);
            put16(b, p + 2, total);
            put16(b, p + 4, IP_ID);
            b.put(p + 6, (byte) 0x40); // DF
            b.put(p + 8, (byte) 64);
            b.put(p + 9, (byte) protocol);
            for (int i = 0; i < 4; i++) {
                b.put(p + 12 + i, src[i]);
                b.put(p + 16 + i, dst[i]);
            }
            put16(b, p + 10, Checksum.finish(Checksum.sum(b, p, 20)));
        } else {
            b.put(p, (byte) 0x60);
            put16(b, p + 4, l4Len + payload);
            b.put(p + 6, (byte) protocol);
            b.put(p + 7, (byte) 64);
            for (int i = 0; i < 16; i++) {
                b.put(p + 8 + i, src[i]);
                b.put(p + 24 + i, dst[i]);
            }
        }
        int l4 = p + ipLen;
        put16(b, l4, 40000);
        put16(b, l4 + 2, protocol == Ip.TCP ? 80 : 53);
        if (protocol == Ip.TCP) {
            b.put(l4 + 4, (byte) (SEQ >>> 24)).put(l4 + 5, (byte) (SEQ >>> 16)).put(l4 + 6, (byte) (SEQ >>> 8))
                    .put(l4 + 7, (byte) SEQ);
            b.put(l4 + 11, (byte) 7); // ack 7
            b.put(l4 + 12, (byte) 0x80); // data offset 8
            b.put(l4 + 13, (byte) tcpFlags);
            put16(b, l4 + 14, 502);
            b.put(l4 + 20, (byte) 1).put(l4 + 21, (byte) 1).put(l4 + 22, (byte) 8).put(l4 + 23, (byte) 10);
            for (int i = 0; i < 8; i++) {
                b.put(l4 + 24 + i, (byte) (0x10 + i));
            }
        } else {
            put16(b, l4 + 4, l4Len + payload);
        }
        for (int k = 0; k < payload; k++) {
            b.put(l4 + l4Len + k, payloadByte(k));
        }
        PacketView v = new PacketView();
        if (v.parse(b, p, total, new FlowKey()) != DropReason.NONE) {
            throw new IllegalStateException("built a bad packet");
        }
        v.setPartialChecksum();
        VnetHdr.writeFor(b, off, v, true, gsoSize);
        return VnetHdr.SIZE + total;
    }

    static void put16(ByteBuffer b, int abs, int v) {
        b.put(abs, (byte) (v >>> 8));
        b.put(abs + 1, (byte) v);
    }
}
