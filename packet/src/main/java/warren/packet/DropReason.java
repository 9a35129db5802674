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
    WRONG_FLOW
}
