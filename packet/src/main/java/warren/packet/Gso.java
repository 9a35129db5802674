package warren.packet;

import java.nio.ByteBuffer;

/**
 * Software GSO: cuts a super-packet ({@link VnetHdr}: gso_type TCPV4, TCPV6 or UDP_L4 with
 * gso_size) into the packets the kernel's GSO would put on the wire, for a reader that cannot
 * take super-packets (a client that did not declare the capability). Static, allocation-free:
 * segment {@code i} is written into a caller's slot (e.g. one of a {@code warren.fdpass.SendBatch}'s
 * for sendmmsg(2)), so a caller fills slots as they come free and never needs room for all.
 *
 * <p>Each segment is the super-packet's IP and transport headers (options included) followed by
 * {@code gso_size} bytes of payload (the last one the rest), with what Linux changes per segment
 * (net/ipv4/tcp_offload.c {@code tcp_gso_segment}, net/ipv4/udp_offload.c
 * {@code __udp_gso_segment}, net/ipv4/af_inet.c {@code inet_gso_segment}, net/ipv6/ip6_offload.c
 * {@code ipv6_gso_segment}):
 * <ul>
 *   <li>IPv4 total length / IPv6 payload length of the segment; the IPv4 id is the
 *       super-packet's plus the segment's index (mod 2^16: a virtio header cannot ask for the
 *       kernel's fixed-id mode, SKB_GSO_TCP_FIXEDID), and the IPv4 header checksum is
 *       recomputed;</li>
 *   <li>TCP: the sequence number advances by gso_size per segment; FIN and PSH stay only on the
 *       last segment, CWR only on the first; everything else (ACK, window, options) is copied;</li>
 *   <li>UDP: each segment is a datagram with its own length;</li>
 *   <li>the transport checksum is computed in full over the segment (a UDP 0 sent as 0xFFFF), so
 *       whatever the super-packet's field held (partial or not) does not matter.</li>
 * </ul>
 * A packet that is not GSO, or whose payload fits in one segment, is one segment: a copy with a
 * complete checksum (for that case {@link PacketView#completeChecksum} in place saves the copy).
 */
public final class Gso {
    private Gso() {}

    private static final int TCP_PSH = 0x08;
    private static final int TCP_CWR = 0x80;
    private static final int V4_ID = 4;
    private static final int TCP_SEQ = 4;

    /** Number of segments: payload / gsoSize rounded up, at least 1 (1 if {@code gsoSize} is 0). */
    public static int segments(PacketView view, int gsoSize) {
        int payload = view.payloadLength();
        if (gsoSize <= 0 || payload <= gsoSize) {
            return 1;
        }
        return (payload + gsoSize - 1) / gsoSize;
    }

    /** Length of segment {@code i}'s IP packet. */
    public static int segmentLength(PacketView view, int gsoSize, int i) {
        int headers = view.payloadOffset() - view.offset();
        return headers + segmentPayload(view, gsoSize, i);
    }

    private static int segmentPayload(PacketView view, int gsoSize, int i) {
        int payload = view.payloadLength();
        if (gsoSize <= 0 || payload <= gsoSize) {
            return payload;
        }
        return Math.min(gsoSize, payload - i * gsoSize);
    }

    /**
     * Writes segment {@code i} (0 ≤ i < {@link #segments}) of the TCP or UDP super-packet the
     * {@code view} parsed into {@code dst} at {@code dstOff}, which must not overlap it and must
     * have {@link #segmentLength} bytes of room; returns that length. Byte-order independent (absolute
     * byte reads and writes; {@link Checksum#sum} handles either order). Only for TCP and UDP
     * ({@link VnetHdr#validate} refuses GSO of anything else): IllegalArgumentException otherwise.
     */
    public static int segment(PacketView view, int gsoSize, int i, ByteBuffer dst, int dstOff) {
        if (view.protocol() != Ip.TCP && view.protocol() != Ip.UDP) {
            throw new IllegalArgumentException("GSO of protocol " + view.protocol());
        }
        ByteBuffer src = view.buffer();
        int off = view.offset();
        int headers = view.payloadOffset() - off;
        int l4 = view.l4Offset() - off;
        int payload = segmentPayload(view, gsoSize, i);
        int total = headers + payload;
        dst.put(dstOff, src, off, headers);
        dst.put(dstOff + headers, src, view.payloadOffset() + i * Math.max(gsoSize, 0), payload);
        int alen;
        int addrs;
        if (view.version() == 4) {
            put16(dst, dstOff + Ip.V4_TOTAL_LENGTH, total);
            put16(dst, dstOff + V4_ID, u16(src, off + V4_ID) + i);
            put16(dst, dstOff + Ip.V4_CHECKSUM, 0);
            put16(dst, dstOff + Ip.V4_CHECKSUM, Checksum.finish(Checksum.sum(dst, dstOff, Ip.V4_HEADER)));
            alen = 4;
            addrs = dstOff + Ip.V4_SRC;
        } else {
            put16(dst, dstOff + Ip.V6_PAYLOAD_LENGTH, total - Ip.V6_HEADER);
            alen = 16;
            addrs = dstOff + Ip.V6_SRC;
        }
        int dl4 = dstOff + l4;
        int csOff;
        if (view.protocol() == Ip.TCP) {
            put32(dst, dl4 + TCP_SEQ, u32(src, view.l4Offset() + TCP_SEQ) + i * Math.max(gsoSize, 0));
            int flags = dst.get(dl4 + Ip.TCP_FLAGS) & 0xFF;
            if (i != segments(view, gsoSize) - 1) {
                flags &= ~(Ip.TCP_FIN | TCP_PSH);
            }
            if (i != 0) {
                flags &= ~TCP_CWR;
            }
            dst.put(dl4 + Ip.TCP_FLAGS, (byte) flags);
            csOff = dl4 + Ip.TCP_CHECKSUM;
        } else {
            put16(dst, dl4 + Ip.UDP_LENGTH, total - l4);
            csOff = dl4 + Ip.UDP_CHECKSUM;
        }
        put16(dst, csOff, 0);
        long sum = Checksum.sum(dst, dl4, total - l4) + Checksum.sum(dst, addrs, 2 * alen) + view.protocol() + (total - l4);
        int cs = Checksum.finish(sum);
        put16(dst, csOff, view.protocol() == Ip.UDP && cs == 0 ? 0xFFFF : cs);
        return total;
    }

    private static int u16(ByteBuffer b, int abs) {
        return ((b.get(abs) & 0xFF) << 8) | (b.get(abs + 1) & 0xFF);
    }

    private static int u32(ByteBuffer b, int abs) {
        return (u16(b, abs) << 16) | u16(b, abs + 2);
    }

    private static void put32(ByteBuffer b, int abs, int v) {
        put16(b, abs, v >>> 16);
        put16(b, abs + 2, v);
    }

    private static void put16(ByteBuffer b, int abs, int v) {
        b.put(abs, (byte) (v >>> 8));
        b.put(abs + 1, (byte) v);
    }
}
