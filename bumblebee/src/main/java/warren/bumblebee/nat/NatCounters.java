package warren.bumblebee.nat;

import java.util.Locale;
import java.util.concurrent.atomic.LongAdder;
import warren.daemon.metrics.Counters;
import warren.daemon.metrics.Families;
import warren.daemon.metrics.Histogram;
import warren.packet.DropReason;

/**
 * Every counter the NAT bumps, looked up by name once when the NAT is built; the packet and flow
 * paths hold the {@link LongAdder}s (no map lookup, no string built per packet or flow). The names
 * are the {@code Status} counters and, through {@link Families}, the metrics.
 */
final class NatCounters {
    /** Bytes of ended flows, flow to kernel ("out") and back; live flows are added at scrape time. */
    static final String BYTES_OUT = "ip.bytes.out";
    static final String BYTES_IN = "ip.bytes.in";

    private final LongAdder[] drops = new LongAdder[DropReason.values().length];
    private final LongAdder[] tunDrops = new LongAdder[DropReason.values().length];
    private final LongAdder[] ended = new LongAdder[FlowEnd.values().length];
    final LongAdder notSyn;
    final LongAdder tunNoFlow;
    /** Packets read from this loop's TUN queue for a slot of another loop (no steering program). */
    final LongAdder tunOtherLoop;
    /** Packets read from this loop's TUN queue and handed over to their slot's loop (no steering program). */
    final LongAdder handedOver;
    /** Packets to hand over that found the ring to their loop full (dropped: TCP resends). */
    final LongAdder handoverFull;
    final LongAdder socketFull;
    final LongAdder icmpNotForFlow;
    final LongAdder packetsIn;
    final LongAdder packetsOut;
    final LongAdder bytesOut;
    final LongAdder bytesIn;
    final LongAdder icmpToKernel;
    final LongAdder icmpToFlow;
    final LongAdder upgradesTcp;
    final LongAdder upgradesUdp;
    final LongAdder upgradesRefused;
    final LongAdder downgradesTcp;
    final LongAdder downgradesRefused;
    final LongAdder acceptsOrphan;
    /** GSO super-packets read from bb0 (the kernel's TSO of what an upgraded socket sends). */
    final LongAdder offloadTunIn;
    /** GSO super-packets of vnet_hdr flows written to bb0 whole. */
    final LongAdder offloadTunOut;
    /** Super-packets cut into segments: for a plain flow, a hand-over ring, or a bb0 without IFF_VNET_HDR. */
    final LongAdder offloadSegmented;
    final Histogram upgradeLatencyTcp;
    final Histogram upgradeLatencyUdp;

    NatCounters(Counters c) {
        for (DropReason r : DropReason.values()) {
            String name = r.name().toLowerCase(Locale.ROOT);
            drops[r.ordinal()] = c.counter("drops." + name); // drops.none as ever (a reason never counted)
            tunDrops[r.ordinal()] = r == DropReason.NONE ? null : c.counter("tun.drops." + name);
        }
        for (FlowEnd e : FlowEnd.values()) {
            ended[e.ordinal()] = c.counter(e.counter);
        }
        notSyn = c.counter("drops.not_a_flow_start");
        tunNoFlow = c.counter("drops.tun_no_flow");
        tunOtherLoop = c.counter("drops.tun_other_loop");
        handedOver = c.counter("handover.packets");
        handoverFull = c.counter("drops.handover_full");
        socketFull = c.counter("drops.socket_full");
        icmpNotForFlow = c.counter("drops.icmp_not_for_flow");
        packetsIn = c.counter("packets.flow_to_kernel");
        packetsOut = c.counter("packets.kernel_to_flow");
        bytesOut = c.counter(BYTES_OUT);
        bytesIn = c.counter(BYTES_IN);
        icmpToKernel = c.counter("icmp.to_kernel");
        icmpToFlow = c.counter("icmp.to_flow");
        upgradesTcp = c.counter("upgrades.tcp");
        upgradesUdp = c.counter("upgrades.udp");
        upgradesRefused = c.counter("upgrades.refused_no_slot");
        downgradesTcp = c.counter("downgrades.tcp");
        downgradesRefused = c.counter("downgrades.refused_no_slot");
        acceptsOrphan = c.counter("accepts.orphan");
        offloadTunIn = c.counter("offload.tun_in");
        offloadTunOut = c.counter("offload.tun_out");
        offloadSegmented = c.counter("offload.segmented");
        upgradeLatencyTcp = c.histogram(Families.UPGRADE_LATENCY.key() + "tcp");
        upgradeLatencyUdp = c.histogram(Families.UPGRADE_LATENCY.key() + "udp");
    }

    /** A packet from a flow socket dropped as malformed or not of its flow. */
    LongAdder drop(DropReason r) {
        return drops[r.ordinal()];
    }

    /** A packet read from the TUN dropped as malformed. */
    LongAdder tunDrop(DropReason r) {
        return tunDrops[r.ordinal()];
    }

    LongAdder ended(FlowEnd e) {
        return ended[e.ordinal()];
    }
}
