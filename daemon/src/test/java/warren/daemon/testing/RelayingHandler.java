package warren.daemon.testing;

import java.util.Set;
import warren.control.v1.Request;
import warren.control.v1.Splice;
import warren.daemon.control.Call;
import warren.daemon.control.RequestHandler;
import warren.daemon.relay.Relay;

/**
 * The smallest handler over a {@link Relay}: serves {@code Splice} by starting the pair on it (no
 * limits, no checks of Splicer's: what a test of the relay or the control server needs).
 */
public final class RelayingHandler {
    private RelayingHandler() {}

    /** A daemon "testd" that only relays (64 KiB pipes, no other checks): for a {@link RunningDaemon}. */
    public static warren.daemon.DaemonSpec spec() {
        return new warren.daemon.DaemonSpec("testd", "test", "relays without a handler's checks", java.util.List.of(),
                d -> of(new Relay(d.loop(), new warren.daemon.metrics.Counters(), new Relay.Settings(64 * 1024, 4, 64))));
    }

    public static RequestHandler of(Relay relay) {
        return new RequestHandler() {
            @Override
            public Set<Request.BodyCase> serves() {
                return Set.of(Request.BodyCase.SPLICE);
            }

            @Override
            public void handle(Call call) {
                Splice s = call.request().getSplice();
                relay.start(call, call.takeFd(s.getFdA()), call.takeFd(s.getFdB()), 0, 0, 0);
            }
        };
    }
}
