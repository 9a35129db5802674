package warren.bumblebee;

import warren.daemon.Daemon;
import warren.daemon.DaemonSpec;
import warren.daemon.Version;

/** {@code ./warren bumblebee --control PATH [--config FILE]}. */
public final class Main {
    private Main() {}

    public static DaemonSpec spec() {
        return new DaemonSpec("bumblebee", Version.string(),
                "Bumblebee upgrades a raw IP flow (one packet per message on the socket handed in with Upgrade)\n"
                        + "into a kernel TCP socket, through a TUN device and a NAT in its own network namespace.",
                BumblebeeConfig.keys(), UpgradeHandler::new);
    }

    public static void main(String[] args) {
        System.exit(Daemon.main(spec(), args));
    }
}
