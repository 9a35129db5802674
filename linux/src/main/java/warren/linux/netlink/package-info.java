/**
 * Netlink (netlink(7)) from Java, shared by every netlink family warren speaks: rtnetlink
 * ({@link warren.linux.net.Rtnetlink}), ctnetlink and nf_tables (Fish's {@code warren.fish.conntrack}).
 * {@link warren.linux.netlink.NetlinkMessage} writes requests (nlmsghdr, the family's header,
 * nested attributes) into one preallocated buffer; {@link warren.linux.netlink.NetlinkSocket}
 * sends them and is the one reader of the answers (ACK / -errno per sequence number, NLMSG_DONE,
 * replies handed to the caller); {@link warren.linux.netlink.NetlinkAttributes} walks received
 * attributes with bounds checks. Control path only: requests are made at setup and per lease,
 * never per packet.
 */
package warren.linux.netlink;
