package warren.daemon.testing;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import warren.control.v1.EndReason;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.fdpass.Fd;
import warren.fdpass.TestSockets;

/**
 * A real pair through a relaying daemon, ended by both peers in a set order: two AF_UNIX stream
 * pairs spliced, "ping" written from a's peer, which then closes (a hangs up: EPOLLIN, EPOLLRDHUP
 * and EPOLLHUP in one wakeup); b's peer reads "ping" and a's EOF (so the relay has handled a's
 * hang-up) and only then closes. The answer must be Spliced BOTH_EOF with 4 bytes a to b.
 */
public final class PingPair {
    private PingPair() {}

    public static void spliceAndEnd(ControlClient c) throws Exception {
        Fd[] x = TestSockets.streamPair();
        Fd[] y = TestSockets.streamPair();
        try {
            CompletableFuture<Reply> answer = c.call(Request.newBuilder().setSplice(Splice.newBuilder().setFdA(0).setFdB(1)),
                    List.of(x[0], y[0]));
            x[0].close();
            y[0].close();
            TestSockets.writeAll(x[1], "ping".getBytes(StandardCharsets.US_ASCII));
            x[1].close();
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
