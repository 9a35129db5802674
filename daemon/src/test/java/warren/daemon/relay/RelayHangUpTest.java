package warren.daemon.relay;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.EndReason;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.TestSockets;

/**
 * An AF_UNIX stream socket whose peer closes reports EPOLLHUP at once (the kernel marks it shut
 * both ways), which for TCP would mean a reset. A pair whose a side's peer closed and whose b side
 * closes a moment later ends BOTH_EOF, not RESET "a: hung up": SplicerLiveFuzzTest's real pair
 * failed so (1 in 6 runs) while the relay ended such a pair on the hang-up alone. Here the order is
 * made certain: b's peer closes only after it read a's EOF, i.e. after the relay handled a's
 * hang-up.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class RelayHangUpTest {
    @TempDir
    Path dir;

    @Test
    void aUnixPeerThatClosesIsAnEofNotAReset() throws Exception {
        try (RunningDaemon d = new RunningDaemon(warren.daemon.testing.RelayingHandler.spec(), dir.resolve("ctl.sock"), "audit.path = /dev/null\n");
                ControlClient c = ControlClient.connect(d.control)) {
            Fd[] x = TestSockets.streamPair();
            Fd[] y = TestSockets.streamPair();
            try {
                CompletableFuture<Reply> answer = c.call(Request.newBuilder().setSplice(Splice.newBuilder().setFdA(0)
                        .setFdB(1)), List.of(x[0], y[0]));
                x[0].close();
                y[0].close();
                TestSockets.writeAll(x[1], "ping".getBytes(StandardCharsets.US_ASCII));
                x[1].close(); // a hangs up: EPOLLIN | EPOLLRDHUP | EPOLLHUP in one wakeup
                assertEquals("ping", new String(TestSockets.readExactly(y[1], 4), StandardCharsets.US_ASCII));
                assertEquals(0, TestSockets.readExactly(y[1], 1).length, "a's EOF passed on to b");
                y[1].close();
                try (Reply r = answer.get(30, TimeUnit.SECONDS)) {
                    Response resp = r.response();
                    assertEquals(Response.BodyCase.SPLICED, resp.getBodyCase(), resp::toString);
                    assertEquals(EndReason.BOTH_EOF, resp.getSpliced().getReason(), resp::toString);
                    assertEquals(4, resp.getSpliced().getBytesAToB());
                }
            } finally {
                Fd.closeAll(List.of(x[0], x[1], y[0], y[1]));
            }
        }
    }
}
