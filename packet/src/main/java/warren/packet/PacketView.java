package warren.packet;

import java.nio.ByteBuffer;

/**
 * A validating view of one IP packet in a buffer (a flyweight: {@link #parse} it, read and
 * rewrite it, parse the next one; no allocation). Parsing reads only through bounds-checked
 * offsets: every length field (IHL, total/payload length, TCP data offset, UDP length) is checked
 * against the received length, and a failed check is a {@link DropReason}, never an exception.
 *
 * <p>Accepted on the NAT path: IPv4 without options and not fragmented, IPv6 without extension
 * headers, carrying TCP, UDP, ICMP (v4) or ICMPv6. Rewrites keep every checksum right with the
 * incremental update of RFC 1624.
 */
public final class PacketView {
    private ByteBuffer b;
    private int off;
    private int len;
    private int version;
    private int protocol;
    private int l4;
    private int payload;

    /**
     * Parses the packet of {@code length} bytes at {@code offset}; fills {@code key}. Returns
     * {@link DropReason#NONE} if it may be forwarded.
     */
    public DropReason parse(ByteBuffer buf, int offset, int length, FlowKey key) {
        this.b = buf;
        this.off = offset;
        this.len = length;
        if (length < 1) {
            return DropReason.TRUNCATED;
        }
        version = (buf.get(offset) & 0xFF) >>> 4;
        int l3len;
        if (version == 4) {
            if (length < Ip.V4_HEADER) {
                return DropReason.TRUNCATED;
            }
            int ihl = (buf.get(offset) & 0x0F) * 4;
            if (ihl < Ip.V4_HEADER) {
                return DropReason.BAD_IHL;
            }
            int total = u16(Ip.V4_TOTAL_LENGTH);
            if (total < ihl || total > length) {
                return total > length ? DropReason.TRUNCATED : DropReason.BAD_LENGTH;
            }
            if (ihl > Ip.V4_HEADER) {
                return DropReason.IPV4_OPTIONS;
            }
            int frag = u16(Ip.V4_FRAG);
            if ((frag & 0x3FFF) != 0) { // MF set or a non-zero offset
                return DropReason.FRAGMENT;
            }
            if (Checksum.fold(Checksum.sum(buf, offset, Ip.V4_HEADER)) != 0xFFFF) {
                return DropReason.BAD_IP_CHECKSUM;
            }
            this.len = total; // ignore link padding beyond the IP length
            protocol = buf.get(offset + Ip.V4_PROTOCOL) & 0xFF;
            l4 = offset + Ip.V4_HEADER;
            l3len = total;
            key.version = 4;
            key.readAddresses(buf, offset + Ip.V4_SRC, offset + Ip.V4_DST, 4);
        } else if (version == 6) {
            if (length < Ip.V6_HEADER) {
                return DropReason.TRUNCATED;
            }
            int plen = u16(Ip.V6_PAYLOAD_LENGTH);
            if (Ip.V6_HEADER + plen > length) {
                return DropReason.TRUNCATED;
            }
            this.len = Ip.V6_HEADER + plen;
            protocol = buf.get(offset + Ip.V6_NEXT_HEADER) & 0xFF;
            if (protocol == 0 || protocol == 43 || protocol == 44 || protocol == 60 || protocol == 51
                    || protocol == 50 || protocol == 135 || protocol == 139 || protocol == 140) {
                return protocol == 44 ? DropReason.FRAGMENT : DropReason.IPV6_EXTENSION;
            }
            l4 = offset + Ip.V6_HEADER;
            l3len = this.len;
            key.version = 6;
            key.readAddresses(buf, offset + Ip.V6_SRC, offset + Ip.V6_DST, 16);
        } else {
            return DropReason.BAD_VERSION;
        }
        key.protocol = protocol;
        int l4len = offset + l3len - l4;
        switch (protocol) {
            case Ip.TCP: {
                if (l4len < Ip.TCP_HEADER) {
                    return DropReason.TRUNCATED;
                }
                int doff = ((buf.get(l4 + Ip.TCP_DATA_OFFSET) & 0xFF) >>> 4) * 4;
                if (doff < Ip.TCP_HEADER || doff > l4len) {
                    return DropReason.BAD_TCP_OFFSET;
                }
                payload = l4 + doff;
                key.srcPort = u16abs(l4);
                key.dstPort = u16abs(l4 + 2);
                return DropReason.NONE;
            }
            case Ip.UDP: {
                if (l4len < Ip.UDP_HEADER) {
                    return DropReason.TRUNCATED;
                }
                int ulen = u16abs(l4 + Ip.UDP_LENGTH);
                if (ulen < Ip.UDP_HEADER || ulen != l4len) {
                    return DropReason.BAD_UDP_LENGTH;
                }
                payload = l4 + Ip.UDP_HEADER;
                key.srcPort = u16abs(l4);
                key.dstPort = u16abs(l4 + 2);
                return DropReason.NONE;
            }
            case Ip.ICMP:
            case Ip.ICMPV6: {
                if ((protocol == Ip.ICMP) != (version == 4)) {
                    return DropReason.UNSUPPORTED_PROTOCOL;
                }
                if (l4len < Ip.ICMP_HEADER) {
                    return DropReason.TRUNCATED;
                }
                payload = l4 + Ip.ICMP_HEADER;
                key.srcPort = u16abs(l4 + Ip.ICMP_ECHO_ID); // the echo id stands in for both ports
                key.dstPort = key.srcPort;
                return DropReason.NONE;
            }
            default:
                return DropReason.UNSUPPORTED_PROTOCOL;
        }
    }

