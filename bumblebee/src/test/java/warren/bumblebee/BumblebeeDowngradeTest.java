package warren.bumblebee;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Downgrade;
import warren.control.v1.EndReason;
import warren.control.v1.FiveTuple;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.bumblebee.onramp.OnRamp;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.Linger;
import warren.fdpass.net.TcpSockets;
import warren.linux.net.Netns;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;
import warren.packet.FlowKey;

/**
 * Downgrade: a TCP socket held by the test becomes raw IP packets with a chosen 5-tuple on a
 * flow socket; the on-ramp writes them into the client namespace, whose real kernel completes the
 * handshake with a server there, and data flows both ways.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class BumblebeeDowngradeTest {
    @TempDir
    Path dir;

    @ParameterizedTest
    @ValueSource(strings = {"in-process", "helper"})
    void aDowngradedSocketReachesARealPeerKernelAndDataFlows(String environment, TestNetwork net) throws Exception {
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("bb.sock"),
                "audit.path = " + dir.resolve("audit.jsonl") + "\nbumblebee.close_linger = 100ms\n"
                        + "bumblebee.environment = " + environment + "\n");
                ControlClient c = ControlClient.connect(d.control);
                OnRamp ramp = new OnRamp(net.namespace("onramp").name, c, Reply::close)) {
            // an echo server in the client namespace, on its on-ramp address
            ServerSocket server = Netns.call("/run/netns/" + ramp.client,
                    () -> new ServerSocket(9000, 8, InetAddress.getByName("198.18.50.1")));
            CompletableFuture<String> peerSaw = CompletableFuture.supplyAsync(() -> {
                try (Socket s = server.accept(); InputStream in = s.getInputStream(); OutputStream out = s.getOutputStream()) {
                    String who = s.getInetAddress().getHostAddress() + ":" + s.getPort();
                    byte[] b = new byte[4096];
                    int n;
                    while ((n = in.read(b)) > 0) {
                        out.write(b, 0, n);
                    }
                    return who;
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            // the socket to downgrade: one end of a loopback TCP connection held by the test
            Fd listener = TcpSockets.listen(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), 1);
            Fd app = TcpSockets.connect(TcpSockets.localAddress(listener));
            Fd handed = TcpSockets.accept(listener);
            listener.close();
            // the flow: Bumblebee writes the downgraded connection's packets on one end
            int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
            Fd rampEnd = Fd.adopt(sv[0]);
            FlowKey kernelSide = new FlowKey(); // what the client kernel sends: server -> pretend remote
            kernelSide.version = 4;
            kernelSide.protocol = 6;
            System.arraycopy(new byte[] {(byte) 198, 18, 50, 1}, 0, kernelSide.src, 0, 4);
            System.arraycopy(new byte[] {(byte) 198, 18, 99, 9}, 0, kernelSide.dst, 0, 4);
            kernelSide.srcPort = 9000;
            kernelSide.dstPort = 5555;
            ramp.attach(kernelSide, rampEnd);
            CompletableFuture<Reply> done;
            try (Fd flowEnd = Fd.adopt(sv[1])) {
                CompletableFuture<Response> accepted = new CompletableFuture<>();
                done = c.call(Request.newBuilder().setDowngrade(Downgrade.newBuilder().setFdSocket(0).setFdFlow(1)
                        .setTuple(FiveTuple.newBuilder().setProtocol(6)
                                .setSrcIp(ByteString.copyFrom(new byte[] {(byte) 198, 18, 99, 9})).setSrcPort(5555)
                                .setDstIp(ByteString.copyFrom(new byte[] {(byte) 198, 18, 50, 1})).setDstPort(9000))),
                        List.of(handed, flowEnd), accepted::complete);
                accepted.get(10, TimeUnit.SECONDS);
            }
            Fd handedCopy = handed.dup(); // to look at the socket's SO_LINGER while Bumblebee holds it
            handed.close();
            Pointer p = Native.allocate(1024);
            byte[] msg = "hello through a downgrade".getBytes();
            TcpSockets.writeFully(app, p, msg, 0, msg.length);
            byte[] got = new byte[msg.length];
            int off = 0;
            while (off < got.length) {
                int n = TcpSockets.read(app, p, got, off, got.length - off);
                assertTrue(n > 0, "the echo came back");
                off += n;
            }
            assertArrayEquals(msg, got);
            // relayed: held with SO_LINGER {on, 0}, so a Bumblebee killed now would reset it (issue 12, item 8)
            assertEquals(Linger.RESET, Linger.of(handedCopy.get()));
            TcpSockets.shutdownOutput(app);
            assertEquals("198.18.99.9:5555", peerSaw.get(20, TimeUnit.SECONDS), "the peer kernel saw the requested tuple");
            try (Reply r = done.get(30, TimeUnit.SECONDS)) {
                assertEquals(Response.BodyCase.DOWNGRADED, r.response().getBodyCase(), r.toString());
                assertEquals(EndReason.FLOW_ENDED, r.response().getDowngraded().getReason(), r.toString());
                assertTrue(r.response().getDowngraded().getPacketsIn() > 3, r.toString());
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10); // the relay may retire just after the answer
            while (!Linger.of(handedCopy.get()).equals(new Linger(false, 0)) && System.nanoTime() < deadline) {
                Thread.sleep(10);
            }
            assertEquals(new Linger(false, 0), Linger.of(handedCopy.get()), "the original linger is back");
            handedCopy.close();
            app.close();
            server.close();
        }
    }
}
