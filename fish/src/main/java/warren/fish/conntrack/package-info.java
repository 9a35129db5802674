/**
 * Netfilter from Java over NETLINK_NETFILTER, for Fish's port reservations: ctnetlink
 * ({@link warren.fish.conntrack.Ctnetlink}: create-exclusive entries, read-back, fixed-timeout
 * refresh, delete, dump) and nf_tables ({@link warren.fish.conntrack.NfTables}: the owned table
 * whose rule keeps connection tracking active in the egress namespace). Both build their messages
 * with {@link warren.linux.netlink.NetlinkMessage}; NfTables reads the kernel's answers with
 * {@link warren.linux.netlink.NetlinkSocket}, Ctnetlink with a reader of its own that keeps each
 * answer for its request, so that a batch of requests (one write, answers read together with
 * recvmmsg(2), {@link warren.fish.conntrack.Ctnetlink.Batch}) fails request by request.
 */
package warren.fish.conntrack;
