package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.google.protobuf.ByteString;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import warren.control.v1.EndReason;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.control.v1.Status;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.Streams;
import warren.daemon.testing.SystemdBoot;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;

/**
 * Splicer under a real systemd 252 (booted in private namespaces by {@link SystemdBoot}) with
 * the Debian package installed (its files in place, its postinst run) and its units started
 * unmodified, the test acting as the front proxy on the shipped /run/warren/splicer.sock:
 * socket activation on the first connection, {@code systemctl reload} = upgrade in place, a
 * {@code kill -9} of the main process = restart from the fd store, then {@code systemctl stop}.
 * 20 TCP pairs stream 2 MiB each through all of it; their far ends get every byte once, in order,
 * and the front proxy's one control connection gets every Spliced answer. At threads = 1 and 2
 * (event loops: the pairs spread over both, and the fd store recovers them whatever loop stored them).
 */
@Timeout(value = 300, unit = TimeUnit.SECONDS)
class SplicerSystemdTest {
    private static final int PAIRS = 20;
    private static final int BYTES = 2 << 20;

    @ParameterizedTest(name = "threads = {0}")
    @ValueSource(ints = {1, 2})
    void socketActivationReloadKillAndStopUnderSystemd(int threads) throws Exception {
        assumeTrue(SystemdBoot.available(), "needs root and systemd");
        Path stage = Files.createDirectories(Path.of("target", "systemd-it-" + ProcessHandle.current().pid()))
                .toAbsolutePath();
        SystemdBoot.stagePackage(stage, SystemdBoot.builtPackage());
        byte[] data = new byte[BYTES];
        new java.util.Random(11).nextBytes(data);
        byte[] want = Streams.sha256(data);
        ExecutorService io = Executors.newCachedThreadPool();
        List<Fd> ends = new ArrayList<>();
        try (SystemdBoot sd = new SystemdBoot(stage)) {
            sd.configurePackage();
            sd.appendConfig("splicer", "audit.path = /var/log/warren/audit.jsonl\nthreads = " + threads + "\n");
            Path sock = sd.path("/run/warren/splicer.sock");
            String out = sd.systemctl("start", "warren-splicer.socket");
            assertEquals("srw-rw---- root warren", sd.exec("stat", "-c", "%A %U %G", "/run/warren/splicer.sock").strip());
            assertEquals("drwxr-xr-x", sd.exec("stat", "-c", "%A", "/run/warren").strip(), "group members can reach the socket");
            assertTrue(Files.exists(sock), "the socket unit listens: " + out + sd.systemctl("status", "warren-splicer.socket"));
            assertEquals("inactive", sd.show("warren-splicer.service", "ActiveState"), "nothing runs before a client comes");
            try (ControlClient proxy = ControlClient.connect(sock)) {
                // the first connection starts the service on the socket unit's listener
                try (Reply r = proxy.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                        .get(60, TimeUnit.SECONDS)) {
                    assertEquals("splicer", r.response().getStatus().getDaemon());
                }
                assertEquals("active", sd.show("warren-splicer.service", "ActiveState"));
                // a front proxy is a member of group warren, neither root nor warren: it connects (no
                // EACCES on /run/warren or the socket) and the daemon gives it the client role, which
                // is not enough for Status (operators)
                String gid = sd.exec("getent", "group", "warren").split(":")[2];
                String member = sd.exec("sh", "-c", "setpriv --reuid=65534 --regid=65534 --groups=" + gid
                        + " /usr/bin/warren status --control /run/warren/splicer.sock 2>&1; echo status=$?");
                assertTrue(member.contains("this peer has the client role"), "a member of group warren is a client: " + member);
                String other = sd.exec("sh", "-c", "setpriv --reuid=65534 --regid=65534 --clear-groups"
                        + " /usr/bin/warren status --control /run/warren/splicer.sock 2>&1; echo status=$?");
                assertTrue(!other.contains("role") && !other.strip().endsWith("status=0"), "others cannot connect: " + other);
                String pid0 = sd.show("warren-splicer.service", "MainPID");
                List<CompletableFuture<Reply>> answers = new ArrayList<>();
                List<CompletableFuture<Void>> writers = new ArrayList<>();
                java.util.concurrent.CountDownLatch lastChunk = new java.util.concurrent.CountDownLatch(1);
                List<CompletableFuture<byte[]>> readers = new ArrayList<>();
                Fd tcp = TcpSockets.listen(new java.net.InetSocketAddress("127.0.0.1", 0), 64);
                ends.add(tcp);
                java.net.InetSocketAddress at = TcpSockets.localAddress(tcp);
                for (int i = 0; i < PAIRS; i++) {
                    Fd c1 = TcpSockets.connect(at);
                    ends.add(c1);
                    Fd a0 = TcpSockets.accept(tcp);
                    Fd b0 = TcpSockets.connect(at);
                    Fd c2 = TcpSockets.accept(tcp);
                    ends.add(c2);
                    try (Fd a = a0; Fd b = b0) {
                        CompletableFuture<Response> accepted = new CompletableFuture<>();
                        answers.add(proxy.call(Request.newBuilder().setId(500 + i).setMetadata(ByteString.copyFromUtf8("p" + i))
                                .setSplice(Splice.newBuilder().setFdA(0).setFdB(1)), List.of(a, b), accepted::complete));
                        accepted.get(10, TimeUnit.SECONDS);
                    }
                    writers.add(CompletableFuture.runAsync(() -> Streams.writePaced(c1.get(), data, 16 << 10, 150, lastChunk), io)); // live until released
                    readers.add(CompletableFuture.supplyAsync(() -> Streams.readAllSha256(c2.get()), io));
                }
                // each pair: a, b, its pinned pipes' read ends (4, under a slot's name; its description
                // in the pair book); the book and the connection
                long storeDeadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                while (Integer.parseInt(sd.show("warren-splicer.service", "NFileDescriptorStore")) < PAIRS * 4 + 2
                        && System.nanoTime() < storeDeadline) {
                    Thread.sleep(50);
                }
                assertEquals(PAIRS * 4 + 2, Integer.parseInt(sd.show("warren-splicer.service", "NFileDescriptorStore")),
                        "every pair, the pair book and the connection in the fd store");

                // systemctl reload = upgrade in place
                String reload = sd.systemctl("reload", "warren-splicer.service");
                String pid1 = sd.show("warren-splicer.service", "MainPID");
                assertNotEquals(pid0, pid1, "reload upgraded the daemon: " + reload + journalOf(sd, stage));
                assertEquals("active", sd.show("warren-splicer.service", "ActiveState"));
                assertMapsClassArchive(sd, pid1);
                Thread.sleep(1000);

                // kill -9 = systemd restarts it and hands the fd store back
                String pid2 = sd.killMainAndAwaitRestart("warren-splicer.service");
                assertNotEquals(pid1, pid2, "restarted after kill -9" + journalOf(sd, stage));
                assertEquals("1", sd.show("warren-splicer.service", "NRestarts"));
                assertMapsClassArchive(sd, pid2);
                Thread.sleep(1000);

                // the 30-minute soak's failing sequence: an upgrade of a process that recovered its
                // pairs from the fd store, then kill -9 again (every stream must go on)
                String reload2 = sd.systemctl("reload", "warren-splicer.service");
                String pid3 = sd.show("warren-splicer.service", "MainPID");
                assertNotEquals(pid2, pid3, "reload upgraded the recovered daemon: " + reload2 + journalOf(sd, stage));
                Thread.sleep(1000);
                String pid4 = sd.killMainAndAwaitRestart("warren-splicer.service");
                assertNotEquals(pid3, pid4, "restarted after the second kill -9" + journalOf(sd, stage));
                assertEquals("2", sd.show("warren-splicer.service", "NRestarts"));
                for (CompletableFuture<Void> w : writers) {
                    if (w.isDone()) {
                        String why = "";
                        try {
                            w.get();
                        } catch (Exception e) {
                            why = e.toString();
                        }
                        throw new AssertionError("a stream ended during reload and crash: " + why + journalOf(sd, stage));
                    }
                }
                resetWhileStoppedThenCrash(sd, stage, proxy, at, tcp);
                lastChunk.countDown();

                for (CompletableFuture<Void> w : writers) {
                    w.get(120, TimeUnit.SECONDS);
                }
                for (int i = 0; i < PAIRS; i++) {
                    Native.shutdown(ends.get(1 + 2 * i).get(), Native.SHUT_WR);
                    Native.shutdown(ends.get(2 + 2 * i).get(), Native.SHUT_WR);
                }
                for (CompletableFuture<byte[]> r : readers) {
                    byte[] got;
                    try {
                        got = r.get(60, TimeUnit.SECONDS);
                    } catch (java.util.concurrent.TimeoutException e) {
                        throw new AssertionError("a stream did not end" + journalOf(sd, stage));
                    }
                    assertArrayEquals(want, got, "not one byte lost or duplicated" + journalOf(sd, stage));
                }
                for (int i = 0; i < PAIRS; i++) {
                    try (Reply rep = answers.get(i).get(30, TimeUnit.SECONDS)) {
                        assertEquals(500 + i, rep.response().getId());
                        assertEquals("p" + i, rep.response().getMetadata().toStringUtf8());
                        assertEquals(EndReason.BOTH_EOF, rep.response().getSpliced().getReason(), rep.response().toString());
                        assertTrue(rep.response().getSpliced().getCountsPartial(), "counted from the crash on");
                        assertEquals(2, rep.fdCount(), "both original sockets back, across a crash");
                        rep.takeFd(0).close();
                        rep.takeFd(1).close();
                    }
                }
                long leftDeadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                while (!"2".equals(sd.show("warren-splicer.service", "NFileDescriptorStore"))
                        && System.nanoTime() < leftDeadline) {
                    Thread.sleep(50);
                }
                assertEquals("2", sd.show("warren-splicer.service", "NFileDescriptorStore"),
                        "ended pairs left the fd store; the connection and the pair book stay");
            }
            sd.systemctl("stop", "warren-splicer.service");
            assertEquals("inactive", sd.show("warren-splicer.service", "ActiveState"), journalOf(sd, stage));
            assertEquals("0", sd.show("warren-splicer.service", "ExecMainStatus"), "a clean exit on stop");
        } finally {
            Fd.closeAll(ends);
            io.shutdownNow();
            SystemdBoot.deleteTree(stage);
        }
    }

