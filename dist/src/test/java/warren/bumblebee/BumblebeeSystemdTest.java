package warren.bumblebee;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import warren.control.v1.Request;
import warren.control.v1.Status;
import warren.control.v1.Upgrade;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.bumblebee.onramp.OnRamp;
import warren.daemon.testing.SystemdBoot;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.netns.testing.Packets;

/**
 * Bumblebee under a real systemd with the Debian package installed and its units started
 * unmodified (hardening, capabilities, device ACL, system call filter as shipped; /dev/net/tun
 * 0600, opened through the package's ACL): socket activation, a UDP flow upgraded,
 * {@code systemctl reload} = upgrade in place and {@code kill -9} = restart from the fd store, with
 * that flow carrying both ways and a TCP stream from the on-ramp simulator (a kernel connection
 * in Bumblebee's namespace, upgraded and echoed here) SHA-256-identical across both; stop. At
 * threads = 1 and 2.
 */
@org.junit.jupiter.api.extension.ExtendWith(warren.netns.testing.NetnsExtension.class)
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class BumblebeeSystemdTest {
    private static final byte[] CLIENT = {(byte) 198, 18, 50, 1};
    private static final byte[] SERVER = {(byte) 198, 18, 99, 9};

    @ParameterizedTest(name = "threads = {0}")
    @ValueSource(ints = {1, 2})
    void flowsSurviveReloadAndKillUnderTheShippedUnit(int threads, warren.netns.testing.TestNetwork net) throws Exception {
        assumeTrue(SystemdBoot.available(), "needs root and systemd");
        Path stage = Files.createDirectories(Path.of("target", "systemd-it-" + ProcessHandle.current().pid())).toAbsolutePath();
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
        java.util.concurrent.ExecutorService io = java.util.concurrent.Executors.newCachedThreadPool();
        SystemdBoot.stagePackage(stage, SystemdBoot.builtPackage());
        try (SystemdBoot sd = new SystemdBoot(stage); Fd flow = Fd.adopt(sv[0])) {
            sd.configurePackage();
            sd.appendConfig("bumblebee", "audit.path = /var/log/warren/audit.jsonl\nthreads = " + threads + "\n");
            Path sock = sd.path("/run/warren/bumblebee.sock");
            sd.systemctl("start", "warren-bumblebee.socket");
            try (ControlClient c = ControlClient.connect(sock)) {
                try (Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                        .get(60, TimeUnit.SECONDS)) {
                    assertEquals("bumblebee", r.response().getStatus().getDaemon(), sd.report("bumblebee"));
                }
                Fd upgraded;
                try (Fd theirs = Fd.adopt(sv[1])) {
                    var answer = c.call(Request.newBuilder().setUpgrade(Upgrade.newBuilder().setFdFlow(0)), List.of(theirs));
                    Packets.send(flow, Packets.udp4(CLIENT, 4000, SERVER, 53, "one"));
                    try (Reply r = answer.get(30, TimeUnit.SECONDS)) {
                        assertEquals(true, r.response().hasUpgraded(), r.response() + sd.report("bumblebee"));
                        upgraded = r.takeFd(r.response().getUpgraded().getFdSocket());
                    }
                }
                // a TCP stream through the on-ramp simulator, echoed on its upgraded kernel socket
                byte[] data = new byte[1 << 20];
                new java.util.Random(3).nextBytes(data);
                OnRampEcho tcp = new OnRampEcho(net, c, io, data);
                Downgraded down = new Downgraded(tcp.ramp, c, io);
                try (Fd app = upgraded; tcp; down) {
                    assertEquals("one", recv(app), "the payload reached the upgraded socket");
                    assertEquals("hello", down.echo("hello"), "the downgrade carries");
                    String pid0 = sd.show("warren-bumblebee.service", "MainPID");
                    String reload = sd.systemctl("reload", "warren-bumblebee.service");
                    String pid1 = sd.show("warren-bumblebee.service", "MainPID");
                    assertNotEquals(pid0, pid1, "reload upgraded Bumblebee: " + reload + sd.report("bumblebee"));
                    assertEquals("active", sd.show("warren-bumblebee.service", "ActiveState"));
                    Packets.send(flow, Packets.udp4(CLIENT, 4000, SERVER, 53, "two"));
                    assertEquals("two", recv(app), "the flow carries on in the new process" + sd.report("bumblebee"));
                    Pointer p = Native.allocate(64);
                    p.put(0, "back".getBytes(java.nio.charset.StandardCharsets.US_ASCII), 0, 4);
                    Native.send(app.get(), p, 4, Native.MSG_NOSIGNAL);
                    byte[] pkt = new byte[2048];
                    int n = recvRaw(flow, pkt);
                    assertEquals("back", Packets.udp4Payload(pkt, n), "and back, as a UDP packet on the flow");

                    // kill -9: systemd restarts Bumblebee with its namespace, TUN, listeners and the
                    // flow's sockets from the fd store; the flow carries on both ways
                    String pid2 = sd.killMainAndAwaitRestart("warren-bumblebee.service");
                    assertNotEquals(pid1, pid2, "restarted after kill -9" + sd.report("bumblebee"));
                    assertEquals("1", sd.show("warren-bumblebee.service", "NRestarts"));
                    try (Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                            .get(30, TimeUnit.SECONDS)) {
                        assertEquals(3, r.response().getStatus().getTasksActive(), "every task is back (UDP, TCP, downgrade): "
                                + r.response().getStatus() + sd.report("bumblebee"));
                        // the shipped unit lets Bumblebee attach its TUN steering program (bpf(2), CAP_SYS_ADMIN)
                        assertEquals(0, r.response().getStatus().getCountersOrDefault("errors.tun_steering_unavailable", 0),
                                "threads = " + threads + " used" + sd.report("bumblebee"));
                        assertEquals(0, r.response().getStatus().getCountersOrDefault("drops.tun_other_loop", 0),
                                "every kernel packet on its owner's queue" + sd.report("bumblebee"));
                    }
                    Packets.send(flow, Packets.udp4(CLIENT, 4000, SERVER, 53, "three"));
                    assertEquals("three", recv(app), "the flow carries on after the crash" + sd.report("bumblebee"));
                    Native.send(app.get(), p, 4, Native.MSG_NOSIGNAL);
                    n = recvRaw(flow, pkt);
                    assertEquals("back", Packets.udp4Payload(pkt, n), "and back after the crash");
                    assertEquals("after the crash", down.echo("after the crash"),
                            "the downgrade carries on after reload and crash" + sd.report("bumblebee"));
                    warren.fdpass.net.TcpSockets.shutdownOutput(down.app);
                    try (Reply r = down.done.get(30, TimeUnit.SECONDS)) {
                        assertEquals(warren.control.v1.Response.BodyCase.DOWNGRADED, r.response().getBodyCase(),
                                r.response() + sd.report("bumblebee"));
                    }
                    assertTrue(!tcp.writer.isDone(), "the TCP stream was live through reload and crash");
                    tcp.lastChunk.countDown();
                    tcp.writer.get(120, TimeUnit.SECONDS);
                    Native.shutdown(tcp.client.get(), Native.SHUT_WR);
                    org.junit.jupiter.api.Assertions.assertArrayEquals(warren.daemon.testing.Streams.sha256(data),
                            tcp.reader.get(60, TimeUnit.SECONDS), "every byte echoed once, in order" + sd.report("bumblebee"));
                }
            }
            String before = sd.systemctl("show", "-p", "MainPID,SubState,Result,ControlPID,StatusText,NotifyAccess", "warren-bumblebee.service");
            long t0 = System.nanoTime();
            String stop = sd.systemctl("stop", "warren-bumblebee.service");
            assertEquals("inactive", sd.show("warren-bumblebee.service", "ActiveState"), "before stop: " + before + "\nstop ("
                    + (System.nanoTime() - t0) / 1_000_000 + " ms): " + stop + sd.report("bumblebee"));
            assertEquals("0", sd.show("warren-bumblebee.service", "ExecMainStatus"), "a clean exit on stop");
        } finally {
            io.shutdownNow();
            SystemdBoot.deleteTree(stage);
        }
    }

    /**
     * A downgrade (as BumblebeeDowngradeTest): a loopback TCP socket of the test becomes packets
     * on a flow the on-ramp writes into its namespace, where an echo server answers.
     */
    private static final class Downgraded implements AutoCloseable {
        final Fd app;
        final java.util.concurrent.CompletableFuture<Reply> done;
        private final java.net.ServerSocket server;

        Downgraded(OnRamp ramp, ControlClient c, java.util.concurrent.ExecutorService io) throws Exception {
            server = warren.linux.net.Netns.call("/run/netns/" + ramp.client,
                    () -> new java.net.ServerSocket(9000, 8, java.net.InetAddress.getByName("198.18.50.1")));
            io.submit(() -> {
                try (java.net.Socket s = server.accept(); var in = s.getInputStream(); var out = s.getOutputStream()) {
                    in.transferTo(out);
                }
                return null;
            });
            Fd listener = warren.fdpass.net.TcpSockets.listen(
                    new java.net.InetSocketAddress(java.net.InetAddress.getLoopbackAddress(), 0), 1);
            app = warren.fdpass.net.TcpSockets.connect(warren.fdpass.net.TcpSockets.localAddress(listener));
            Fd handed = warren.fdpass.net.TcpSockets.accept(listener);
            listener.close();
            int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
            warren.packet.FlowKey kernelSide = new warren.packet.FlowKey();
            kernelSide.version = 4;
            kernelSide.protocol = 6;
            System.arraycopy(CLIENT, 0, kernelSide.src, 0, 4);
            System.arraycopy(SERVER, 0, kernelSide.dst, 0, 4);
            kernelSide.srcPort = 9000;
            kernelSide.dstPort = 5555;
            ramp.attach(kernelSide, Fd.adopt(sv[0]));
            try (Fd flowEnd = Fd.adopt(sv[1]); handed) {
                java.util.concurrent.CompletableFuture<warren.control.v1.Response> accepted = new java.util.concurrent.CompletableFuture<>();
                done = c.call(Request.newBuilder().setDowngrade(warren.control.v1.Downgrade.newBuilder().setFdSocket(0).setFdFlow(1)
                        .setTuple(warren.control.v1.FiveTuple.newBuilder().setProtocol(6)
                                .setSrcIp(com.google.protobuf.ByteString.copyFrom(SERVER)).setSrcPort(5555)
                                .setDstIp(com.google.protobuf.ByteString.copyFrom(CLIENT)).setDstPort(9000))),
                        List.of(handed, flowEnd), accepted::complete);
                accepted.get(10, TimeUnit.SECONDS);
            }
        }

        String echo(String text) throws Exception {
            byte[] msg = text.getBytes(java.nio.charset.StandardCharsets.US_ASCII);
            Pointer p = Native.allocate(1024);
            warren.fdpass.net.TcpSockets.writeFully(app, p, msg, 0, msg.length);
            byte[] got = new byte[msg.length];
            int off = 0;
            while (off < got.length) {
                int n = warren.fdpass.net.TcpSockets.read(app, p, got, off, got.length - off);
                if (n <= 0) {
                    throw new IllegalStateException("the downgraded connection ended after " + off + " bytes");
                }
                off += n;
            }
            return new String(got, java.nio.charset.StandardCharsets.US_ASCII);
        }

        @Override
        public void close() throws Exception {
            app.close();
            server.close();
        }
    }

    /** One TCP connection from the on-ramp's namespace, paced over ~8 s, echoed by the test. */
    private static final class OnRampEcho implements AutoCloseable {
        final OnRamp ramp;
        final Fd client;
        final java.util.concurrent.CompletableFuture<Void> writer;
        final java.util.concurrent.CountDownLatch lastChunk = new java.util.concurrent.CountDownLatch(1);
        final java.util.concurrent.CompletableFuture<byte[]> reader;

        OnRampEcho(warren.netns.testing.TestNetwork net, ControlClient c, java.util.concurrent.ExecutorService io,
                byte[] data) throws Exception {
            ramp = new OnRamp(net.namespace("onramp").name, c, r -> serve(r, io));
            client = warren.linux.net.Netns.call("/run/netns/" + ramp.client, () -> warren.fdpass.net.TcpSockets.connect(
                    new java.net.InetSocketAddress(java.net.InetAddress.getByName("198.18.99.9"), 9000)));
            int fd = client.get();
            writer = java.util.concurrent.CompletableFuture.runAsync(
                    () -> warren.daemon.testing.Streams.writePaced(fd, data, 8 << 10, 60, lastChunk), io); // live until released
            reader = java.util.concurrent.CompletableFuture.supplyAsync(() -> warren.daemon.testing.Streams.readAllSha256(fd), io);
        }


        @Override
        public void close() throws Exception {
            client.close();
            ramp.close();
        }
    }


    static String recv(Fd fd) throws Exception {
        byte[] b = new byte[2048];
        int n = recvRaw(fd, b);
        return new String(b, 0, n, java.nio.charset.StandardCharsets.US_ASCII);
    }

    static int recvRaw(Fd fd, byte[] into) throws Exception {
        if (Native.pollOne(fd.get(), Native.POLLIN, 10_000) == 0) {
            throw new IllegalStateException("nothing arrived in 10 s");
        }
        Pointer p = Native.allocate(into.length);
        long n = Native.recv(fd.get(), p, into.length, Native.MSG_DONTWAIT);
        if (n < 0) {
            throw new IllegalStateException("recv: errno " + Native.errno());
        }
        p.get(0, into, 0, (int) n);
        return (int) n;
    }

    /** Echoes an upgraded socket (as BumblebeeUpgradeTest.serve; that test class stays in its module). */
    static void serve(Reply r, java.util.concurrent.ExecutorService io) {
        Fd s = r.takeFd(r.response().getUpgraded().getFdSocket());
        boolean tcp = r.response().getUpgraded().getOriginal().getProtocol() == 6;
        io.submit(() -> {
            try (s) {
                Pointer p = Native.allocate(65536);
                while (true) {
                    long n = Native.recv(s.get(), p, 65536, 0);
                    if (n <= 0) {
                        if (tcp && n == 0) {
                            Native.shutdown(s.get(), Native.SHUT_WR);
                        }
                        return null;
                    }
                    for (long off = 0; off < n; ) {
                        long w = Native.send(s.get(), p.slice(off), n - off, Native.MSG_NOSIGNAL);
                        if (w < 0) {
                            return null;
                        }
                        off += w;
                    }
                }
            }
        });
    }
}
