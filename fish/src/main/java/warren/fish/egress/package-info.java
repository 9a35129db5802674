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
 * See {@link warren.fish.egress.Egress} for the packet path and the flow state machine.
 */
package warren.fish.egress;
