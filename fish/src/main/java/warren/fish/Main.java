package warren.fish;

import warren.daemon.Daemon;
import warren.daemon.DaemonSpec;
import warren.daemon.Version;

/** {@code ./warren fish --control PATH [--config FILE]}. */
public final class Main {
    private Main() {}

    public static DaemonSpec spec() {
        return new DaemonSpec("fish", Version.string(),
                "Fish egresses a client's raw IP packets (the socket handed in with Egress) from a soft-unicast IP\n"
                        + "and port range, every egress 5-tuple reserved in conntrack, and maps the replies back.",
                FishConfig.keys(), EgressHandler::new);
    }

    public static void main(String[] args) {
        System.exit(Daemon.main(spec(), args));
    }
}
