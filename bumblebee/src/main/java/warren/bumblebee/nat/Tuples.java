package warren.bumblebee.nat;

import com.google.protobuf.ByteString;
import warren.control.v1.FiveTuple;
import warren.packet.FlowKey;
import warren.packet.Ip;

/**
 * A flow's 5-tuples as the control protocol and the audit log show them: the original one, the
 * NAT-ed one (pool address and NAT port to the listener) and reversals. The control path: it
 * allocates.
 */
final class Tuples {
    private Tuples() {}

    static FiveTuple tuple(FlowKey k) {
        int len = k.addressLength();
        return FiveTuple.newBuilder().setProtocol(k.protocol).setSrcIp(ByteString.copyFrom(k.src, 0, len))
                .setSrcPort(k.srcPort).setDstIp(ByteString.copyFrom(k.dst, 0, len)).setDstPort(k.dstPort).build();
    }

    /** The flow's tuple inside the namespace: its slot's pool address and NAT port to the listener. */
    static FiveTuple translated(Flow f) {
        int v = f.original.version;
        return FiveTuple.newBuilder().setProtocol(Ip.TCP)
                .setSrcIp(ByteString.copyFrom(AddressPlan.poolAddress(v, f.slot))).setSrcPort(f.natPort)
                .setDstIp(ByteString.copyFrom(AddressPlan.listen(v))).setDstPort(AddressPlan.LISTEN_PORT).build();
    }

    /**
     * The audit line's text of {@link #translated} (a downgrade's destination is its inner socket),
     * e.g. {@code tcp 198.19.0.1:10042 -> 198.19.255.254:8080}: the addresses as
     * {@link java.net.InetAddress#getHostAddress} writes them, built without the message (once per
     * flow end: issue 15 counted the builder, two ByteStrings and two InetAddresses in each).
     */
    static String translatedText(Flow f) {
        int v = f.original.version;
        StringBuilder sb = new StringBuilder(96).append("tcp ");
        hostAddress(sb, AddressPlan.poolAddress(v, f.slot));
        sb.append(':').append(f.natPort).append(" -> ");
        hostAddress(sb, AddressPlan.listen(v));
        return sb.append(':').append(f.downgrade ? f.innerPort : AddressPlan.LISTEN_PORT).toString();
    }

    /**
     * {@code k.toString()} (e.g. {@code tcp 198.18.50.1:1025 -> 198.18.99.9:80}, IPv6 addresses in
     * brackets), built without an InetAddress and an array copy per address: the audit end line of
     * every flow has it.
     */
    static String text(FlowKey k) {
        StringBuilder sb = new StringBuilder(96).append(FlowKey.protoName(k.protocol)).append(' ');
        bracketed(sb, k, k.src).append(':').append(k.srcPort).append(" -> ");
        return bracketed(sb, k, k.dst).append(':').append(k.dstPort).toString();
    }

    private static StringBuilder bracketed(StringBuilder sb, FlowKey k, byte[] a) {
        if (k.version == 6) {
            sb.append('[');
        }
        hostAddress(sb, a, k.addressLength());
        return k.version == 6 ? sb.append(']') : sb;
    }

    static void hostAddress(StringBuilder sb, byte[] a) {
        hostAddress(sb, a, a.length);
    }

    /**
     * Appends the first {@code length} (4 or 16) bytes of {@code a} as {@link java.net.InetAddress#getHostAddress} does: dotted
     * quad; an IPv4-mapped IPv6 address as its IPv4 one; else eight hex groups without leading
     * zeros and without "::" compression.
     */
    static void hostAddress(StringBuilder sb, byte[] a, int length) {
        int off = length == 16 && ipv4Mapped(a) ? 12 : 0;
        if (length - off == 4) {
            for (int i = 0; i < 4; i++) {
                sb.append(i == 0 ? "" : ".").append(a[off + i] & 0xFF);
            }
            return;
        }
        for (int i = 0; i < 8; i++) {
            sb.append(i == 0 ? "" : ":").append(Integer.toHexString(((a[2 * i] & 0xFF) << 8) | (a[2 * i + 1] & 0xFF)));
        }
    }

    private static boolean ipv4Mapped(byte[] a) {
        for (int i = 0; i < 10; i++) {
            if (a[i] != 0) {
                return false;
            }
        }
        return a[10] == (byte) 0xFF && a[11] == (byte) 0xFF;
    }

    static FlowKey reversed(FlowKey k) {
        FlowKey r = new FlowKey().copyFrom(k);
        swap(r);
        return r;
    }

    /** Turns {@code k} around in place: source and destination exchanged. */
    static void swap(FlowKey k) {
        for (int i = 0; i < 16; i++) {
            byte t = k.src[i];
            k.src[i] = k.dst[i];
            k.dst[i] = t;
        }
        int p = k.srcPort;
        k.srcPort = k.dstPort;
        k.dstPort = p;
    }
}
