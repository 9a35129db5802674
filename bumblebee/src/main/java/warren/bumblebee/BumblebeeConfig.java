package warren.bumblebee;

import java.util.List;
import warren.daemon.config.ConfigKey;

/** Bumblebee's config keys; every one has a working default. */
public final class BumblebeeConfig {
    private BumblebeeConfig() {}

    public static final ConfigKey<Long> SLOTS = ConfigKey.count("bumblebee.slots", 4096, 1, 32_000,
            "NAT slots (flows at once, counting those in quarantine)");
    public static final ConfigKey<Long> MTU = ConfigKey.count("bumblebee.mtu", 1500, 576, 65_520,
            "MTU of the TUN device and default MTU of a flow (MSS is clamped to it)");
    public static final ConfigKey<Long> QUARANTINE = ConfigKey.millis("bumblebee.quarantine", 30_000,
            "how long a slot rests after its flow ended before it is reused");
    public static final ConfigKey<Long> IDLE_TIMEOUT = ConfigKey.millis("bumblebee.idle_timeout", 300_000,
            "a flow with no packet either way for this long ends");
    public static final ConfigKey<Long> HANDSHAKE_TIMEOUT = ConfigKey.millis("bumblebee.handshake_timeout", 10_000,
            "an Upgrade whose kernel handshake has not completed by then is answered TIMEOUT");
    public static final ConfigKey<Long> CLOSE_LINGER = ConfigKey.millis("bumblebee.close_linger", 2_000,
            "after FIN both ways, how long the last ACKs are still forwarded before the flow ends");

    public static final ConfigKey<String> ENVIRONMENT = ConfigKey.text("bumblebee.environment", "auto",
            "how the namespace is made: auto (in-process as root, else a helper in a user namespace), in-process,"
                    + " or helper (a process started by unshare(1) that passes the fds back)");

    public static final ConfigKey<String> TUN_STEERING = ConfigKey.oneOf("bumblebee.tun_steering", "auto",
            List.of("auto", "off"),
            "threads > 1: auto loads the TUN's eBPF steering program (a packet on its slot's loop's queue) and hands"
                    + " packets over between loops if that fails; off never loads it (always the hand-over)");

    public static final ConfigKey<Boolean> TUN_OFFLOAD = ConfigKey.flag("bumblebee.tun_offload", true,
            "bb0 moves GSO super-packets (IFF_VNET_HDR, TUNSETOFFLOAD: checksum, TSO, USO): one read or write per"
                    + " up to 64 KiB instead of per packet; applies when Bumblebee makes bb0 in-process (a bb0"
                    + " inherited in an upgrade or from the fd store keeps its format; the helper's is plain)");

    public static List<ConfigKey<?>> keys() {
        return List.of(SLOTS, MTU, QUARANTINE, IDLE_TIMEOUT, HANDSHAKE_TIMEOUT, CLOSE_LINGER, ENVIRONMENT, TUN_STEERING,
                TUN_OFFLOAD);
    }
}
