package warren.fish.egress;

import java.util.Locale;
import java.util.concurrent.atomic.LongAdder;
import warren.daemon.metrics.Counters;
import warren.packet.DropReason;

/**
 * Every counter the engine bumps, looked up by name once, when the engine is built: the packet
 * paths hold {@link LongAdder}s (one per drop reason, in arrays by ordinal) and never build a name.
 * The names are those Status and the metrics families have always shown ({@code drops.bad_ihl},
 * {@code reservations.made}...); they now show 0 before the first event instead of being absent.
 */
final class EgressCounters {
    /** Why Fish dropped a packet that parsed (its parse failures are {@link DropReason}s): {@code drops.<name>}. */
    enum Drop {
        /** ICMP from a client that is not an echo request. */
        ICMP_NOT_ECHO,
        /** A client packet of the other IP family than its soft-unicast IP. */
        WRONG_FAMILY,
        /** A client packet whose source is not the client's identity (its first packet's). */
        WRONG_SOURCE,
        /** fish0 refused the write. */
        TUN_FULL,
        /** A packet from fish0 that does not parse. */
        REPLY_MALFORMED,
        /** A packet from fish0 no live flow matches. */
        REPLY_NO_FLOW,
        /** A client's socket buffer was full. */
        CLIENT_FULL,
        /** An ICMP error whose inner header cannot be read. */
        ICMP_ERROR_UNREADABLE,
        /** An ICMP error about no live flow. */
        ICMP_ERROR_NO_FLOW,
        /** A reply read on one loop for a client of another whose hand-over ring was full (N loops). */
        HANDOVER_FULL,
        /** A super-packet for a client without the capability with more or longer segments than a batch holds. */
        SEGMENTS_TOO_MANY
    }

    /** Traffic of ended clients; live clients are added by {@link Clients#sample}. */
    static final String[] TRAFFIC = {"ip.packets.out", "ip.packets.in", "ip.bytes.out", "ip.bytes.in"};

    private final LongAdder[] parseDrops = new LongAdder[DropReason.values().length];
    private final LongAdder[] drops = new LongAdder[Drop.values().length];
    final LongAdder kernelMulticast;
    final LongAdder reservationsMade;
    final LongAdder collisions;
    final LongAdder exhausted;
    final LongAdder reservationErrors;
    final LongAdder reservationsLost;
    /** Writes of batched ctnetlink requests (reservations of new flows, deletes of ended ones), and the requests they carried. */
    final LongAdder ctBatches;
    final LongAdder ctBatched;
    /** Super-packets (GSO) read from fish0, written to fish0, and cut into segments for a plain client. */
    final LongAdder offloadTunIn;
    final LongAdder offloadTunOut;
    final LongAdder offloadSegmented;
    /** Datagrams joined into UDP super-packets for fish0. */
    final LongAdder offloadJoined;
    /** A flow's reservation found remade by its own packets (its entry had gone) and taken back. */
    final LongAdder reservationsReclaimed;
    /** A live flow's entry given its fixed timeout again at a check (a delete and a create). */
    final LongAdder reservationsRefreshed;
    /** A port taken over from a flow an RST closed, for a new TCP flow when the range had none free. */
    final LongAdder reservationsReused;
    final LongAdder staleRemoved;
    final LongAdder flowsExpired;
    final LongAdder softIpsAdded;
    final LongAdder softIpsRemoved;
    final LongAdder icmpErrorsToClient;
    final LongAdder rejectsSent;
    /** Replies read on one loop and handed over to their client's loop (N loops). */
    final LongAdder handedOver;
    /** 1 when fish0's steering program could not be loaded or attached (N loops: replies land anywhere). */
    final LongAdder steeringUnavailable;
    /** {@link #TRAFFIC}, in that order. */
    final LongAdder[] traffic = new LongAdder[TRAFFIC.length];

    EgressCounters(Counters c) {
        for (DropReason r : DropReason.values()) {
            if (r != DropReason.NONE) {
                parseDrops[r.ordinal()] = c.counter(name(r.name()));
            }
        }
        for (Drop d : Drop.values()) {
            drops[d.ordinal()] = c.counter(name(d.name()));
        }
        kernelMulticast = c.counter("tun.kernel_multicast");
        reservationsMade = c.counter("reservations.made");
        collisions = c.counter("reservations.collisions");
        exhausted = c.counter("reservations.exhausted");
        reservationErrors = c.counter("reservations.errors");
        reservationsLost = c.counter("reservations.lost");
        ctBatches = c.counter("conntrack.batches");
        ctBatched = c.counter("conntrack.batched");
        offloadTunIn = c.counter("offload.tun_in");
        offloadTunOut = c.counter("offload.tun_out");
        offloadSegmented = c.counter("offload.segmented");
        offloadJoined = c.counter("offload.joined");
        reservationsReclaimed = c.counter("reservations.reclaimed");
        reservationsRefreshed = c.counter("reservations.refreshed");
        reservationsReused = c.counter("reservations.reused");
        staleRemoved = c.counter("reservations.stale_removed");
        flowsExpired = c.counter("flows.expired");
        softIpsAdded = c.counter("soft_ips.added");
        softIpsRemoved = c.counter("soft_ips.removed");
        icmpErrorsToClient = c.counter("icmp_errors.to_client");
        rejectsSent = c.counter("rejects.sent");
        handedOver = c.counter("handover.packets");
        steeringUnavailable = c.counter("tun.steering_unavailable");
        for (int i = 0; i < TRAFFIC.length; i++) {
            traffic[i] = c.counter(TRAFFIC[i]);
        }
    }

    private static String name(String reason) {
        return "drops." + reason.toLowerCase(Locale.ROOT);
    }

    /** A packet that did not parse ({@code r} is not NONE). */
    void drop(DropReason r) {
        parseDrops[r.ordinal()].increment();
    }

    void drop(Drop d) {
        drops[d.ordinal()].increment();
    }
}
