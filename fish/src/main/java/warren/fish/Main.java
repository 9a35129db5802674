package warren.fish;

import warren.daemon.Daemon;
import warren.daemon.DaemonSpec;

/** {@code ./warren fish --control PATH [--config FILE]}. */
public final class Main {
    private Main() {}

    public static DaemonSpec spec() {
        return new DaemonSpec("fish", "0.1.0",
                "Fish egresses a client's raw IP packets (the socket handed in with Egress) from a soft-unicast IP\n"
                        + "and port range, every egress 5-tuple reserved in conntrack, and maps the replies back.",
                FishConfig.keys(), EgressHandler::new);
    }

    public static void main(String[] args) {
        System.exit(Daemon.main(spec(), args));
    }
}
