/**
 * packet: IPv4/IPv6/TCP/UDP/ICMP layouts ({@link warren.packet.Ip}), a validating flyweight view
 * with in-place NAT rewrites ({@link warren.packet.PacketView}), the Internet checksum, full and
 * incremental ({@link warren.packet.Checksum}, RFC 1071/1624), flow keys and drop reasons.
 *
 * <p>Offloads (issue #15): {@link warren.packet.VnetHdr} reads, validates and writes the
 * virtio_net_hdr a TUN with IFF_VNET_HDR (or a client that declared the capability) puts before
 * each packet; {@link warren.packet.PacketView#rewrite(boolean, java.nio.ByteBuffer, int, int, boolean)}
 * keeps a partial (CHECKSUM_PARTIAL) checksum right through NAT; {@link warren.packet.Gso} cuts a
 * TCP or UDP super-packet into the packets the kernel's GSO would send, with full checksums, and
 * {@link warren.packet.PacketView#completeChecksum} completes a partial checksum in place.
 *
 * <p>How Fish or Bumblebee use them, per direction (buffers preallocated, nothing per packet):
 * <ul>
 *   <li><b>TUN to client.</b> read(2) up to {@link warren.packet.VnetHdr#MAX_MESSAGE} bytes;
 *       {@link warren.packet.VnetHdr#parse} (header + packet; maxSegment = the TUN MTU); rewrite
 *       with {@code partialChecksum = VnetHdr.needsCsum(...)}. A client that declared the
 *       capability gets the message as it is (header included). Otherwise: a GSO packet goes out
 *       as {@link warren.packet.Gso#segments} packets written by {@link warren.packet.Gso#segment}
 *       into a {@code warren.fdpass.SendBatch}'s slots, one sendmmsg(2); a NEEDS_CSUM packet
 *       without GSO gets {@link warren.packet.PacketView#completeChecksum} and goes out without
 *       the header; anything else goes out without the header.</li>
 *   <li><b>Client to TUN.</b> A capable client's message: {@link warren.packet.VnetHdr#parse}
 *       (maxSegment = the client's MTU, so a client cannot make the kernel emit packets it could
 *       not have sent itself), rewrite as above, write(2) it whole. A plain client's packet is
 *       received {@link warren.packet.VnetHdr#SIZE} bytes into its slot, and
 *       {@link warren.packet.VnetHdr#writeNone} fills the headroom, so the same write(2) carries it
 *       (a TUN with IFF_VNET_HDR takes nothing without a header).</li>
 * </ul>
 * Depends on nothing; allocates nothing per packet. Used by Bumblebee and Fish.
 */
package warren.packet;