    private int u16(int rel) {
        return u16abs(off + rel);
    }

    private int u16abs(int abs) {
        return ((b.get(abs) & 0xFF) << 8) | (b.get(abs + 1) & 0xFF);
    }

    private void put16(int abs, int v) {
        b.put(abs, (byte) (v >>> 8));
        b.put(abs + 1, (byte) v);
    }

    /** Offset of the packet (its IP header) in the buffer. */
    public int offset() {
        return off;
    }

    /** The buffer of the last {@link #parse}. */
    public ByteBuffer buffer() {
        return b;
    }

    public int version() {
        return version;
    }

    public int protocol() {
        return protocol;
    }

    /** Length of the IP packet (without link padding). */
    public int length() {
        return len;
    }

    public int l4Offset() {
        return l4;
    }

    public int payloadOffset() {
        return payload;
    }

    public int payloadLength() {
        return off + len - payload;
    }

    public int tcpFlags() {
        return b.get(l4 + Ip.TCP_FLAGS) & 0xFF;
    }

    private int l4ChecksumOffset() {
        switch (protocol) {
            case Ip.TCP: return l4 + Ip.TCP_CHECKSUM;
            case Ip.UDP: return l4 + Ip.UDP_CHECKSUM;
            default: return l4 + Ip.ICMP_CHECKSUM;
        }
    }

    /** True if the transport checksum covers the addresses (TCP, UDP, ICMPv6 pseudo-header). */
    private boolean pseudoHeader() {
        return protocol != Ip.ICMP;
    }

    /**
     * Rewrites the source (or destination) address and port in place, updating the IPv4 header
     * checksum and the transport checksum incrementally. {@code addr} holds 4 or 16 bytes at
     * {@code addrOff}. For ICMP echo, the port is the echo id. The packet's transport checksum is
     * complete: {@code rewrite(source, addr, addrOff, port, false)}.
     */
    public void rewrite(boolean source, ByteBuffer addr, int addrOff, int port) {
        rewrite(source, addr, addrOff, port, false);
    }

