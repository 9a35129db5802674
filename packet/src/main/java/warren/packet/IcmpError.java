package warren.packet;

import java.nio.ByteBuffer;

/**
 * ICMP and ICMPv6 error messages (destination unreachable, packet too big, time exceeded,
 * parameter problem) carry the start of the packet they are about. NAT must translate that inner
 * packet too, or the receiver cannot match the error to its connection (RFC 5508 §4.2).
 *
 * <pre>
 * outer IP | ICMP type code checksum | 4 bytes (unused / MTU / pointer) | inner IP header | >= 8 bytes of inner L4
 * </pre>
 * Everything here reads through bounds checks against the packet's length and allocates nothing.
 */
public final class IcmpError {
    private IcmpError() {}

    /** True if the parsed packet is an ICMP(v6) error whose inner IP header and ports fit. */
    public static boolean is(PacketView v, ByteBuffer b) {
        int type;
        if (v.protocol() == Ip.ICMP) {
            type = b.get(v.l4Offset()) & 0xFF;
            if (type != 3 && type != 11 && type != 12) {
                return false;
            }
        } else if (v.protocol() == Ip.ICMPV6) {
            type = b.get(v.l4Offset()) & 0xFF;
            if (type < 1 || type > 4) {
                return false;
            }
        } else {
            return false;
        }
        return innerLength(v) > 0;
    }

    /** Offset of the inner IP header. */
    public static int innerOffset(PacketView v) {
        return v.l4Offset() + Ip.ICMP_HEADER;
    }

    /** Length of the inner packet present, or -1 if its IP header and 8 bytes of L4 do not fit. */
    public static int innerLength(PacketView v) {
        int len = v.payloadLength();
        return len >= (v.version() == 4 ? Ip.V4_HEADER : Ip.V6_HEADER) + 8 ? len : -1;
    }

    /**
     * Reads the inner packet's 5-tuple into {@code key} (lenient: the inner packet is usually cut
     * after its first 8 L4 bytes). Returns false if it is not a TCP or UDP packet of the outer
     * packet's IP version, or does not fit.
     */
    public static boolean innerKey(PacketView v, ByteBuffer b, FlowKey key) {
        int off = innerOffset(v);
        int len = innerLength(v);
        if (len < 0) {
            return false;
        }
        int version = (b.get(off) & 0xFF) >>> 4;
        if (version != v.version()) {
            return false;
        }
        int hdr;
        int proto;
        if (version == 4) {
            hdr = (b.get(off) & 0x0F) * 4;
            proto = b.get(off + Ip.V4_PROTOCOL) & 0xFF;
            if (hdr != Ip.V4_HEADER || len < hdr + 8) {
                return false;
            }
            key.version = 4;
            key.readAddresses(b, off + Ip.V4_SRC, off + Ip.V4_DST, 4);
        } else {
            hdr = Ip.V6_HEADER;
            proto = b.get(off + Ip.V6_NEXT_HEADER) & 0xFF;
            if (len < hdr + 8) {
                return false;
            }
            key.version = 6;
            key.readAddresses(b, off + Ip.V6_SRC, off + Ip.V6_DST, 16);
        }
        if (proto != Ip.TCP && proto != Ip.UDP) {
            return false;
        }
        key.protocol = proto;
        key.srcPort = ((b.get(off + hdr) & 0xFF) << 8) | (b.get(off + hdr + 1) & 0xFF);
        key.dstPort = ((b.get(off + hdr + 2) & 0xFF) << 8) | (b.get(off + hdr + 3) & 0xFF);
        return true;
    }

    /**
     * Rewrites the inner packet's source or destination address and port, keeping the inner IPv4
     * header checksum right and the inner TCP/UDP checksum too when it is present. Call
     * {@link #fixOuter} after the rewrites.
     */
    public static void rewriteInner(PacketView v, ByteBuffer b, boolean source, ByteBuffer addr, int addrOff, int port) {
        int off = innerOffset(v);
        int len = innerLength(v);
        boolean v4 = v.version() == 4;
        int alen = v4 ? 4 : 16;
        int hdr = v4 ? Ip.V4_HEADER : Ip.V6_HEADER;
        int proto = b.get(off + (v4 ? Ip.V4_PROTOCOL : Ip.V6_NEXT_HEADER)) & 0xFF;
        int aoff = off + (v4 ? (source ? Ip.V4_SRC : Ip.V4_DST) : (source ? Ip.V6_SRC : Ip.V6_DST));
        int portOff = off + hdr + (source ? 0 : 2);
        int csOff = off + hdr + (proto == Ip.TCP ? Ip.TCP_CHECKSUM : Ip.UDP_CHECKSUM);
        boolean l4Checksum = csOff + 2 <= off + len && !(proto == Ip.UDP && v4 && u16(b, csOff) == 0);
        int cs = l4Checksum ? u16(b, csOff) : 0;
        if (l4Checksum) {
            cs = Checksum.updateBytes(cs, b, aoff, addr, addrOff, alen);
            cs = Checksum.update16(cs, u16(b, portOff), port);
        }
        if (v4) {
            put16(b, off + Ip.V4_CHECKSUM, Checksum.updateBytes(u16(b, off + Ip.V4_CHECKSUM), b, aoff, addr, addrOff, 4));
        }
        for (int i = 0; i < alen; i++) {
            b.put(aoff + i, addr.get(addrOff + i));
        }
        put16(b, portOff, port);
        if (l4Checksum) {
            put16(b, csOff, proto == Ip.UDP && cs == 0 ? 0xFFFF : cs);
        }
    }

    /** Recomputes the ICMP(v6) checksum (and so covers the outer and inner rewrites). */
    public static void fixOuter(PacketView v) {
        v.fixChecksums();
    }

    private static int u16(ByteBuffer b, int off) {
        return ((b.get(off) & 0xFF) << 8) | (b.get(off + 1) & 0xFF);
    }

    private static void put16(ByteBuffer b, int off, int v) {
        b.put(off, (byte) (v >>> 8));
        b.put(off + 1, (byte) v);
    }
}
