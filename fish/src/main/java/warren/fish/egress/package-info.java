/**
 * Fish's egress engine and what it owns. Lifetimes, each ended in one place:
 * <ul>
 * <li>{@link warren.fish.egress.EgressNamespace}: the egress namespace ({@code fish.netns}, required)
 *     and Fish's things there — fish0, its nftables table keeping conntrack active, the netlink
 *     sockets; the table and fish0 go with Fish's fds, the routes with fish0.
 * <li>a soft-unicast IP (a route to fish0 and a {@link warren.fish.egress.PortTable} of its flows):
 *     from its first client's Egress to its last client's end; found by reply packets through an
 *     {@link warren.fish.egress.AddressTable} without allocating.
 * <li>a client (one Egress): until its SEQPACKET peer closes, a reply finds its DGRAM peer gone, it
 *     is idle past {@code fish.client_idle_timeout} with no flow (DGRAM), or it is cancelled or stopped.
 * <li>a flow and its conntrack entry (IPS_FIXED_TIMEOUT, marked with its client's task and source
 *     port): NEW at its first packet, refreshed at each check while live, deleted when it expires
 *     or its client ends. Entries of Fish's kind no client claims are stale and go at start.
 * </ul>
 * The engine, {@link warren.fish.egress.Egress}, is its parts wired together, one set per event
 * loop ({@link warren.fish.egress.Lane}, with fish0's queue of that index), each with one job;
 * the control loop checks and places clients ({@link warren.fish.egress.LoopPlacement}) and
 * publishes who owns which range ({@link warren.fish.egress.Owners}) for replies that arrive on
 * another loop, which hands them over (docs/fish.md, "Threads"):
 * <ul>
 * <li>{@link warren.fish.egress.Clients}: one loop's clients and soft-unicast IPs, their start,
 *     idle timeout and end (one place: {@code Clients.end}, with the proto's typed EndReason);
 * <li>{@link warren.fish.egress.PortLeases}: port leasing (range allocator, conntrack
 *     reservation, refresh, expiry with a typed {@link warren.fish.egress.FlowEnd}); the flow
 *     state machine is on {@link warren.fish.egress.Flow};
 * <li>{@link warren.fish.egress.ClientPath}: client socket -> rewrite -> fish0, and rejects;
 * <li>{@link warren.fish.egress.ReplyPath}: fish0 -> reverse rewrite -> client, ICMP errors;
 * <li>{@link warren.fish.egress.FishStateCodec} and {@link warren.fish.egress.FishFdStore}:
 *     the state across processes (handoff records, fd store, recovery);
 * <li>{@link warren.fish.egress.EgressCounters}: every counter, looked up once;
 * <li>{@link warren.fish.egress.PortTable} and {@link warren.fish.egress.AddressTable} on
 *     {@link warren.fish.egress.OpenTable}: the allocation-free lookups of the reply path.
 * </ul>
 * The paths own their buffers and the tables are plain per-owner objects, so each piece can be
 * placed on a loop: nothing here reaches for "the" loop except through the one it was given.
 * Every registration and timer of a lane (its queue, its rings' wakeup, its clients' sockets,
 * their idle checks, its flows' checks) is in the lane's {@code EventLoop.Group}: an upgrade
 * pauses a loop's part in O(1) and resumes it, or starts an adopted one, in one call.
 */
package warren.fish.egress;
