package warren.splicer;

import warren.daemon.Daemon;
import warren.daemon.DaemonSpec;

/** {@code ./warren splicer --control PATH [--config FILE]}. */
public final class Main {
    private Main() {}

    public static final String VERSION = "0.1.0";

    public static DaemonSpec spec() {
        return new DaemonSpec("splicer", VERSION,
                "Splicer relays pairs of connected sockets handed in over the control socket (Splice),\n"
                        + "zero-copy with splice(2), and hands both sockets back with byte counts when a pair ends.",
                SplicerConfig.keys(), SpliceHandler::new);
    }

    public static void main(String[] args) {
        System.exit(Daemon.main(spec(), args));
    }
}
