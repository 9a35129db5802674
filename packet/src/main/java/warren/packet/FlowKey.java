package warren.packet;

import java.net.InetAddress;
import java.net.UnknownHostException;
import java.nio.ByteBuffer;
import java.util.Arrays;

/**
 * A mutable 5-tuple (protocol, source and destination address and port; ICMP echo id in the
 * port fields), reused on the packet path: {@link PacketParser#parse} fills one without
 * allocating. Addresses are kept as 16 bytes (IPv4 in the first 4).
 */
public final class FlowKey {
    public int version;
    public int protocol;
    public final byte[] src = new byte[16];
    public final byte[] dst = new byte[16];
    public int srcPort;
    public int dstPort;

    public int addressLength() {
        return version == 4 ? 4 : 16;
    }

    void readAddresses(ByteBuffer b, int srcOff, int dstOff, int len) {
        for (int i = 0; i < len; i++) {
            src[i] = b.get(srcOff + i);
            dst[i] = b.get(dstOff + i);
        }
        for (int i = len; i < 16; i++) {
            src[i] = 0;
            dst[i] = 0;
        }
    }

    /** Same tuple (no allocation). */
    public boolean matches(FlowKey o) {
        return version == o.version && protocol == o.protocol && srcPort == o.srcPort && dstPort == o.dstPort
                && Arrays.equals(src, o.src) && Arrays.equals(dst, o.dst);
    }

    /** The reverse direction of {@code o}. */
    public boolean isReverseOf(FlowKey o) {
        return version == o.version && protocol == o.protocol && srcPort == o.dstPort && dstPort == o.srcPort
                && Arrays.equals(src, o.dst) && Arrays.equals(dst, o.src);
    }

    public FlowKey copyFrom(FlowKey o) {
        version = o.version;
        protocol = o.protocol;
        System.arraycopy(o.src, 0, src, 0, 16);
        System.arraycopy(o.dst, 0, dst, 0, 16);
        srcPort = o.srcPort;
        dstPort = o.dstPort;
        return this;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof FlowKey && matches((FlowKey) o);
    }

    @Override
    public int hashCode() {
        return ((Arrays.hashCode(src) * 31 + Arrays.hashCode(dst)) * 31 + (srcPort << 16 | dstPort)) * 31 + protocol;
    }

    @Override
    public String toString() {
        return protoName(protocol) + " " + addr(src) + ":" + srcPort + " -> " + addr(dst) + ":" + dstPort;
    }

    private String addr(byte[] a) {
        try {
            String s = InetAddress.getByAddress(Arrays.copyOf(a, addressLength())).getHostAddress();
            return version == 6 ? "[" + s + "]" : s;
        } catch (UnknownHostException e) {
            return "?";
        }
    }

    public static String protoName(int p) {
        switch (p) {
            case Ip.TCP: return "tcp";
            case Ip.UDP: return "udp";
            case Ip.ICMP: return "icmp";
            case Ip.ICMPV6: return "icmpv6";
            default: return "proto " + p;
        }
    }
}