    /**
     * A pair whose socket its peer resets while the daemon cannot act (SIGSTOP), then kill -9: the
     * recovered process must get the pair back whole and answer it. systemd polls stored fds and by
     * default drops one that reports EPOLLHUP or EPOLLERR; the reset socket then came back missing,
     * the entry was dropped as unusable and the request was never answered (the soak's
     * "p1652: unusable (fd 0 of 6 missing)"). Stored with FDPOLL=0 it stays until the daemon removes it.
     */
    private static void resetWhileStoppedThenCrash(SystemdBoot sd, Path stage, ControlClient proxy,
            java.net.InetSocketAddress at, Fd tcp) throws Exception {
        Fd c1 = TcpSockets.connect(at);
        int c1Port = TcpSockets.localAddress(c1).getPort();
        CompletableFuture<Reply> answer;
        try (Fd a = TcpSockets.accept(tcp); Fd b = TcpSockets.connect(at); Fd c2 = TcpSockets.accept(tcp)) {
            CompletableFuture<Response> accepted = new CompletableFuture<>();
            answer = proxy.call(Request.newBuilder().setId(900).setSplice(Splice.newBuilder().setFdA(0).setFdB(1)),
                    List.of(a, b), accepted::complete);
            accepted.get(10, TimeUnit.SECONDS);
            String pid = sd.show("warren-splicer.service", "MainPID");
            sd.exec("kill", "-STOP", pid);
            TcpSockets.lingerZero(c1);
            c1.close(); // RST: the pair's socket a is reset while only systemd could notice
            // a reset socket leaves the TCP tables: wait until ss no longer lists a (127.0.0.1:PORT -> c1's port)
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            String left;
            do {
                Process ss = new ProcessBuilder("ss", "-tnH", "state", "all", "dst", "127.0.0.1:" + c1Port)
                        .redirectErrorStream(true).start();
                left = new String(ss.getInputStream().readAllBytes()).strip();
                ss.waitFor();
            } while (!left.isEmpty() && System.nanoTime() < deadline && sleep(50));
            assertEquals("", left, "socket a was reset");
            sd.show("warren-splicer.service", "NFileDescriptorStore"); // a round trip: systemd's loop has run since
            String pid2 = sd.killMainAndAwaitRestart("warren-splicer.service");
            assertNotEquals(pid, pid2, "restarted after kill -9 of a stopped process" + journalOf(sd, stage));
            String dropped = sd.exec("sh", "-c", "journalctl -u warren-splicer.service -o cat | grep -c 'unusable' || true");
            assertEquals("0", dropped.strip(), "no fd store entry came back unusable" + journalOf(sd, stage));
            try (Reply r = answer.get(30, TimeUnit.SECONDS)) {
                Response resp = r.response();
                assertEquals(900, resp.getId());
                assertTrue(resp.hasSpliced(), resp::toString);
                assertNotEquals(EndReason.BOTH_EOF, resp.getSpliced().getReason(), resp::toString);
                assertEquals(2, r.fdCount(), "both sockets back after the reset and the crash");
                r.takeFd(0).close();
                r.takeFd(1).close();
            } catch (java.util.concurrent.TimeoutException e) {
                throw new AssertionError("the reset pair was never answered after the crash; the daemon's tasks now:\n"
                        + listing(proxy) + journalOf(sd, stage));
            }
        }
    }

