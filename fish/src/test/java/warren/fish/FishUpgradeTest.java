package warren.fish;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.InputStream;
import java.io.OutputStream;
import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.EndReason;
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
 * Fish upgraded in place 20 times (19 Restart + 1 SIGHUP) as a real process while 100 TCP
 * connections of one client stream 2 MiB each way through it (echoed by a server in the
 * "internet" namespace, checked by SHA-256) and 4 UDP flows do request/answer without a loss.
 * The egress 5-tuples never change (the conntrack reservations are the same entries before and
 * after), every flow is reserved once across all processes, the client's Egress request is
 * answered once, by the last process, and a broken successor changes nothing. At threads = 1 and
 * 2; one more test changes the thread count across upgrades (1 -> 2 -> 1) with four clients.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 300, unit = TimeUnit.SECONDS)
class FishUpgradeTest {
    private static final int TCP_FLOWS = 100;
    private static final int UDP_FLOWS = 4;
    private static final int BYTES = 2 << 20;
    private static final int UPGRADES = 19; // and one more by SIGHUP: 20

    @TempDir
    Path dir;

    @ParameterizedTest(name = "threads = {0}")
    @ValueSource(ints = {1, 2})
    void tcpAndUdpFlowsAndTheirReservationsSurviveTwentyUpgrades(int threads, TestNetwork net) throws Exception {
        ExecutorService io = Executors.newCachedThreadPool();
        List<Fd> conns = new ArrayList<>();
        int dirsBefore = DaemonProcess.handoffDirs();
        try (Topology t = new Topology(net, dir, "upgrade.allow_command = true\nthreads = " + threads + "\n", true)) { // the broken successor below
            DaemonProcess fish = t.process;
            ServerSocket echo = Netns.call("/run/netns/" + t.internet.name, () -> new ServerSocket(9000, 256, t.server));
            io.submit(() -> {
                while (true) {
                    Socket s = echo.accept();
                    io.submit(() -> {
                        try (s; InputStream in = s.getInputStream(); OutputStream out = s.getOutputStream()) {
                            in.transferTo(out);
                            s.shutdownOutput();
                        }
                        return null;
                    });
                }
            });
            CompletableFuture<Reply> ended = new CompletableFuture<>();
            TestNetwork.Namespace client = t.client("up", 20000, 20999, ended);
            byte[] data = new byte[BYTES];
            new java.util.Random(7).nextBytes(data);
            byte[] want = Streams.sha256(data);
            List<CompletableFuture<Void>> writers = new ArrayList<>();
            List<CompletableFuture<byte[]>> readers = new ArrayList<>();
            java.util.concurrent.CountDownLatch lastChunk = new java.util.concurrent.CountDownLatch(1);
            for (int i = 0; i < TCP_FLOWS; i++) {
                Fd c = Netns.call("/run/netns/" + client.name, () -> TcpSockets.connect(new InetSocketAddress(t.server, 9000)));
                conns.add(c);
                int fd = c.get();
                writers.add(CompletableFuture.runAsync(() -> {
                    Streams.writePaced(fd, data, 16 << 10, 300, lastChunk); // live until released
                    try {
                        Native.shutdown(fd, Native.SHUT_WR);
                    } catch (warren.fdpass.libc.NativeIoException e) {
                        throw new IllegalStateException(e);
                    }
                }, io));
                readers.add(CompletableFuture.supplyAsync(() -> Streams.readAllSha256(fd), io));
            }
            AtomicBoolean udpRun = new AtomicBoolean(true);
            List<CompletableFuture<int[]>> udp = new ArrayList<>();
            for (int k = 0; k < UDP_FLOWS; k++) {
                int flow = k;
                DatagramSocket s = Netns.call("/run/netns/" + client.name, DatagramSocket::new);
                udp.add(CompletableFuture.supplyAsync(() -> udpFlow(s, t, flow, udpRun), io));
            }
            Thread.sleep(1000);
            TreeSet<String> reserved = reservations(t);
            String table = t.egress.exec("conntrack", "-L").output();
            assertEquals(TCP_FLOWS, reserved.size(), () -> "one conntrack reservation per TCP connection: " + reserved
                    + "\n" + table);

            // counters before the upgrades (fish0's own IPv6 chatter is counted apart, not as drops)
            java.util.Map<String, Long> before = t.status().getStatus().getCountersMap();
            long lastPid = fish.upgradeRepeatedly(UPGRADES); // 19 Restart + 1 SIGHUP
            assertTrue(writers.stream().noneMatch(CompletableFuture::isDone), "the streams were live through all 20 upgrades");
            lastChunk.countDown();
            assertEquals(reserved, reservations(t), "the same conntrack entries: no egress tuple changed");

            // a successor that hangs: the running process carries on, the restarter says why
            assertEquals(1, fish.upgrade("--timeout", "1000", "--", "sh", "-c", "sleep 30"));
            assertEquals(lastPid, fish.pid());

            for (CompletableFuture<Void> w : writers) {
                w.get(120, TimeUnit.SECONDS);
            }
            for (CompletableFuture<byte[]> r : readers) {
                assertArrayEquals(want, r.get(60, TimeUnit.SECONDS), "every byte echoed back once, in order");
            }
            udpRun.set(false);
            int udpExchanges = 0;
            int udpRetries = 0;
            for (CompletableFuture<int[]> f : udp) {
                int[] r = f.get(30, TimeUnit.SECONDS);
                assertTrue(r[0] > 20, "UDP flow exchanged " + r[0]);
                udpExchanges += r[0];
                udpRetries += r[1];
            }
            java.util.Map<String, Long> counters = t.status().getStatus().getCountersMap();
            System.out.println("FishUpgradeTest: " + udpExchanges + " UDP exchanges, " + udpRetries
                    + " retransmitted; Fish counters " + counters);
            for (String lost : List.of("drops.tun_full", "drops.client_full", "drops.reply_no_flow")) {
                assertEquals(before.getOrDefault(lost, 0L), counters.getOrDefault(lost, 0L),
                        "Fish lost nothing across 20 upgrades: " + lost);
            }
            assertEquals(20, counters.getOrDefault("requests.restart", 0L) + 0, "counters carried across processes");
            Fd.closeAll(conns);
            conns.clear();
            t.endClients(); // the client's pump goes: Fish ends its Egress
            Reply end = ended.get(30, TimeUnit.SECONDS);
            assertEquals(EndReason.FLOW_ENDED, end.response().getEgressEnded().getReason(), end.response().toString());
            assertTrue(end.response().getEgressEnded().getBytesOut() > (long) TCP_FLOWS * BYTES,
                    "counts carried across processes: " + end.response());
            String audit = warren.daemon.testing.AuditFile.await(dir.resolve("audit.jsonl"),
                    a -> count(a, "\"event\":\"end\"") >= 1); // written by the audit's writer thread
            assertEquals(1, count(audit, "\"event\":\"start\""), "one Egress task across 21 processes");
            assertEquals(1, count(audit, "\"event\":\"end\""));
            assertEquals(TCP_FLOWS + UDP_FLOWS, count(audit, "\"event\":\"flow_start\""),
                    "each flow reserved once, never again after an upgrade (" + udpExchanges + " UDP exchanges)");
        } finally {
            Fd.closeAll(conns);
            io.shutdownNow();
        }
        assertEquals(dirsBefore, DaemonProcess.handoffDirs(), "every private handoff directory removed");
        String log = Files.readString(dir.resolve("fish.log"));
        assertTrue(log.contains("upgrade failed, carrying on"), log);
    }