    /**
     * {@link #rewrite(boolean, ByteBuffer, int, int)} for a packet whose transport checksum is
     * complete ({@code partialChecksum} false) or partial ({@code partialChecksum} true: a
     * {@link VnetHdr#F_NEEDS_CSUM} packet, the kernel's CHECKSUM_PARTIAL).
     *
     * <p>A partial checksum field holds the pseudo-header sum, folded and <i>not</i> complemented
     * (Linux {@code __tcp_v4_send_check}: {@code th->check = ~tcp_v4_check(len, saddr, daddr, 0)};
     * {@code udp4_hwcsum}, {@code udp6_hwcsum_outgoing} alike); whoever completes it (the kernel,
     * a NIC, {@link #completeChecksum}, {@link Gso}) sums the transport header and payload onto it.
     * So an address change updates it as a sum, S' = S + ~old + new (RFC 1624 applied without the
     * complements: {@code inet_proto_csum_replace4} with {@code pseudohdr} under
     * CHECKSUM_PARTIAL), and a port or echo id change leaves it alone: those bytes are in the part
     * that is summed later ({@code inet_proto_csum_replace2} with {@code pseudohdr} false does
     * nothing under CHECKSUM_PARTIAL). The IPv4 header checksum is always complete and updated as
     * usual. A UDP/IPv4 field of 0 means "no checksum" only when complete.
     */
    public void rewrite(boolean source, ByteBuffer addr, int addrOff, int port, boolean partialChecksum) {
        int alen = version == 4 ? 4 : 16;
        int aoff = off + (version == 4 ? (source ? Ip.V4_SRC : Ip.V4_DST) : (source ? Ip.V6_SRC : Ip.V6_DST));
        int csOff = l4ChecksumOffset();
        int cs = u16abs(csOff);
        boolean udpNoChecksum = !partialChecksum && protocol == Ip.UDP && version == 4 && cs == 0;
        if (pseudoHeader() && !udpNoChecksum) {
            if (partialChecksum) {
                // updateBytes complements on the way in and out: feed it ~S, take ~result
                cs = ~Checksum.updateBytes(~cs & 0xFFFF, b, aoff, addr, addrOff, alen) & 0xFFFF;
            } else {
                cs = Checksum.updateBytes(cs, b, aoff, addr, addrOff, alen);
            }
        }
        if (version == 4) {
            int ipcs = Checksum.updateBytes(u16(Ip.V4_CHECKSUM), b, aoff, addr, addrOff, 4);
            put16(off + Ip.V4_CHECKSUM, ipcs);
        }
        for (int i = 0; i < alen; i++) {
            b.put(aoff + i, addr.get(addrOff + i));
        }
        int portOff = protocol == Ip.ICMP || protocol == Ip.ICMPV6 ? l4 + Ip.ICMP_ECHO_ID : l4 + (source ? 0 : 2);
        int oldPort = u16abs(portOff);
        if (oldPort != port) {
            if (!udpNoChecksum && !partialChecksum) {
                cs = Checksum.update16(cs, oldPort, port);
            }
            put16(portOff, port);
        }
        if (protocol == Ip.UDP && !udpNoChecksum && !partialChecksum && cs == 0) {
            cs = 0xFFFF; // RFC 768: a computed 0 is sent as all ones
        }
        put16(csOff, cs);
    }

    /**
     * The partial checksum of this packet as the kernel writes it for CHECKSUM_PARTIAL: the
     * pseudo-header sum (addresses, protocol, and the transport length of <i>this</i> packet, a
     * whole GSO super-packet included) folded and not complemented. 0 for ICMP (no pseudo-header).
     */
    public int pseudoHeaderChecksum() {
        if (!pseudoHeader()) {
            return 0;
        }
        int alen = version == 4 ? 4 : 16;
        int src = off + (version == 4 ? Ip.V4_SRC : Ip.V6_SRC);
        return Checksum.fold(Checksum.sum(b, src, 2 * alen) + protocol + (off + len - l4));
    }

    /** Stores {@link #pseudoHeaderChecksum} in the checksum field: the packet becomes CHECKSUM_PARTIAL. */
    public void setPartialChecksum() {
        put16(l4ChecksumOffset(), pseudoHeaderChecksum());
    }

    /**
     * Completes a partial checksum in place (the kernel's {@code skb_checksum_help}): sums the
     * transport header and payload with the field still holding the pseudo-header sum, and stores
     * the complement (a UDP 0 as 0xFFFF). For a NEEDS_CSUM packet without GSO on its way to a
     * reader that does not take partial checksums.
     */
    public void completeChecksum() {
        int cs = Checksum.finish(Checksum.sum(b, l4, off + len - l4));
        put16(l4ChecksumOffset(), protocol == Ip.UDP && cs == 0 ? 0xFFFF : cs);
    }

