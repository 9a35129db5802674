package warren.packet;

import java.nio.ByteBuffer;

/**
 * The 10-byte {@code struct virtio_net_hdr} (include/uapi/linux/virtio_net.h) that a TUN device
 * opened with IFF_VNET_HDR puts before every packet it gives and expects before every packet it
 * takes, and that a client which declared the capability puts before every message: static
 * accessors at an absolute offset of a buffer, a validator against the packet behind it, and a
 * writer. No state, no allocation.
 *
 * <pre>
 *  0 u8  flags        NEEDS_CSUM 1 (checksum is partial: csum_start/csum_offset say where),
 *                     DATA_VALID 2 (the kernel verified the checksum; TUN reads only)
 *  1 u8  gso_type     NONE 0, TCPV4 1, UDP 3 (UFO: refused), TCPV6 4, UDP_L4 5; | ECN 0x80
 *  2 u16 hdr_len      hint: bytes of headers (the kernel's skb_headlen on reads)
 *  4 u16 gso_size     payload bytes per segment (the MSS) when gso_type != NONE
 *  6 u16 csum_start   where the checksummed part starts, from the IP header (= transport header)
 *  8 u16 csum_offset  where in it the checksum field is: 16 for TCP, 6 for UDP
 * </pre>
 *
 * The u16 fields are little-endian: virtio 1.0 byte order, which the kernel uses for a TUN on a
 * little-endian host (x86_64, arm64) and on any host after TUNSETVNETLE, which
 * {@code warren.linux.net.Tun#enableVnetHdr} sets.
 *
 * <p><b>What a super-packet is.</b> With gso_type != NONE the packet behind the header is one IP
 * packet of up to 64 KiB: its IPv4 total length / IPv6 payload length and its UDP length describe
 * the whole super-packet, its TCP/UDP header is the first segment's (FIN and PSH are meant for the
 * last, CWR for the first), and its checksum field is <i>partial</i>: the pseudo-header sum over
 * the super-packet's own transport length, folded, not complemented ({@link PacketView#rewrite}
 * explains the arithmetic). Linux puts the length in (tcp_gso_segment replaces {@code ~skb->len}
 * by each segment's length; __udp_gso_segment replaces {@code uh->len}); the "length 0" pseudo
 * header is a convention of some NICs' TSO descriptors (their drivers subtract the length), not of
 * virtio. {@link Gso} cuts a super-packet into the packets the kernel's GSO would send.
 *
 * <p><b>Validation</b> ({@link #validate}) follows the kernel's {@code tun_vnet_hdr_get} and
 * {@code virtio_net_hdr_to_skb}, stricter where a client could otherwise make the kernel or
 * {@link Gso} do something other than forward the packets it could have sent one by one:
 * <ul>
 *   <li>flags: only NEEDS_CSUM or DATA_VALID ({@link DropReason#BAD_VNET_FLAGS});</li>
 *   <li>gso_type: NONE, TCPV4 (IPv4 + TCP), TCPV6 (IPv6 + TCP), UDP_L4 (UDP over either), ECN only
 *       with TCP; UFO (UDP, 3) is refused as the kernel no longer segments it
 *       ({@link DropReason#BAD_GSO_TYPE});</li>
 *   <li>a GSO packet must have NEEDS_CSUM (the kernel insists only for UDP_L4; for TCP it would
 *       compute a checksum itself) ({@link DropReason#GSO_WITHOUT_CSUM});</li>
 *   <li>gso_size: not 0 and not GSO_BY_FRAGS (0xFFFF); IP + transport headers + gso_size within
 *       the caller's {@code maxSegment} (the MTU the segments must fit); for UDP_L4 at most
 *       {@link #UDP_MAX_SEGMENTS} segments ({@link DropReason#BAD_GSO_SIZE}). gso_size of a
 *       NONE packet is ignored, like the kernel. A GSO packet whose payload fits in one segment
 *       is valid and is one segment (the kernel: "too small packets are not really GSO ones");</li>
 *   <li>NEEDS_CSUM: csum_start = the transport header, csum_offset = 16 (TCP) or 6 (UDP), so the
 *       field is inside the headers {@link PacketView} checked ({@link DropReason#BAD_CSUM_START},
 *       {@link DropReason#BAD_CSUM_OFFSET}); ICMP with NEEDS_CSUM is refused;</li>
 *   <li>hdr_len, raised to csum_start + csum_offset + 2 as tun_vnet_hdr_get does, within the
 *       packet ({@link DropReason#BAD_VNET_HDR_LEN}).</li>
 * </ul>
 */