    /**
     * Four clients (ranges of 100 ports: a tie between the classes, so they alternate between the
     * loops), five TCP streams and one UDP flow each, through an upgrade from threads = 1 to 2
     * (the successor grows fish0 to two queues and places two clients on each loop; flows whose
     * port is of the other class are handed over) and back to 1 (fish0 shrunk): every byte echoed
     * in order, the same conntrack entries, every flow reserved once, nothing lost.
     */
    @Test
    void aSuccessorWithAnotherThreadCountKeepsEveryFlow(TestNetwork net) throws Exception {
        ExecutorService io = Executors.newCachedThreadPool();
        List<Fd> conns = new ArrayList<>();
        int clients = 4;
        int streams = 5;
        int bytes = 1 << 20;
        // and an older fish0: made without offloads (as by a Fish before issue 15), kept by successors
        // configured with fish.tun_offload = true (the format is the device's)
        try (Topology t = new Topology(net, dir, "threads = 1\nfish.tun_offload = false\n", true)) {
            DaemonProcess fish = t.process;
            ServerSocket echo = Netns.call("/run/netns/" + t.internet.name, () -> new ServerSocket(9000, 256, t.server));
            io.submit(() -> {
                while (true) {
                    Socket s = echo.accept();
                    io.submit(() -> {
                        try (s; InputStream in = s.getInputStream(); OutputStream out = s.getOutputStream()) {
                            in.transferTo(out);
                            s.shutdownOutput();
                        }
                        return null;
                    });
                }
            });
            byte[] data = new byte[bytes];
            new java.util.Random(11).nextBytes(data);
            byte[] want = Streams.sha256(data);
            List<CompletableFuture<Void>> writers = new ArrayList<>();
            List<CompletableFuture<byte[]>> readers = new ArrayList<>();
            List<CompletableFuture<int[]>> udp = new ArrayList<>();
            AtomicBoolean udpRun = new AtomicBoolean(true);
            java.util.concurrent.CountDownLatch lastChunk = new java.util.concurrent.CountDownLatch(1);
            for (int k = 0; k < clients; k++) {
                TestNetwork.Namespace client = t.client("t" + k, 20000 + 1000 * k, 20099 + 1000 * k, null);
                for (int i = 0; i < streams; i++) {
                    Fd c = Netns.call("/run/netns/" + client.name, () -> TcpSockets.connect(new InetSocketAddress(t.server, 9000)));
                    conns.add(c);
                    int fd = c.get();
                    writers.add(CompletableFuture.runAsync(() -> {
                        Streams.writePaced(fd, data, 16 << 10, 50, lastChunk);
                        try {
                            Native.shutdown(fd, Native.SHUT_WR);
                        } catch (warren.fdpass.libc.NativeIoException e) {
                            throw new IllegalStateException(e);
                        }
                    }, io));
                    readers.add(CompletableFuture.supplyAsync(() -> Streams.readAllSha256(fd), io));
                }
                DatagramSocket s = Netns.call("/run/netns/" + client.name, DatagramSocket::new);
                int flow = k;
                udp.add(CompletableFuture.supplyAsync(() -> udpFlow(s, t, flow, udpRun), io));
            }
            Thread.sleep(1000);
            TreeSet<String> reserved = reservations(t);
            assertEquals(clients * streams, reserved.size(), () -> "one reservation per TCP connection: " + reserved);
            assertEquals(java.util.Map.of(0, 4.0), FishLoopsTest.clientsPerLoop(t), "threads = 1: every client on loop 0");
            java.util.Map<String, Long> before = t.status().getStatus().getCountersMap();
            Path conf = dir.resolve("fish.conf");
            for (int threads : new int[] {2, 1}) {
                Files.writeString(conf, Files.readString(conf).replaceAll("(?m)^threads = \\d+$", "threads = " + threads)
                        .replace("fish.tun_offload = false", "fish.tun_offload = true"));
                long pid = fish.pid();
                assertEquals(0, fish.upgrade(), "upgrade to threads = " + threads);
                assertNotEquals(pid, fish.pid());
                java.util.Map<Integer, Double> perLoop = FishLoopsTest.clientsPerLoop(t);
                assertEquals(threads == 2 ? java.util.Map.of(0, 2.0, 1, 2.0) : java.util.Map.of(0, 4.0), perLoop,
                        "the successor placed the clients on its loops");
                assertEquals(reserved, reservations(t), "the same conntrack entries at threads = " + threads);
                Thread.sleep(500); // traffic flows on the successor's loops
            }
            assertTrue(writers.stream().noneMatch(CompletableFuture::isDone), "the streams were live through both upgrades");
            assertEquals(0L, t.status().getStatus().getCountersOrDefault("offload.tun_in", 0),
                    "the successors kept the inherited fish0's format: no super-packets");
            lastChunk.countDown();
            for (CompletableFuture<Void> w : writers) {
                w.get(120, TimeUnit.SECONDS);
            }
            for (CompletableFuture<byte[]> r : readers) {
                assertArrayEquals(want, r.get(60, TimeUnit.SECONDS), "every byte echoed back once, in order");
            }
            udpRun.set(false);
            for (CompletableFuture<int[]> f : udp) {
                assertTrue(f.get(30, TimeUnit.SECONDS)[0] > 5, "every UDP flow kept exchanging");
            }
            java.util.Map<String, Long> counters = t.status().getStatus().getCountersMap();
            System.out.println("FishUpgradeTest 1 -> 2 -> 1: Fish counters " + counters);
            for (String lost : List.of("drops.tun_full", "drops.client_full", "drops.reply_no_flow", "drops.handover_full")) {
                assertEquals(before.getOrDefault(lost, 0L), counters.getOrDefault(lost, 0L), "nothing lost: " + lost);
            }
            Fd.closeAll(conns);
            conns.clear();
            t.endClients();
            String audit = warren.daemon.testing.AuditFile.await(dir.resolve("audit.jsonl"),
                    a -> count(a, "\"event\":\"end\"") >= clients);
            assertEquals(clients * streams + clients, count(audit, "\"event\":\"flow_start\""),
                    "each flow reserved once, never again after an upgrade");
        } finally {
            Fd.closeAll(conns);
            io.shutdownNow();
        }
    }

