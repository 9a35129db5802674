package warren.packet;

/**
 * Header layouts (offsets from the start of each header), IANA protocol numbers and small
 * accessors, for IPv4 (RFC 791), IPv6 (RFC 8200), TCP (RFC 9293), UDP (RFC 768), ICMP/ICMPv6.
 *
 * <pre>
 * IPv4  0 ver|ihl  1 tos  2 total length  4 id  6 flags|frag offset  8 ttl  9 protocol
 *      10 checksum  12 source  16 destination  (20: options or payload)
 * IPv6  0 ver|class|flow label  4 payload length  6 next header  7 hop limit
 *       8 source (16)  24 destination (16)  (40: payload)
 * TCP   0 src port  2 dst port  4 seq  8 ack  12 data offset|flags  13 flags  14 window
 *      16 checksum  18 urgent  (20: options)
 * UDP   0 src port  2 dst port  4 length  6 checksum
 * ICMP  0 type  1 code  2 checksum  4 id (echo)  6 seq (echo)
 * </pre>
 */
public final class Ip {
    private Ip() {}

    public static final int ICMP = 1;
    public static final int TCP = 6;
    public static final int UDP = 17;
    public static final int ICMPV6 = 58;

    public static final int V4_HEADER = 20;
    public static final int V4_TOTAL_LENGTH = 2;
    public static final int V4_FRAG = 6;
    public static final int V4_TTL = 8;
    public static final int V4_PROTOCOL = 9;
    public static final int V4_CHECKSUM = 10;
    public static final int V4_SRC = 12;
    public static final int V4_DST = 16;

    public static final int V6_HEADER = 40;
    public static final int V6_PAYLOAD_LENGTH = 4;
    public static final int V6_NEXT_HEADER = 6;
    public static final int V6_HOP_LIMIT = 7;
    public static final int V6_SRC = 8;
    public static final int V6_DST = 24;

    public static final int TCP_HEADER = 20;
    public static final int TCP_DATA_OFFSET = 12;
    public static final int TCP_FLAGS = 13;
    public static final int TCP_CHECKSUM = 16;
    public static final int TCP_FIN = 0x01;
    public static final int TCP_SYN = 0x02;
    public static final int TCP_RST = 0x04;
    public static final int TCP_ACK = 0x10;

    public static final int UDP_HEADER = 8;
    public static final int UDP_LENGTH = 4;
    public static final int UDP_CHECKSUM = 6;

    public static final int ICMP_HEADER = 8;
    public static final int ICMP_CHECKSUM = 2;
    public static final int ICMP_ECHO_ID = 4;

    /**
     * An IPv4 address (4 bytes) dotted, an IPv6 one (16 bytes) in RFC 5952's short form
     * ("fd00:202::", "fd00::1"): for logs, errors and the CLI's tables.
     */
    public static String text(byte[] a) {
        if (a.length == 4) {
            return (a[0] & 0xFF) + "." + (a[1] & 0xFF) + "." + (a[2] & 0xFF) + "." + (a[3] & 0xFF);
        }
        int[] g = new int[8];
        for (int i = 0; i < 8; i++) {
            g[i] = ((a[2 * i] & 0xFF) << 8) | (a[2 * i + 1] & 0xFF);
        }
        int best = -1;
        int bestLen = 1; // a single zero group is not shortened (RFC 5952 4.2.2)
        for (int i = 0; i < 8; ) {
            int j = i;
            while (j < 8 && g[j] == 0) {
                j++;
            }
            if (j - i > bestLen) {
                best = i;
                bestLen = j - i;
            }
            i = j == i ? i + 1 : j;
        }
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < 8; i++) {
            if (i == best) {
                sb.append("::");
                i += bestLen - 1;
                continue;
            }
            if (sb.length() > 0 && sb.charAt(sb.length() - 1) != ':') {
                sb.append(':');
            }
            sb.append(Integer.toHexString(g[i]));
        }
        return sb.toString();
    }
}
