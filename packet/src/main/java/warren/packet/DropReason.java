package warren.packet;

/**
 * Why a packet from a flow socket was not forwarded. Counted per reason; never an exception on
 * the packet path.
 */
public enum DropReason {
    NONE,
    /** shorter than the headers it claims */
    TRUNCATED,
    /** IP version neither 4 nor 6 */
    BAD_VERSION,
    /** IPv4 IHL below 5 */
    BAD_IHL,
    /** total/payload length disagrees with what was received */
    BAD_LENGTH,
    /** IPv4 options present (not supported on the NAT path) */
    IPV4_OPTIONS,
    /** an IPv6 extension header (not supported on the NAT path) */
    IPV6_EXTENSION,
    /** an IPv4 fragment */
    FRAGMENT,
    /** neither TCP, UDP nor ICMP/ICMPv6 */
    UNSUPPORTED_PROTOCOL,
    /** TCP data offset below 5 or past the packet */
    BAD_TCP_OFFSET,
    /** UDP length disagrees with the IP length */
    BAD_UDP_LENGTH,
    /** IPv4 header checksum wrong */
    BAD_IP_CHECKSUM,
    /** the 5-tuple is not the flow's */
    WRONG_FLOW,
    /** a virtio_net_hdr flag other than NEEDS_CSUM or DATA_VALID, or both at once ({@link VnetHdr}) */
    BAD_VNET_FLAGS,
    /**
     * a gso_type that is unknown, UFO (3), ECN with UDP, or not the packet's: TCPV4 needs
     * IPv4+TCP, TCPV6 IPv6+TCP, UDP_L4 UDP
     */
    BAD_GSO_TYPE,
    /**
     * gso_size 0 or 0xFFFF (GSO_BY_FRAGS) for a GSO packet, a segment (headers + gso_size) longer
     * than allowed, or more UDP segments than the kernel takes (UDP_MAX_SEGMENTS)
     */
    BAD_GSO_SIZE,
    /** a GSO packet without NEEDS_CSUM (its checksum field would be meaningless) */
    GSO_WITHOUT_CSUM,
    /** NEEDS_CSUM with csum_start not the transport header (or a packet that is neither TCP nor UDP) */
    BAD_CSUM_START,
    /** NEEDS_CSUM with csum_offset not the TCP (16) or UDP (6) checksum field */
    BAD_CSUM_OFFSET,
    /** virtio_net_hdr hdr_len past the end of the packet */
    BAD_VNET_HDR_LEN
}