    /**
     * Request/answer until told to stop, like a real UDP client: a request unanswered after 1 s is
     * sent again (a datagram dropped on the way, e.g. by the test's client pump when its socket to
     * Fish is full during a burst). Every answer must be the one for the current request, from the
     * soft-unicast IP. Returns {exchanges, retransmissions}.
     */
    private static int[] udpFlow(DatagramSocket s, Topology t, int flow, AtomicBoolean run) {
        int done = 0;
        int retries = 0;
        byte[] in = new byte[512];
        try (s) {
            s.setSoTimeout(1000);
            while (run.get() && done < 100_000) {
                String req = "u" + flow + "-" + done;
                byte[] msg = req.getBytes(StandardCharsets.US_ASCII);
                String answer = null;
                for (int attempt = 0; answer == null; attempt++) {
                    if (attempt == 10) {
                        throw new IllegalStateException("no answer to " + req + " in 10 tries");
                    }
                    retries += attempt > 0 ? 1 : 0;
                    s.send(new DatagramPacket(msg, msg.length, t.server, 7));
                    try {
                        DatagramPacket p = new DatagramPacket(in, in.length);
                        do {
                            s.receive(p);
                            answer = new String(p.getData(), 0, p.getLength(), StandardCharsets.US_ASCII);
                        } while (earlier(answer, flow, done)); // a late answer to a copy sent before (a pause > 1 s)
                    } catch (java.net.SocketTimeoutException e) {
                        answer = null;
                    }
                }
                if (!answer.startsWith(req + " from " + Topology.SOFT + ":")) {
                    throw new IllegalStateException("flow " + flow + ": unexpected answer " + answer + " to " + req);
                }
                done++;
                Thread.sleep(20);
            }
        } catch (Exception e) {
            throw new IllegalStateException("UDP flow " + flow + " after " + done + " exchanges", e);
        }
        return new int[] {done, retries};
    }

    /** An answer to request "u{flow}-{k}" for a k below {@code done}: both copies of a retransmitted request are answered. */
    private static boolean earlier(String answer, int flow, int done) {
        Matcher m = Pattern.compile("u" + flow + "-(\\d+) .*").matcher(answer);
        return m.matches() && Integer.parseInt(m.group(1)) < done;
    }

    /** The egress namespace's TCP conntrack entries to the echo server, as "sport" strings. */
    private static TreeSet<String> reservations(Topology t) throws Exception {
        TestNetwork.Result r = t.egress.exec("sh", "-c", "conntrack -L -p tcp --dport 9000 2>/dev/null"); // the summary on stderr can split a line
        TreeSet<String> ports = new TreeSet<>();
        Matcher m = Pattern.compile("src=" + Pattern.quote(Topology.SOFT) + " dst=\\S+ sport=(\\d+) dport=9000").matcher(r.output());
        while (m.find()) {
            ports.add(m.group(1));
        }
        return ports;
    }

    private static int count(String s, String what) {
        int n = 0;
        for (int i = s.indexOf(what); i >= 0; i = s.indexOf(what, i + 1)) {
            n++;
        }
        return n;
    }
}
