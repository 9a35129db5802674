package warren.fish;

import java.util.List;
import warren.daemon.config.ConfigKey;
import warren.fish.egress.Prefix;

/** Fish's config keys; every one has a working default. */
public final class FishConfig {
    private FishConfig() {}

    public static final ConfigKey<String> NETNS = ConfigKey.text("fish.netns", "",
            "the egress network namespace (a path such as /run/netns/egress), required: Fish creates fish0, its"
                    + " routes, an nftables table and its conntrack entries there, and removes them when it stops;"
                    + " forwarding there is the operator's (Fish checks it). Fish never changes the namespace it runs in");
    public static final ConfigKey<List<Prefix>> SOFT_UNICAST_PREFIXES = ConfigKey.of("fish.soft_unicast_prefixes",
            List.of(), Prefix::parseList, Prefix::formatList,
            "the prefixes an Egress may take its soft-unicast IP from, e.g. 198.18.202.0/24, fd00:202::/64; empty ="
                    + " every Egress is refused until this is set. An IP that is the egress namespace's own, on one of"
                    + " its links or a gateway there is refused even inside these");
    public static final ConfigKey<Long> TCP_TIMEOUT = ConfigKey.millis("fish.tcp_timeout", 300_000,
            "an established TCP flow with no packet for this long expires");
    public static final ConfigKey<Long> TCP_CLOSE_TIMEOUT = ConfigKey.millis("fish.tcp_close_timeout", 10_000,
            "a TCP flow after FIN both ways or RST, or still half-open, expires after this");
    public static final ConfigKey<Long> UDP_TIMEOUT = ConfigKey.millis("fish.udp_timeout", 30_000,
            "a UDP flow with no packet for this long expires");
    public static final ConfigKey<Long> ICMP_TIMEOUT = ConfigKey.millis("fish.icmp_timeout", 30_000,
            "an ICMP echo flow with no packet for this long expires");

    public static final ConfigKey<Long> CLIENT_IDLE_TIMEOUT = ConfigKey.millis("fish.client_idle_timeout", 60_000,
            "a client on a SOCK_DGRAM socket (whose peer's close Fish cannot see) with no live flow and no packet for"
                    + " this long ends (EgressEnded, IDLE_TIMEOUT) and frees its range; a SOCK_SEQPACKET client ends"
                    + " when its peer closes");

    public static final ConfigKey<Long> CLIENT_SNDBUF = ConfigKey.bytes("fish.client_sndbuf", 4 << 20,
            "send buffer of Fish's end of each client's packet socket (SO_SNDBUFFORCE): how many reply bytes"
                    + " wait for a slow client, e.g. the burst after an upgrade's pause, before packets are dropped");

    public static final ConfigKey<Boolean> TUN_OFFLOAD = ConfigKey.flag("fish.tun_offload", true,
            "fish0 moves GSO super-packets (IFF_VNET_HDR, TUNSETOFFLOAD: checksum, TSO, USO): one read or write per"
                    + " up to 64 KiB instead of per packet; applies when Fish makes fish0 (a fish0 inherited in an"
                    + " upgrade keeps its format)");

    public static List<ConfigKey<?>> keys() {
        return List.of(NETNS, SOFT_UNICAST_PREFIXES, TCP_TIMEOUT, TCP_CLOSE_TIMEOUT, UDP_TIMEOUT, ICMP_TIMEOUT, CLIENT_IDLE_TIMEOUT, CLIENT_SNDBUF,
                TUN_OFFLOAD);
    }
}
