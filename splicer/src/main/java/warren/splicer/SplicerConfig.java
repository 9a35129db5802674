package warren.splicer;

import java.util.List;
import warren.daemon.config.ConfigKey;

/** Splicer's config keys; every one has a default that works without a config file. */
public final class SplicerConfig {
    private SplicerConfig() {}

    public static final ConfigKey<Long> IDLE_TIMEOUT = ConfigKey.millis("splice.idle_timeout", 3_600_000,
            "default idle timeout of a pair (no byte either way); 0 = none");
    public static final ConfigKey<Long> LIFETIME = ConfigKey.millis("splice.lifetime", 0,
            "default maximum lifetime of a pair; 0 = none");
    public static final ConfigKey<Long> BYTE_LIMIT = ConfigKey.bytes("splice.byte_limit", 0,
            "default limit of bytes relayed by a pair (both ways); 0 = none");
    public static final ConfigKey<Long> PIPE_SIZE = ConfigKey.bytes("splice.pipe_size", 256 << 10,
            "size of each splice pipe (F_SETPIPE_SZ; above /proc/sys/fs/pipe-max-size needs CAP_SYS_RESOURCE)");
    public static final ConfigKey<Long> PIPES_KEPT = ConfigKey.count("splice.pipes_kept", 256, 0, 1 << 20,
            "empty pipes kept open for reuse");
    public static final ConfigKey<Long> MAX_PIPES = ConfigKey.count("splice.max_pipes", 8192, 2, 1 << 22,
            "pipes open at once; directions with bytes to move wait for one beyond this");
    public static final ConfigKey<Long> MAX_PAIRS = ConfigKey.count("splice.max_pairs", 200_000, 1, 1 << 24,
            "pairs relayed at once; more get RESOURCE_EXHAUSTED");
    public static final ConfigKey<Long> FD_RESERVE = ConfigKey.count("splice.fd_reserve", 256, 16, 1 << 20,
            "fds kept free below RLIMIT_NOFILE; a Splice that would eat into them gets RESOURCE_EXHAUSTED");
    public static final ConfigKey<Boolean> ALLOW_UNIX = ConfigKey.flag("splice.allow_unix", true,
            "accept AF_UNIX stream sockets as well as TCP");

    public static List<ConfigKey<?>> keys() {
        return List.of(IDLE_TIMEOUT, LIFETIME, BYTE_LIMIT, PIPE_SIZE, PIPES_KEPT, MAX_PIPES, MAX_PAIRS, FD_RESERVE,
                ALLOW_UNIX);
    }
}