public final class VnetHdr {
    private VnetHdr() {}

    /** sizeof(struct virtio_net_hdr); what TUNSETVNETHDRSZ is given. */
    public static final int SIZE = 10;
    /** The longest message: header + IPv6 header + a 64 KiB payload. A TUN read buffer of this size never truncates. */
    public static final int MAX_MESSAGE = SIZE + Ip.V6_HEADER + 65535;

    public static final int FLAGS = 0;
    public static final int GSO_TYPE = 1;
    public static final int HDR_LEN = 2;
    public static final int GSO_SIZE = 4;
    public static final int CSUM_START = 6;
    public static final int CSUM_OFFSET = 8;

    public static final int F_NEEDS_CSUM = 1;
    public static final int F_DATA_VALID = 2;

    public static final int GSO_NONE = 0;
    public static final int GSO_TCPV4 = 1;
    /** UFO: IP fragmentation of a UDP datagram. Refused (Linux stopped generating it in 4.14). */
    public static final int GSO_UDP = 3;
    public static final int GSO_TCPV6 = 4;
    /** USO: one UDP datagram per gso_size bytes of payload (UDP_SEGMENT). */
    public static final int GSO_UDP_L4 = 5;
    public static final int GSO_ECN = 0x80;

    /** GSO_BY_FRAGS: a gso_size the kernel reserves; refused. */
    public static final int GSO_BY_FRAGS = 0xFFFF;
    /** UDP_MAX_SEGMENTS of include/linux/udp.h since Linux 6.10 (64 before). */
    public static final int UDP_MAX_SEGMENTS = 128;

    public static int flags(ByteBuffer b, int off) {
        return b.get(off + FLAGS) & 0xFF;
    }

    public static int gsoType(ByteBuffer b, int off) {
        return b.get(off + GSO_TYPE) & 0xFF;
    }

    public static int hdrLen(ByteBuffer b, int off) {
        return le16(b, off + HDR_LEN);
    }

    public static int gsoSize(ByteBuffer b, int off) {
        return le16(b, off + GSO_SIZE);
    }

    public static int csumStart(ByteBuffer b, int off) {
        return le16(b, off + CSUM_START);
    }

    public static int csumOffset(ByteBuffer b, int off) {
        return le16(b, off + CSUM_OFFSET);
    }

    public static boolean needsCsum(ByteBuffer b, int off) {
        return (flags(b, off) & F_NEEDS_CSUM) != 0;
    }

    /** True if gso_type is not NONE (the packet may be a super-packet). */
    public static boolean isGso(ByteBuffer b, int off) {
        return gsoType(b, off) != GSO_NONE;
    }

    /** Writes a whole header. */
    public static void write(ByteBuffer b, int off, int flags, int gsoType, int hdrLen, int gsoSize, int csumStart,
            int csumOffset) {
        b.put(off + FLAGS, (byte) flags);
        b.put(off + GSO_TYPE, (byte) gsoType);
        putLe16(b, off + HDR_LEN, hdrLen);
        putLe16(b, off + GSO_SIZE, gsoSize);
        putLe16(b, off + CSUM_START, csumStart);
        putLe16(b, off + CSUM_OFFSET, csumOffset);
    }

    /** Writes the all-zero header: no GSO, checksum complete. What goes before a client's plain packet. */
    public static void writeNone(ByteBuffer b, int off) {
        b.putLong(off, 0);
        b.putShort(off + 8, (short) 0);
    }

    /**
     * Writes the header for a packet the {@code view} parsed: NEEDS_CSUM at its transport
     * checksum if {@code partial}, and gso_type/gso_size if {@code gsoSize} > 0 (TCPV4, TCPV6 or
     * UDP_L4 from the packet; hdr_len = the headers). The packet's checksum field must match
     * ({@link PacketView#setPartialChecksum}).
     */
    public static void writeFor(ByteBuffer b, int off, PacketView view, boolean partial, int gsoSize) {
        int l4 = view.l4Offset() - view.offset();
        int csumOffset = view.protocol() == Ip.TCP ? Ip.TCP_CHECKSUM : Ip.UDP_CHECKSUM;
        int type = GSO_NONE;
        if (gsoSize > 0) {
            type = view.protocol() == Ip.UDP ? GSO_UDP_L4 : view.version() == 4 ? GSO_TCPV4 : GSO_TCPV6;
        }
        write(b, off, partial ? F_NEEDS_CSUM : 0, type, gsoSize > 0 ? view.payloadOffset() - view.offset() : 0,
                gsoSize > 0 ? gsoSize : 0, partial ? l4 : 0, partial ? csumOffset : 0);
    }

