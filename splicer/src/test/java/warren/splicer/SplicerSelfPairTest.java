package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.EndReason;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.control.v1.Status;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.DaemonProcess;
import warren.fdpass.Fd;
import warren.fdpass.TestSockets;
import warren.fdpass.net.TcpSockets;
import warren.splicer.client.SplicerClient;

/**
 * Issue 12, item 1: a Splice whose two sockets are each other's peer (both ends of one
 * socketpair; a loopback TCP client and its own accepted socket) would relay its bytes back to
 * itself for ever. Such a pair is refused with INVALID_ARGUMENT and an audit line, before a byte
 * moves; another client is served meanwhile, a pair of two different socketpairs still relays, and
 * the daemon stops on SIGTERM. (Before the fix the first Splice froze Splicer's loop for good.)
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class SplicerSelfPairTest {
    @TempDir
    Path dir;

    @Test
    void aPairOfPeersIsRefusedAndTheDaemonStaysServing() throws Exception {
        Path audit = dir.resolve("audit.jsonl");
        Path conf = Files.writeString(dir.resolve("s.conf"), "audit.path = " + audit + "\n");
        Fd[] sv = TestSockets.streamPair();
        Fd[] listener = Relayed.listeners();
        Fd tcpClient = TcpSockets.connect(TcpSockets.localAddress(listener[0]));
        Fd tcpAccepted = TcpSockets.accept(listener[0]);
        DaemonProcess d = new DaemonProcess("splicer", Main.class, dir.resolve("s.sock"), conf, dir.resolve("out.log"));
        try {
            refusesPeersAndStopsOnSigterm(d, sv, tcpClient, tcpAccepted);
        } finally {
            d.close(); // SIGTERM, then SIGKILL after 30 s: a failed run leaves no process behind
            Fd.closeAll(List.of(sv[0], sv[1], tcpClient, tcpAccepted, listener[0], listener[1]));
        }
        String lines = Files.readString(audit);
        long rejected = lines.lines().filter(l -> l.contains("\"event\":\"rejected\"")
                && l.contains("\"code\":\"INVALID_ARGUMENT\"") && l.contains("each other's peer")).count();
        assertEquals(2, rejected, lines);
    }

    private void refusesPeersAndStopsOnSigterm(DaemonProcess d, Fd[] sv, Fd tcpClient, Fd tcpAccepted)
            throws Exception {
        long pid = d.pid();
        try (SplicerClient proxy = SplicerClient.connect(d.control); ControlClient other = ControlClient.connect(d.control)) {
            TestSockets.writeAll(sv[0], new byte[] {1}); // one byte waiting: relayed, it would come back for ever
            assertRefused(proxy.splice(sv[0], sv[1], null, null, null), "socketpair");
            TestSockets.writeAll(tcpClient, new byte[] {1});
            assertRefused(proxy.splice(tcpClient, tcpAccepted, null, null, null), "TCP client and its accepted socket");
            try (Reply r = other.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                    .get(10, TimeUnit.SECONDS)) {
                assertEquals(2L, r.response().getStatus().getCountersOrDefault("refused.peer_pair", 0),
                        r.response().toString());
            }
            // two different socketpairs are not peers: relayed as before
            Fd[] x = TestSockets.streamPair();
            Fd[] y = TestSockets.streamPair();
            CompletableFuture<SplicerClient.Result> ok = proxy.splice(x[1], y[0], null, null, null);
            TestSockets.writeAll(x[0], "hi".getBytes());
            assertEquals("hi", new String(TestSockets.readExactly(y[1], 2)));
            TcpSockets.shutdownOutput(x[0]);
            TcpSockets.shutdownOutput(y[1]);
            try (SplicerClient.Result res = ok.get(10, TimeUnit.SECONDS)) {
                assertEquals(EndReason.BOTH_EOF, res.spliced().getReason());
            }
            Fd.closeAll(List.of(x[0], x[1], y[0], y[1]));
        }
        // SIGTERM stops it
        new ProcessBuilder("kill", "-TERM", Long.toString(pid)).start().waitFor();
        ProcessHandle h = ProcessHandle.of(pid).orElse(null);
        if (h != null) {
            try {
                h.onExit().get(30, TimeUnit.SECONDS);
            } catch (java.util.concurrent.TimeoutException e) {
                h.destroyForcibly();
                fail("Splicer did not stop on SIGTERM: " + Files.readString(dir.resolve("out.log")));
            }
        }
    }

    private static void assertRefused(CompletableFuture<SplicerClient.Result> f, String what) throws Exception {
        try {
            f.get(10, TimeUnit.SECONDS).close();
            fail(what + ": relayed, expected a refusal");
        } catch (ExecutionException e) {
            assertTrue(e.getCause() instanceof SplicerClient.SpliceRefused, what + ": " + e.getCause());
            Error err = ((SplicerClient.SpliceRefused) e.getCause()).error();
            assertEquals(Error.Code.INVALID_ARGUMENT, err.getCode(), what + ": " + err);
            assertTrue(err.getMessage().contains("each other's peer"), what + ": " + err.getMessage());
        }
    }
}
