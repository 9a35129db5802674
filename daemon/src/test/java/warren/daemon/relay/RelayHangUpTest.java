package warren.daemon.relay;

import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.daemon.client.ControlClient;
import warren.daemon.testing.PingPair;
import warren.daemon.testing.RelayingHandler;
import warren.daemon.testing.RunningDaemon;

/**
 * An AF_UNIX stream socket whose peer closes reports EPOLLHUP at once (the kernel marks it shut
 * both ways), which for TCP would mean a reset. A pair whose a side's peer closed and whose b side
 * closes a moment later ends BOTH_EOF, not RESET "a: hung up": SplicerLiveFuzzTest's real pair
 * failed so (1 in 6 runs) while the relay ended such a pair on the hang-up alone. {@link PingPair}
 * makes the order certain: b's peer closes only after it read a's EOF, i.e. after the relay
 * handled a's hang-up.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class RelayHangUpTest {
    @TempDir
    Path dir;

    @Test
    void aUnixPeerThatClosesIsAnEofNotAReset() throws Exception {
        try (RunningDaemon d = new RunningDaemon(RelayingHandler.spec(), dir.resolve("ctl.sock"), "audit.path = /dev/null\n");
                ControlClient c = ControlClient.connect(d.control)) {
            PingPair.spliceAndEnd(c);
        }
    }
}
