/**
 * packet: IPv4/IPv6/TCP/UDP/ICMP layouts ({@link warren.packet.Ip}), a validating flyweight view
 * with in-place NAT rewrites ({@link warren.packet.PacketView}), the Internet checksum, full and
 * incremental ({@link warren.packet.Checksum}, RFC 1071/1624), flow keys and drop reasons.
 * Depends on nothing; allocates nothing per packet. Used by Bumblebee and Fish.
 */
package warren.packet;
