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

    /** The audit line's text of {@link #translated} (a downgrade's destination is its inner socket). */
    static String translatedText(Flow f) {
        FiveTuple t = translated(f);
        try {
            String src = java.net.InetAddress.getByAddress(t.getSrcIp().toByteArray()).getHostAddress();
            String dst = java.net.InetAddress.getByAddress(t.getDstIp().toByteArray()).getHostAddress();
            int dport = f.downgrade ? f.innerPort : t.getDstPort();
            return "tcp " + src + ":" + t.getSrcPort() + " -> " + dst + ":" + dport;
        } catch (java.net.UnknownHostException e) {
            return "?";
        }
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
