package warren.daemon;

import java.util.List;
import warren.daemon.config.Config;

/** The upgrade warm-up ({@link Upgrade#warmUp}) for the daemons' own tests (test-jar: the method stays package-private). */
public final class WarmUps {
    private WarmUps() {}

    /** Runs the warm-up a successor runs before its hello: a throwaway daemon built, rehearsed on and discarded. */
    public static List<String> run(DaemonSpec spec, Config config) {
        return Upgrade.warmUp(spec, config);
    }
}
