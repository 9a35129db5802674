package warren.fish;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static warren.daemon.testing.DaemonProcess.settledFdCount;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import warren.control.v1.Request;
import warren.daemon.client.Reply;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.Packets;
import warren.netns.testing.TestNetwork;

/**
 * Fish's pre-copy with real processes: 150 clients with a flow each and one client with 200 flows.
 * Successors that exit or hang in the middle of the pre-copy leave the old process serving with
 * exactly the fds it had (/proc/PID/fd). Then an upgrade by Restart while 2 of the big client's
 * flows carry traffic: the pre-copy sends every client's socket and the queue of fish0 (152 fds
 * and the listener), the pause fewer than 8 fds and an update of the big client with at most a
 * few of its 200 flows (the successor's log says how many); every flow then answers from the same
 * egress port, through the new process. At threads = 1 and 2 (the successor builds its engine
 * during the copy: the same thread count).
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 300, unit = TimeUnit.SECONDS)
class FishPreCopyUpgradeTest {
    private static final int CLIENTS = 150;
    private static final int FLOWS = 200;
    private static final byte[] CLIENT = {(byte) 198, 18, 60, 1};

    @TempDir
    Path dir;

    @ParameterizedTest(name = "threads = {0}")
    @ValueSource(ints = {1, 2})
    void clientsAndFlowsArePreCopiedAndThePauseCarriesOnlyWhatMoved(int threads, TestNetwork net) throws Exception {
        try (Topology t = new Topology(net, dir, "upgrade.allow_command = true\nthreads = " + threads + "\n", true)) {
            List<Fd> small = new ArrayList<>();
            for (int i = 0; i < CLIENTS; i++) {
                Fd c = t.rawClient("c" + i, 10000 + 10 * i, 10000 + 10 * i + 9);
                small.add(c);
                Packets.send(c, Packets.udp4(CLIENT, 4000, t.server.getAddress(), 7, "c" + i));
            }
            Fd big = t.rawClient("big", 20000, 20999);
            for (int i = 0; i < CLIENTS; i++) {
                assertTrue(answer(small.get(i)).startsWith("c" + i + " from "));
            }
            Map<Integer, String> egressPort = new HashMap<>();
            for (int f = 0; f < FLOWS; f++) {
                Packets.send(big, Packets.udp4(CLIENT, 30000 + f, t.server.getAddress(), 7, "f" + f));
                String a = answer(big);
                Matcher m = Pattern.compile("f(\\d+) from [^:]+:(\\d+)").matcher(a);
                assertTrue(m.matches(), a);
                egressPort.put(Integer.parseInt(m.group(1)), m.group(2));
            }
            assertEquals(FLOWS, egressPort.size());

            long before = t.process.pid();
            int baseline = settledFdCount(before, -1);
            String javaBin = Path.of(System.getProperty("java.home"), "bin", "java").toString();
            for (String mode : List.of("exit", "hang")) {
                assertEquals(1, t.process.upgrade("--timeout", "5000", "--", javaBin, "-cp",
                        System.getProperty("java.class.path"), warren.daemon.testing.PreCopyDropout.class.getName(), "fish",
                        mode), mode);
                assertEquals(before, t.process.pid());
                assertEquals(baseline, settledFdCount(before, baseline), "fds of the old process after a successor that "
                        + mode + "s mid-pre-copy");
            }
            exchange(big, t.server.getAddress(), 30000, "still", egressPort.get(0)); // it serves on

            // two of the big client's flows carry traffic through the upgrade (their own socket: a pump of the test's)
            AtomicBoolean run = new AtomicBoolean(true);
            Thread traffic = new Thread(() -> {
                for (int k = 0; run.get(); k++) {
                    Packets.send(big, Packets.udp4(CLIENT, 30000 + (k & 1), t.server.getAddress(), 7, "busy"));
                    try {
                        Thread.sleep(5);
                    } catch (InterruptedException e) {
                        return;
                    }
                }
            });
            traffic.start();
            List<String> phases = new java.util.concurrent.CopyOnWriteArrayList<>();
            long pauseUs;
            try (Reply r = t.control.call(Request.newBuilder().setId(1_000_000).setRestart(
                    warren.control.v1.Restart.getDefaultInstance()), List.of(), null,
                    progress -> phases.add(progress.getUpgradeProgress().getPhase() + ": "
                            + progress.getUpgradeProgress().getDetail())).get(120, TimeUnit.SECONDS)) {
                assertTrue(r.response().hasRestarted(), r.response().toString());
                pauseUs = r.response().getRestarted().getPauseUs();
            } finally {
                run.set(false);
                traffic.join();
            }
            assertNotEquals(before, t.process.pid());
            String copied = phases.stream().filter(ph -> ph.startsWith("pre_copied")).findFirst().orElse("none: " + phases);
            int want = 1 + threads + CLIENTS + 1; // the listener, fish0's queues, every client's socket
            assertTrue(copied.startsWith("pre_copied: " + want + " fds"), "every client and queue before the pause: "
                    + copied);
            String sent = phases.stream().filter(ph -> ph.startsWith("fds_sent")).findFirst().orElse("none: " + phases);
            Matcher m = Pattern.compile("fds_sent: (\\d+) fds").matcher(sent);
            assertTrue(m.lookingAt() && Integer.parseInt(m.group(1)) < 8, "the pause sent only the control listener and"
                    + " connections: " + sent);
            String log = Files.readString(dir.resolve("fish.log"));
            Matcher d = Pattern.compile("Fish's delta after the pre-copy: (\\d+) pre-copied clients adopted, (\\d+) begun"
                    + " since, (\\d+) updated \\((\\d+) flows, (\\d+) flows ended\\), (\\d+) ended").matcher(log);
            int adopted = 0;
            int updated = 0;
            int flows = 0;
            int lines = 0;
            while (d.find()) {
                System.out.printf("FishPreCopyUpgradeTest threads = %d: %s; %s; %s; pause %.1f ms%n", threads, copied, sent,
                        d.group(), pauseUs / 1000.0);
                lines++;
                adopted += Integer.parseInt(d.group(1));
                updated += Integer.parseInt(d.group(3));
                flows += Integer.parseInt(d.group(4));
                assertEquals("0", d.group(2), d.group());
                assertEquals("0", d.group(6), d.group());
            }
            assertEquals(1, lines, "one delta applied: " + log);
            assertEquals(CLIENTS + 1, adopted);
            assertTrue(updated >= 1 && updated <= 3, "the busy client (and a straggler's answer at most): " + updated);
            assertTrue(flows <= 4, "at most a few of the " + FLOWS + " flows in the update: " + flows);

            while (Native.pollOne(big.get(), Native.POLLIN, 200) > 0) { // the busy flows' answers
                answer(big);
            }
            for (int f = 0; f < FLOWS; f++) { // every flow through the new process, from the same egress port
                exchange(big, t.server.getAddress(), 30000 + f, "after" + f, egressPort.get(f));
            }
            for (int i = 0; i < CLIENTS; i++) {
                Packets.send(small.get(i), Packets.udp4(CLIENT, 4000, t.server.getAddress(), 7, "again" + i));
                assertTrue(answer(small.get(i)).startsWith("again" + i + " from "));
            }
        }
    }

    private static void exchange(Fd fd, byte[] server, int sport, String text, String port) throws Exception {
        Packets.send(fd, Packets.udp4(CLIENT, sport, server, 7, text));
        String a = answer(fd);
        while (a.startsWith("busy")) { // a busy flow's late answer
            a = answer(fd);
        }
        assertTrue(a.startsWith(text + " from ") && a.endsWith(":" + port), a + " (want port " + port + ")");
    }

    /** The next packet Fish writes to a client's socket, as a UDP payload; waits up to 10 s. */
    private static String answer(Fd fd) throws Exception {
        Pointer buf = Native.allocate(2048);
        assertTrue(Native.pollOne(fd.get(), Native.POLLIN, 10_000) > 0, "no answer within 10 s");
        long n = Native.recv(fd.get(), buf, 2048, Native.MSG_DONTWAIT);
        assertTrue(n > 28, "recv: " + n);
        byte[] b = new byte[(int) n];
        buf.get(0, b, 0, b.length);
        return Packets.udp4Payload(b, b.length);
    }
}