    /**
     * Lowers a TCP SYN's MSS option to {@code max} if it is larger (RFC 6691 clamping), updating
     * a complete checksum incrementally (RFC 1624): right if it was right, still wrong if it
     * arrived wrong. Returns true if it changed the packet. Malformed options are left
     * alone (the kernel will judge them).
     */
    public boolean clampMss(int max) {
        if (protocol != Ip.TCP || (tcpFlags() & Ip.TCP_SYN) == 0) {
            return false;
        }
        int end = payload;
        int i = l4 + Ip.TCP_HEADER;
        while (i < end) {
            int kind = b.get(i) & 0xFF;
            if (kind == 0) {
                return false;
            }
            if (kind == 1) {
                i++;
                continue;
            }
            if (i + 1 >= end) {
                return false;
            }
            int olen = b.get(i + 1) & 0xFF;
            if (olen < 2 || i + olen > end) {
                return false;
            }
            if (kind == 2 && olen == 4) {
                int mss = u16abs(i + 2);
                if (mss <= max) {
                    return false;
                }
                int csOff = l4 + Ip.TCP_CHECKSUM;
                int cs = u16abs(csOff);
                if (((i + 2 - l4) & 1) == 0) {
                    cs = Checksum.update16(cs, mss, max);
                } else {
                    // the field straddles two checksum words: [length byte, MSS high] and [MSS low,
                    // next byte (0 past the end, RFC 1071's pad)]; update both, never recompute (a
                    // recomputed sum would make a packet that arrived corrupt look right)
                    int before = b.get(i + 1) & 0xFF;
                    int after = i + 4 < off + len ? b.get(i + 4) & 0xFF : 0;
                    cs = Checksum.update16(cs, (before << 8) | (mss >>> 8), (before << 8) | (max >>> 8));
                    cs = Checksum.update16(cs, ((mss & 0xFF) << 8) | after, ((max & 0xFF) << 8) | after);
                }
                put16(i + 2, max);
                put16(csOff, cs);
                return true;
            }
            i += olen;
        }
        return false;
    }

    /**
     * Sets the outer source or destination address without touching checksums or ports (for ICMP
     * errors, whose bytes 4-7 are not an id; call {@link #fixChecksums} afterwards).
     */
    public void setAddress(boolean source, ByteBuffer addr, int addrOff) {
        int alen = version == 4 ? 4 : 16;
        int aoff = off + (version == 4 ? (source ? Ip.V4_SRC : Ip.V4_DST) : (source ? Ip.V6_SRC : Ip.V6_DST));
        for (int i = 0; i < alen; i++) {
            b.put(aoff + i, addr.get(addrOff + i));
        }
    }

    /** Recomputes the transport checksum from scratch (for tests and for packets we build). */
    public int computeL4Checksum() {
        int csOff = l4ChecksumOffset();
        int saved = u16abs(csOff);
        put16(csOff, 0);
        long sum = Checksum.sum(b, l4, off + len - l4);
        if (pseudoHeader()) {
            int alen = version == 4 ? 4 : 16;
            int src = off + (version == 4 ? Ip.V4_SRC : Ip.V6_SRC);
            sum += Checksum.sum(b, src, 2 * alen); // source and destination are adjacent
            sum += protocol + (off + len - l4);
        }
        put16(csOff, saved);
        int cs = Checksum.finish(sum);
        return protocol == Ip.UDP && cs == 0 ? 0xFFFF : cs;
    }

    public int storedL4Checksum() {
        return u16abs(l4ChecksumOffset());
    }

    /** Recomputes and stores the IPv4 header checksum and the transport checksum. */
    public void fixChecksums() {
        if (version == 4) {
            put16(off + Ip.V4_CHECKSUM, 0);
            put16(off + Ip.V4_CHECKSUM, Checksum.finish(Checksum.sum(b, off, Ip.V4_HEADER)));
        }
        put16(l4ChecksumOffset(), computeL4Checksum());
    }

    /** True if the IPv4 header checksum is right (always true for IPv6, which has none). */
    public boolean ipChecksumOk() {
        return version != 4 || Checksum.fold(Checksum.sum(b, off, Ip.V4_HEADER)) == 0xFFFF;
    }
}
