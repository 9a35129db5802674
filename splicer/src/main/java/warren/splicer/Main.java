package warren.splicer;

import warren.daemon.Daemon;
import warren.daemon.DaemonSpec;
import warren.daemon.Version;

/** {@code ./warren splicer --control PATH [--config FILE]}. */
public final class Main {
    private Main() {}

    public static DaemonSpec spec() {
        return new DaemonSpec("splicer", Version.string(),
                "Splicer relays pairs of connected sockets handed in over the control socket (Splice),\n"
                        + "zero-copy with splice(2), and hands both sockets back with byte counts when a pair ends.",
                SplicerConfig.keys(), SpliceHandler::new);
    }

    public static void main(String[] args) {
        System.exit(Daemon.main(spec(), args));
    }
}
