package warren.bumblebee;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static warren.daemon.testing.DaemonProcess.settledFdCount;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import warren.bumblebee.onramp.OnRamp;
import warren.control.v1.Request;
import warren.control.v1.Status;
import warren.daemon.cli.UpgradeMain;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.DaemonProcess;
import warren.daemon.testing.Streams;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;
import warren.linux.net.Netns;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;

/**
 * Bumblebee's pre-copy with a real process (issue 16): 1,100 idle TCP flows and 20 that stream
 * 1 MiB each way through the upgrade. Successors that exit or hang in the middle of the pre-copy
 * leave the same process serving with exactly the fds it had (the chunks' duplicates closed,
 * nothing tracked); then a Restart copies the environment and every flow's socket while serving,
 * and the pause sends only a few fds (the control listener and connection: the streaming flows
 * are updates of counts, the idle ones nothing). Every idle flow then echoes a byte through the
 * new process, every stream arrives SHA-256-identical, nothing is upgraded twice.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 300, unit = TimeUnit.SECONDS)
class BumblebeePreCopyTest {
    private static final int IDLE = 1100;
    private static final int STREAMING = 20;
    private static final int BYTES = 1 << 20;

    @TempDir
    Path dir;

    @ParameterizedTest(name = "threads = {0}")
    @ValueSource(ints = {1, 2})
    void idleFlowsArePreCopiedAndThePauseSendsOnlyAFewFds(int threads, TestNetwork net) throws Exception {
        ExecutorService io = Executors.newCachedThreadPool();
        List<Fd> conns = new ArrayList<>();
        Path conf = Files.writeString(dir.resolve("bb.conf"), "audit.path = /dev/null\nupgrade.allow_command = true\n"
                + "threads = " + threads + "\n"); // the dropouts below: Restart.command
        List<Reply> upgraded = java.util.Collections.synchronizedList(new ArrayList<>());
        try (DaemonProcess bb = new DaemonProcess("bumblebee", Main.class, dir.resolve("bb.sock"), conf,
                        dir.resolve("bb.log"));
                ControlClient c = ControlClient.connect(bb.control);
                OnRamp ramp = new OnRamp(net.namespace("onramp").name, c, r -> {
                    upgraded.add(r);
                    BumblebeeUpgradeTest.serve(r, io);
                })) {
            InetSocketAddress server = new InetSocketAddress(InetAddress.getByName("198.18.99.9"), 9000);
            for (int i = 0; i < IDLE + STREAMING; i++) {
                conns.add(Netns.call("/run/netns/" + ramp.client, () -> TcpSockets.connect(server)));
            }
            long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
            while (upgraded.size() < IDLE + STREAMING && System.nanoTime() < until) {
                Thread.sleep(50); // each connect completes a moment before Bumblebee answers Upgraded
            }
            assertEquals(IDLE + STREAMING, upgraded.size(), "every flow upgraded");
            byte[] data = new byte[BYTES];
            new java.util.Random(16).nextBytes(data);
            byte[] want = Streams.sha256(data);
            java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
            List<CompletableFuture<Void>> writers = new ArrayList<>();
            List<CompletableFuture<byte[]>> readers = new ArrayList<>();
            for (int i = IDLE; i < IDLE + STREAMING; i++) {
                int fd = conns.get(i).get();
                writers.add(CompletableFuture.runAsync(() -> {
                    Streams.writePaced(fd, data, 8 << 10, 200, release); // live until released
                    try {
                        Native.shutdown(fd, Native.SHUT_WR);
                    } catch (warren.fdpass.libc.NativeIoException e) {
                        throw new IllegalStateException(e);
                    }
                }, io));
                readers.add(CompletableFuture.supplyAsync(() -> Streams.readAllSha256(fd), io));
            }

            long before = bb.pid();
            int baseline = settledFdCount(before, -1);
            String javaBin = Path.of(System.getProperty("java.home"), "bin", "java").toString();
            for (String mode : List.of("exit", "hang")) {
                assertEquals(1, UpgradeMain.run(new String[] {"bumblebee", "--control", bb.control.toString(),
                        "--timeout", "5000", "--", javaBin, "-cp", System.getProperty("java.class.path"),
                        warren.daemon.testing.PreCopyDropout.class.getName(), "bumblebee", mode}), mode);
                assertEquals(before, bb.pid());
                assertEquals(baseline, settledFdCount(before, baseline), "fds of the old process after a successor"
                        + " that " + mode + "s mid-pre-copy");
            }

            List<String> phases = new java.util.concurrent.CopyOnWriteArrayList<>();
            try (Reply r = c.call(Request.newBuilder().setId(1_000_000).setRestart(
                    warren.control.v1.Restart.getDefaultInstance()), List.of(), null,
                    progress -> phases.add(progress.getUpgradeProgress().getPhase() + ": "
                            + progress.getUpgradeProgress().getDetail())).get(120, TimeUnit.SECONDS)) {
                assertTrue(r.response().hasRestarted(), r.response().toString());
                System.out.println("BumblebeePreCopyTest threads = " + threads + ": " + r.response().getRestarted()
                        .toString().replace('\n', ' ') + "; phases " + phases);
            }
            String copied = phases.stream().filter(ph -> ph.startsWith("pre_copied")).findFirst().orElse("none: " + phases);
            java.util.regex.Matcher pc = java.util.regex.Pattern.compile("pre_copied: (\\d+) fds").matcher(copied);
            assertTrue(pc.lookingAt() && Integer.parseInt(pc.group(1)) >= IDLE + STREAMING + 4, "the environment and"
                    + " every flow's socket went before the pause: " + copied);
            String sent = phases.stream().filter(ph -> ph.startsWith("fds_sent")).findFirst().orElse("none: " + phases);
            java.util.regex.Matcher m = java.util.regex.Pattern.compile("fds_sent: (\\d+) fds").matcher(sent);
            assertTrue(m.lookingAt() && Integer.parseInt(m.group(1)) < 8, "the pause sent only the control listener and"
                    + " connections (the streams are updates, idle flows nothing): " + sent);
            assertNotEquals(before, bb.pid());
            assertTrue(writers.stream().noneMatch(CompletableFuture::isDone), "the streams were live through the upgrade");
            release.countDown();

            jnr.ffi.Pointer p = Native.allocate(16);
            for (int i = 0; i < IDLE; i++) { // one byte through every idle flow, now in the new process
                int fd = conns.get(i).get();
                p.putByte(0, (byte) i);
                assertEquals(1, Native.write(fd, p, 1));
                assertEquals(1, Native.read(fd, p, 1), "flow " + i + " echoes");
                assertEquals((byte) i, p.getByte(0));
            }
            for (CompletableFuture<Void> w : writers) {
                w.get(120, TimeUnit.SECONDS);
            }
            for (CompletableFuture<byte[]> r : readers) {
                assertArrayEquals(want, r.get(60, TimeUnit.SECONDS), "every streamed byte echoed back once, in order");
            }
            Map<String, Long> after = status(c);
            assertEquals(IDLE + STREAMING, upgraded.size(), "one Upgraded per flow, never again after the upgrade");
            assertEquals(IDLE + STREAMING, after.getOrDefault("upgrades.tcp", 0L));
            assertEquals(0, after.getOrDefault("drops.socket_full", 0L));
            assertTrue(ramp.errors.isEmpty(), ramp.errors.toString());
        } finally {
            Fd.closeAll(conns);
            io.shutdownNow();
        }
        String log = Files.readString(dir.resolve("bb.log"));
        assertTrue(log.contains("pre-copied flows in"), "the successor adopted a delta: " + log);
    }

    private static Map<String, Long> status(ControlClient c) throws Exception {
        try (Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                .get(10, TimeUnit.SECONDS)) {
            return r.response().getStatus().getCountersMap();
        }
    }
}