    /**
     * Reads a message of {@code length} bytes at {@code off}: a header and the packet behind it.
     * Parses the packet into {@code view} and {@code key} ({@link PacketView#parse}), then
     * {@link #validate}s the header against it. {@link DropReason#TRUNCATED} if shorter than a
     * header.
     */
    public static DropReason parse(ByteBuffer b, int off, int length, PacketView view, FlowKey key, int maxSegment) {
        if (length < SIZE) {
            return DropReason.TRUNCATED;
        }
        DropReason r = view.parse(b, off + SIZE, length - SIZE, key);
        return r != DropReason.NONE ? r : validate(b, off, view, maxSegment);
    }

    /**
     * Checks the header at {@code off} against the packet {@code view} last parsed (which must
     * have parsed as {@link DropReason#NONE}); {@code maxSegment} is the longest IP packet a
     * segment may be (the MTU of the path the segments take; 65535 to check only what the kernel
     * would). The rules are in the class comment.
     */
    public static DropReason validate(ByteBuffer b, int off, PacketView view, int maxSegment) {
        int flags = flags(b, off);
        if ((flags & ~(F_NEEDS_CSUM | F_DATA_VALID)) != 0 || flags == (F_NEEDS_CSUM | F_DATA_VALID)) {
            return DropReason.BAD_VNET_FLAGS;
        }
        int protocol = view.protocol();
        int type = gsoType(b, off);
        if (type != GSO_NONE) {
            boolean ecn = (type & GSO_ECN) != 0;
            switch (type & ~GSO_ECN) {
                case GSO_TCPV4:
                    if (view.version() != 4 || protocol != Ip.TCP) {
                        return DropReason.BAD_GSO_TYPE;
                    }
                    break;
                case GSO_TCPV6:
                    if (view.version() != 6 || protocol != Ip.TCP) {
                        return DropReason.BAD_GSO_TYPE;
                    }
                    break;
                case GSO_UDP_L4:
                    if (protocol != Ip.UDP || ecn) {
                        return DropReason.BAD_GSO_TYPE;
                    }
                    break;
                default:
                    return DropReason.BAD_GSO_TYPE; // UFO (3), NONE with ECN, unknown
            }
            if ((flags & F_NEEDS_CSUM) == 0) {
                return DropReason.GSO_WITHOUT_CSUM;
            }
            int gsoSize = gsoSize(b, off);
            int headers = view.payloadOffset() - view.offset();
            if (gsoSize == 0 || gsoSize == GSO_BY_FRAGS || headers + gsoSize > maxSegment) {
                return DropReason.BAD_GSO_SIZE;
            }
            if (protocol == Ip.UDP && view.payloadLength() > gsoSize * UDP_MAX_SEGMENTS) {
                return DropReason.BAD_GSO_SIZE;
            }
        }
        int hdrLen = hdrLen(b, off);
        if ((flags & F_NEEDS_CSUM) != 0) {
            if (protocol != Ip.TCP && protocol != Ip.UDP
                    || csumStart(b, off) != view.l4Offset() - view.offset()) {
                return DropReason.BAD_CSUM_START;
            }
            int csumOffset = csumOffset(b, off);
            if (csumOffset != (protocol == Ip.TCP ? Ip.TCP_CHECKSUM : Ip.UDP_CHECKSUM)) {
                return DropReason.BAD_CSUM_OFFSET;
            }
            hdrLen = Math.max(hdrLen, csumStart(b, off) + csumOffset + 2);
        }
        if (hdrLen > view.length()) {
            return DropReason.BAD_VNET_HDR_LEN;
        }
        return DropReason.NONE;
    }

    private static int le16(ByteBuffer b, int abs) {
        return (b.get(abs) & 0xFF) | ((b.get(abs + 1) & 0xFF) << 8);
    }

    private static void putLe16(ByteBuffer b, int abs, int v) {
        b.put(abs, (byte) v);
        b.put(abs + 1, (byte) (v >>> 8));
    }
}