    /** The daemon's List answer (each task's kind, age, bytes), for a failure message: is a pair still live, or gone? */
    private static String listing(ControlClient proxy) {
        try (Reply r = proxy.call(Request.newBuilder().setId(901).setList(warren.control.v1.List.getDefaultInstance()),
                List.of()).get(10, TimeUnit.SECONDS)) {
            return r.response().toString();
        } catch (Exception e) {
            return "(List failed: " + e + ")";
        }
    }

    private static boolean sleep(long ms) throws InterruptedException {
        Thread.sleep(ms);
        return true;
    }

    private static String journalOf(SystemdBoot sd, Path stage) throws Exception {
        return sd.report("splicer");
    }

    /**
     * The postinst's class-data sharing archive is mapped by {@code pid} (a process the reload
     * started from the daemon's own command line, or the one systemd restarted after kill -9).
     */
    private static void assertMapsClassArchive(SystemdBoot sd, String pid) throws Exception {
        String maps = sd.exec("sh", "-c", "grep -c /var/lib/warren/warren.jsa /proc/" + pid + "/maps || true").strip();
        assertTrue(!maps.isEmpty() && Integer.parseInt(maps) > 0, "pid " + pid + " maps /var/lib/warren/warren.jsa: "
                + maps + " " + sd.exec("sh", "-c", "ls -l /var/lib/warren; tail -5 /var/lib/warren/warren.jsa.log 2>&1"));
    }
}
