package warren.fish;

import java.util.List;
import warren.daemon.config.ConfigKey;

/** Fish's config keys; every one has a working default. */
public final class FishConfig {
    private FishConfig() {}

    public static final ConfigKey<String> NETNS = ConfigKey.text("fish.netns", "",
            "the egress network namespace (a path such as /run/netns/egress); empty = Fish's own");
    public static final ConfigKey<Long> TCP_TIMEOUT = ConfigKey.millis("fish.tcp_timeout", 300_000,
            "an established TCP flow with no packet for this long expires");
    public static final ConfigKey<Long> TCP_CLOSE_TIMEOUT = ConfigKey.millis("fish.tcp_close_timeout", 10_000,
            "a TCP flow after FIN both ways or RST, or still half-open, expires after this");
    public static final ConfigKey<Long> UDP_TIMEOUT = ConfigKey.millis("fish.udp_timeout", 30_000,
            "a UDP flow with no packet for this long expires");
    public static final ConfigKey<Long> ICMP_TIMEOUT = ConfigKey.millis("fish.icmp_timeout", 30_000,
            "an ICMP echo flow with no packet for this long expires");

    public static final ConfigKey<Long> CLIENT_SNDBUF = ConfigKey.bytes("fish.client_sndbuf", 4 << 20,
            "send buffer of Fish's end of each client's packet socket (SO_SNDBUFFORCE): how many reply bytes"
                    + " wait for a slow client, e.g. the burst after an upgrade's pause, before packets are dropped");

    public static List<ConfigKey<?>> keys() {
        return List.of(NETNS, TCP_TIMEOUT, TCP_CLOSE_TIMEOUT, UDP_TIMEOUT, ICMP_TIMEOUT, CLIENT_SNDBUF);
    }
}
