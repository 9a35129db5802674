package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static warren.daemon.testing.DaemonProcess.settledFdCount;

import com.google.protobuf.ByteString;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.EndReason;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.control.v1.Status;
import warren.daemon.cli.UpgradeMain;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.Streams;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;

/**
 * Upgrade in place of a real Splicer process (`./warren upgrade`'s code): 100 TCP pairs (loopback)
 * stream 4 MiB each while the daemon is replaced 20 times by new processes (19 Restart, 1 SIGHUP); the front proxy's one control
 * connection is never reconnected and gets every {@code Spliced} answer (from the last process)
 * with exact counts; the far ends get identical bytes. Broken successors (exits at once, hangs)
 * leave the running process serving and the restarter exits 1. Each test runs at threads = 1 and
 * threads = 2 (event loops); one more changes the thread count across upgrades (1 -> 2 -> 1).
 */
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class SplicerUpgradeTest {
    private static final int PAIRS = 100;
    private static final int BYTES = 4 << 20;
    private static final int UPGRADES = 19; // and one more by SIGHUP: 20

    @TempDir
    Path dir;

    @ParameterizedTest(name = "threads = {0}")
    @ValueSource(ints = {1, 2})
    void pairsAndPendingAnswersSurviveConsecutiveUpgradesAndBrokenSuccessorsChangeNothing(int threads) throws Exception {
        Path ctl = dir.resolve("splicer.sock");
        Path conf = Files.writeString(dir.resolve("s.conf"), "audit.path = " + dir.resolve("audit.jsonl")
                + "\nupgrade.allow_command = true\nthreads = " + threads + "\n"); // broken successors below: Restart.commands
        Process first = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                warren.daemon.testing.DaemonProcess.tmpOption(), "-cp",
                System.getProperty("java.class.path"), Main.class.getName(), "--control", ctl.toString(),
                "--config", conf.toString()).redirectErrorStream(true).redirectOutput(dir.resolve("out.log").toFile())
                .start();
        int handoffDirsBefore = warren.daemon.testing.DaemonProcess.handoffDirs();
        List<Fd> ends = new ArrayList<>();
        ExecutorService io = Executors.newCachedThreadPool();
        long lastPid = first.pid();
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (!Files.exists(ctl) && System.nanoTime() < deadline) {
                Thread.sleep(20);
            }
            byte[] data = new byte[BYTES];
            new java.util.Random(5).nextBytes(data);
            byte[] want = Streams.sha256(data);
            try (ControlClient proxy = ControlClient.connect(ctl)) {
                List<CompletableFuture<Reply>> answers = new ArrayList<>();
                List<CompletableFuture<Void>> writers = new ArrayList<>();
                List<CompletableFuture<byte[]>> readers = new ArrayList<>();
                java.util.concurrent.CountDownLatch lastChunk = new java.util.concurrent.CountDownLatch(1);
                Fd tcp = TcpSockets.listen(new java.net.InetSocketAddress("127.0.0.1", 0), 256);
                ends.add(tcp);
                java.net.InetSocketAddress at = TcpSockets.localAddress(tcp);
                for (int i = 0; i < PAIRS; i++) {
                    // client c1 -> a (the proxy's accepted socket); b (the proxy's upstream) -> c2
                    ends.add(TcpSockets.connect(at));
                    Fd a0 = TcpSockets.accept(tcp);
                    Fd b0 = TcpSockets.connect(at);
                    ends.add(TcpSockets.accept(tcp));
                    try (Fd a = a0; Fd b = b0) {
                        CompletableFuture<Response> accepted = new CompletableFuture<>();
                        answers.add(proxy.call(Request.newBuilder().setId(1000 + i)
                                .setMetadata(ByteString.copyFromUtf8("flow-" + i))
                                .setSplice(Splice.newBuilder().setFdA(0).setFdB(1)), List.of(a, b), accepted::complete));
                        accepted.get(10, TimeUnit.SECONDS);
                    }
                    int c1 = ends.get(1 + 2 * i).get();
                    int c2 = ends.get(2 + 2 * i).get();
                    writers.add(CompletableFuture.runAsync(() -> Streams.writePaced(c1, data, 64 << 10, 400, lastChunk), io)); // live until released
                    readers.add(CompletableFuture.supplyAsync(() -> Streams.readAllSha256(c2), io));
                }
                for (int u = 0; u < UPGRADES; u++) {
                    if (u == UPGRADES - 1) {
                        assertTrue(writers.stream().noneMatch(CompletableFuture::isDone), "streams live through upgrades");
                    }
                    assertEquals(0, UpgradeMain.run(new String[] {"splicer", "--control", ctl.toString()}),
                            "upgrade " + (u + 1));
                    long pid = pid(ctl);
                    assertNotEquals(lastPid, pid, "a new process serves after upgrade " + (u + 1));
                    lastPid = pid;
                }
                lastChunk.countDown();
                // SIGHUP does the same upgrade (what the unit's ExecReload= sends)
                new ProcessBuilder("kill", "-HUP", Long.toString(lastPid)).start().waitFor();
                long hupDeadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                long afterHup = lastPid;
                while (afterHup == lastPid && System.nanoTime() < hupDeadline) {
                    Thread.sleep(50);
                    afterHup = pid(ctl);
                }
                assertNotEquals(lastPid, afterHup, "SIGHUP upgraded the daemon");
                lastPid = afterHup;
                // broken successors: the running process carries on
                assertEquals(1, UpgradeMain.run(new String[] {"splicer", "--control", ctl.toString(), "--timeout", "3000",
                        "--", "sh", "-c", "exit 3"}));
                assertEquals(lastPid, pid(ctl));
                assertEquals(1, UpgradeMain.run(new String[] {"splicer", "--control", ctl.toString(), "--timeout", "1000",
                        "--", "sh", "-c", "sleep 30"}));
                assertEquals(lastPid, pid(ctl));
                // a new version that does not accept this state version: refused before anything pauses
                String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
                assertEquals(1, UpgradeMain.run(new String[] {"splicer", "--control", ctl.toString(), "--timeout", "10000",
                        "--", java, "-cp", System.getProperty("java.class.path"),
                        warren.daemon.testing.RefusingSuccessor.class.getName(), "splicer"}), "a refused state version");
                assertEquals(lastPid, pid(ctl));
                assertEquals(2, UpgradeMain.run(new String[] {"fish", "--control", ctl.toString()}), "wrong daemon");
                assertEquals(2, UpgradeMain.run(new String[] {"splicer", "--bogus"}));

                for (CompletableFuture<Void> w : writers) {
                    w.get(120, TimeUnit.SECONDS);
                }
                for (int i = 0; i < PAIRS; i++) {
                    Native.shutdown(ends.get(1 + 2 * i).get(), Native.SHUT_WR);
                    Native.shutdown(ends.get(2 + 2 * i).get(), Native.SHUT_WR);
                }
                for (CompletableFuture<byte[]> r : readers) {
                    assertArrayEquals(want, r.get(60, TimeUnit.SECONDS), "not one byte lost or duplicated");
                }
                for (int i = 0; i < PAIRS; i++) {
                    try (Reply rep = answers.get(i).get(30, TimeUnit.SECONDS)) {
                        assertEquals(1000 + i, rep.response().getId());
                        assertEquals("flow-" + i, rep.response().getMetadata().toStringUtf8());
                        assertEquals(EndReason.BOTH_EOF, rep.response().getSpliced().getReason(), rep.response().toString());
                        assertEquals(BYTES, rep.response().getSpliced().getBytesAToB());
                        assertEquals(2, rep.fdCount());
                        rep.takeFd(0).close();
                        rep.takeFd(1).close();
                    }
                }
            }
            // once idle (no pipes lent), a failed upgrade leaves exactly the fds it found
            int fdsBefore = settledFdCount(lastPid, -1);
            assertEquals(1, UpgradeMain.run(new String[] {"splicer", "--control", ctl.toString(), "--timeout", "1000",
                    "--", "sh", "-c", "exit 4"}));
            assertEquals(1, UpgradeMain.run(new String[] {"splicer", "--control", ctl.toString(), "--timeout", "500",
                    "--", "sh", "-c", "sleep 30"}));
            assertEquals(fdsBefore, settledFdCount(lastPid, fdsBefore), "no fd leaked by failed upgrades");
            String audit = warren.daemon.testing.AuditFile.await(dir.resolve("audit.jsonl"),
                    a -> count(a, "\"event\":\"end\"") >= PAIRS); // written by the audit's writer thread
            assertEquals(PAIRS, count(audit, "\"event\":\"start\""), "one start line per pair across all processes");
            assertEquals(PAIRS, count(audit, "\"event\":\"end\""), "one end line per pair across all processes");
        } finally {
            Fd.closeAll(ends);
            io.shutdownNow();
            new ProcessBuilder("kill", "-TERM", Long.toString(lastPid)).start().waitFor();
            ProcessHandle.of(lastPid).ifPresent(h -> h.onExit().join());
            first.destroyForcibly();
        }
        assertEquals(handoffDirsBefore, warren.daemon.testing.DaemonProcess.handoffDirs(), "every private handoff directory removed");
        String out = Files.readString(dir.resolve("out.log"));
        assertTrue(out.contains("upgrade failed, carrying on"), out);
        assertTrue(out.contains("accepts state versions [99]"), "the refusal says why: " + out);
    }

    /**
     * 1,000 live pairs (2,004 fds: far more than one SCM_RIGHTS message carries) handed to a new
     * process in one upgrade; every pair then relays both ways and is answered once.
     */
    @ParameterizedTest(name = "threads = {0}")
    @ValueSource(ints = {1, 2})
    void aThousandPairsAreHandedOverInOneUpgrade(int threads) throws Exception {
        int n = 1000;
        Path ctl = dir.resolve("big.sock");
        try (warren.daemon.testing.DaemonProcess d = new warren.daemon.testing.DaemonProcess("splicer", Main.class, ctl,
                Files.writeString(dir.resolve("big.conf"), "audit.path = /dev/null\nthreads = " + threads
                        + "\nupgrade.allow_command = true\n"), // successors that fail mid-pre-copy, below
                dir.resolve("big.log"));
                ControlClient proxy = ControlClient.connect(ctl);
                Fd tcp = TcpSockets.listen(new java.net.InetSocketAddress("127.0.0.1", 0), 1024);
                IdlePairs idle = IdlePairs.open(proxy, tcp, n)) {
            long before = d.pid();
            // successors that die or hang in the middle of the pre-copy: the old process serves on, its
            // fds exactly as they were (the chunks' duplicates closed), nothing paused
            int baseline = settledFdCount(before, -1);
            String javaBin = Path.of(System.getProperty("java.home"), "bin", "java").toString();
            for (String mode : List.of("exit", "hang")) {
                assertEquals(1, UpgradeMain.run(new String[] {"splicer", "--control", ctl.toString(), "--timeout", "5000",
                        "--", javaBin, "-cp", System.getProperty("java.class.path"),
                        warren.daemon.testing.PreCopyDropout.class.getName(), "splicer", mode}), mode);
                assertEquals(before, d.pid());
                assertEquals(baseline, settledFdCount(before, baseline), "fds of the old process after a successor that "
                        + mode + "s mid-pre-copy");
            }
            List<String> phases = new java.util.concurrent.CopyOnWriteArrayList<>();
            try (Reply r = proxy.call(Request.newBuilder().setId(1_000_000).setRestart(
                    warren.control.v1.Restart.getDefaultInstance()), List.of(), null,
                    progress -> phases.add(progress.getUpgradeProgress().getPhase() + ": "
                            + progress.getUpgradeProgress().getDetail())).get(120, TimeUnit.SECONDS)) {
                assertTrue(r.response().hasRestarted(), r.response().toString());
                assertTrue(r.response().getRestarted().getFds() >= 2 * n, r.response().toString());
            }
            String copied = phases.stream().filter(ph -> ph.startsWith("pre_copied")).findFirst().orElse("none: " + phases);
            assertTrue(copied.startsWith("pre_copied: " + (2 * n + 1) + " fds"), "every pair's sockets and the listener"
                    + " went before the pause: " + copied);
            String sent = phases.stream().filter(ph -> ph.startsWith("fds_sent")).findFirst().orElse("none: " + phases);
            java.util.regex.Matcher m = java.util.regex.Pattern.compile("fds_sent: (\\d+) fds").matcher(sent);
            assertTrue(m.lookingAt() && Integer.parseInt(m.group(1)) < 8, "the pause sent only the control listener and"
                    + " connections (idle pairs did not change): " + sent);
            assertNotEquals(before, d.pid());
            idle.oneByteEachWay(); // every pair, now in the new process
            idle.endAndCheck();
        }
    }

    /**
     * The successor of an upgrade may run another number of loops: 40 pairs stream through a
     * Splicer at threads = 1, then 2 (the successor spreads the pairs over both loops), then 1
     * again; every pair delivers identical bytes and one exact {@code Spliced}.
     */
    @Test
    void anUpgradeMayChangeTheThreadCountAndEveryPairRelaysOn() throws Exception {
        int n = 40;
        int bytes = 2 << 20;
        Path ctl = dir.resolve("t.sock");
        Path conf = dir.resolve("t.conf");
        Files.writeString(conf, "audit.path = /dev/null\nthreads = 1\n");
        List<Fd> ends = new ArrayList<>();
        ExecutorService io = Executors.newCachedThreadPool();
        byte[] data = new byte[bytes];
        new java.util.Random(7).nextBytes(data);
        byte[] want = Streams.sha256(data);
        try (warren.daemon.testing.DaemonProcess d = new warren.daemon.testing.DaemonProcess("splicer", Main.class, ctl,
                conf, dir.resolve("t.log"));
                ControlClient proxy = ControlClient.connect(ctl);
                Fd tcp = TcpSockets.listen(new java.net.InetSocketAddress("127.0.0.1", 0), 256)) {
            java.net.InetSocketAddress at = TcpSockets.localAddress(tcp);
            List<CompletableFuture<Reply>> answers = new ArrayList<>();
            List<CompletableFuture<Void>> writers = new ArrayList<>();
            List<CompletableFuture<byte[]>> readers = new ArrayList<>();
            java.util.concurrent.CountDownLatch lastChunk = new java.util.concurrent.CountDownLatch(1);
            for (int i = 0; i < n; i++) {
                Fd c1 = TcpSockets.connect(at);
                ends.add(c1);
                try (Fd a = TcpSockets.accept(tcp); Fd b = TcpSockets.connect(at)) {
                    Fd c2 = TcpSockets.accept(tcp);
                    ends.add(c2);
                    CompletableFuture<Response> accepted = new CompletableFuture<>();
                    answers.add(proxy.call(Request.newBuilder().setId(i + 1).setSplice(Splice.newBuilder().setFdA(0)
                            .setFdB(1)), List.of(a, b), accepted::complete));
                    accepted.get(10, TimeUnit.SECONDS);
                    writers.add(CompletableFuture.runAsync(() -> Streams.writePaced(c1.get(), data, 64 << 10, 100,
                            lastChunk), io));
                    readers.add(CompletableFuture.supplyAsync(() -> Streams.readAllSha256(c2.get()), io));
                }
            }
            assertEquals(List.of((double) n), pairsPerLoop(ctl), "threads = 1: every pair on loop 0");
            for (int threads : new int[] {2, 1}) {
                Files.writeString(conf, "audit.path = /dev/null\nthreads = " + threads + "\n");
                long before = d.pid();
                assertEquals(0, UpgradeMain.run(new String[] {"splicer", "--control", ctl.toString()}),
                        "upgrade to threads = " + threads);
                assertNotEquals(before, d.pid());
                List<Double> perLoop = pairsPerLoop(ctl);
                assertEquals(threads, perLoop.size(), "loops of the successor: " + perLoop);
                assertEquals(n, perLoop.stream().mapToDouble(Double::doubleValue).sum(), "pairs: " + perLoop);
                for (double p : perLoop) {
                    assertEquals(n / threads, p, 1, "pairs spread over the successor's loops: " + perLoop);
                }
            }
            assertTrue(writers.stream().noneMatch(CompletableFuture::isDone), "streams live through both upgrades");
            lastChunk.countDown();
            for (CompletableFuture<Void> w : writers) {
                w.get(120, TimeUnit.SECONDS);
            }
            for (int i = 0; i < n; i++) {
                Native.shutdown(ends.get(2 * i).get(), Native.SHUT_WR);
                Native.shutdown(ends.get(2 * i + 1).get(), Native.SHUT_WR);
            }
            for (CompletableFuture<byte[]> r : readers) {
                assertArrayEquals(want, r.get(60, TimeUnit.SECONDS), "not one byte lost or duplicated");
            }
            for (int i = 0; i < n; i++) {
                try (Reply rep = answers.get(i).get(30, TimeUnit.SECONDS)) {
                    assertEquals(EndReason.BOTH_EOF, rep.response().getSpliced().getReason(), rep.response().toString());
                    assertEquals(bytes, rep.response().getSpliced().getBytesAToB());
                    rep.takeFd(0).close();
                    rep.takeFd(1).close();
                }
            }
        } finally {
            Fd.closeAll(ends);
            io.shutdownNow();
        }
    }

    /** warren_relay_pairs by loop, from a Metrics request: index = loop. */
    static List<Double> pairsPerLoop(Path ctl) throws Exception {
        try (ControlClient c = ControlClient.connect(ctl);
                Reply r = c.call(Request.newBuilder().setMetrics(warren.control.v1.Metrics.getDefaultInstance()),
                        List.of()).get(10, TimeUnit.SECONDS)) {
            java.util.TreeMap<Integer, Double> byLoop = new java.util.TreeMap<>();
            java.util.regex.Matcher m = java.util.regex.Pattern.compile("(?m)^warren_relay_pairs\\{[^}]*loop=\"(\\d+)\"[^}]*\\} (\\S+)$")
                    .matcher(r.response().getMetrics().getText());
            while (m.find()) {
                byLoop.put(Integer.parseInt(m.group(1)), Double.parseDouble(m.group(2)));
            }
            return new ArrayList<>(byLoop.values());
        }
    }

    private static long pid(Path ctl) throws Exception {
        try (ControlClient c = ControlClient.connect(ctl);
                Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                        .get(10, TimeUnit.SECONDS)) {
            return r.response().getStatus().getPid();
        }
    }

    private static int count(String s, String what) {
        int n = 0;
        for (int i = s.indexOf(what); i >= 0; i = s.indexOf(what, i + 1)) {
            n++;
        }
        return n;
    }
}
