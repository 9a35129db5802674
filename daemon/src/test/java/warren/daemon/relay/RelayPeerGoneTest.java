package warren.daemon.relay;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.FdCount;
import warren.fdpass.TestSockets;
import warren.fdpass.net.TcpSockets;

/**
 * A TCP socket whose peer reset it after the handler's checks and before the relay started (the
 * live fuzzer hit it: Splicer's peerGone passed, then the peer's RST, then getpeername ENOTCONN in
 * {@link Relay#prepare}, answered INTERNAL 3 times in 100,000 messages). The relay is driven here
 * by a handler without Splicer's checks, so the reset always comes first: the answer is PEER_GONE,
 * both sockets closed.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class RelayPeerGoneTest {
    @TempDir
    Path dir;

    @Test
    void aSocketWhosePeerResetBeforeTheRelayStartsIsPeerGoneNotInternal() throws Exception {
        try (RunningDaemon d = new RunningDaemon(warren.daemon.testing.RelayingHandler.spec(), dir.resolve("ctl.sock"), "audit.path = /dev/null\n");
                Fd listener = TcpSockets.listen(new InetSocketAddress(InetAddress.getByName("127.0.0.1"), 0), 4);
                ControlClient c = ControlClient.connect(d.control)) {
            int before = FdCount.stable();
            Fd client = TcpSockets.connect(TcpSockets.localAddress(listener));
            Fd[] other = TestSockets.streamPair();
            try (Fd a = TcpSockets.accept(listener)) {
                TcpSockets.lingerZero(client);
                client.close(); // RST: a's peer is gone, getpeername(a) is ENOTCONN
                try (Reply r = c.call(Request.newBuilder().setSplice(Splice.newBuilder().setFdA(0).setFdB(1)),
                        List.of(a, other[0])).get(10, TimeUnit.SECONDS)) {
                    Response resp = r.response();
                    assertEquals(Response.BodyCase.ERROR, resp.getBodyCase(), resp::toString);
                    assertEquals(Error.Code.PEER_GONE, resp.getError().getCode(), resp::toString);
                }
            } finally {
                Fd.closeAll(List.of(other[0], other[1]));
            }
            assertEquals(before, FdCount.stable(), "both sockets closed by the daemon");
        }
    }
}
