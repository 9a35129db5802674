package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static warren.daemon.testing.DaemonProcess.settledFdCount;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import warren.control.v1.Request;
import warren.control.v1.Restart;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.DaemonProcess;
import warren.daemon.testing.FakeSuccessor;
import warren.fdpass.Fd;
import warren.fdpass.net.TcpSockets;

/**
 * A real Splicer upgraded to successors of other builds, played by {@link FakeSuccessor} (no old
 * build is compiled): one that speaks handoff protocol 1 (a rollback to a build before the
 * pre-copy) must get no pre-copy and every pair whole in the offer, and one whose hello says it
 * pre-adopts the control server's items but not the relay's must get the listener and calls
 * before the pause and every pair whole in it. Each fake refuses after looking (its refusal
 * carries what it got), so the old process serves on with its fds as before and a real upgrade
 * afterwards pre-copies as usual; every pair relays through it all.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class SplicerRollbackTest {
    private static final int PAIRS = 30;

    @TempDir
    Path dir;

    @ParameterizedTest(name = "threads = {0}")
    @ValueSource(ints = {1, 2})
    void aProtocolOneSuccessorGetsEveryPairWholeAndOneThatListsLessGetsOnlyThat(int threads) throws Exception {
        Path ctl = dir.resolve("s.sock");
        try (DaemonProcess d = new DaemonProcess("splicer", Main.class, ctl, Files.writeString(dir.resolve("s.conf"),
                "audit.path = /dev/null\nthreads = " + threads + "\nupgrade.allow_command = true\n"), dir.resolve("s.log"));
                ControlClient proxy = ControlClient.connect(ctl);
                Fd tcp = TcpSockets.listen(new java.net.InetSocketAddress("127.0.0.1", 0), 128);
                IdlePairs idle = IdlePairs.open(proxy, tcp, PAIRS)) {
            long pid = d.pid();
            int baseline = settledFdCount(pid, -1);
            String javaBin = Path.of(System.getProperty("java.home"), "bin", "java").toString();
            int id = 1_000;
            for (String kind : List.of("1", "2 control.listener,control.calls")) {
                List<String> cmd = new ArrayList<>(List.of(javaBin, "-cp", System.getProperty("java.class.path"),
                        FakeSuccessor.class.getName(), "splicer"));
                cmd.addAll(List.of(kind.split(" ")));
                List<String> phases = new java.util.concurrent.CopyOnWriteArrayList<>();
                String error;
                try (Reply r = proxy.call(Request.newBuilder().setId(++id).setRestart(Restart.newBuilder()
                        .addAllCommand(cmd)), List.of(), null, p -> phases.add(p.getUpgradeProgress().getPhase() + ": "
                                + p.getUpgradeProgress().getDetail())).get(120, TimeUnit.SECONDS)) {
                    assertTrue(r.response().hasError(), r.response().toString());
                    error = r.response().getError().getMessage();
                }
                assertTrue(error.contains("fake successor: "), error);
                // every pair whole in the pause, none with a pre-copy key; the control item whole too
                Matcher m = Pattern.compile("splicer\\.relay\\(fds=(\\d+), pairs=(\\d+) keyed=(\\d+) ended=(\\d+)\\)")
                        .matcher(error);
                int pairs = 0;
                int fds = 0;
                while (m.find()) {
                    fds += Integer.parseInt(m.group(1));
                    pairs += Integer.parseInt(m.group(2));
                    assertEquals("0", m.group(3), error);
                    assertEquals("0", m.group(4), error);
                }
                assertEquals(PAIRS, pairs, error);
                assertEquals(2 * PAIRS, fds, error);
                if (kind.equals("1")) {
                    assertTrue(error.contains("pre-copied [] in 0 chunks with 0 fds"), error);
                    assertTrue(error.contains("calls=" + PAIRS + " calls_delta=false"), error);
                    assertTrue(phases.contains("pre_copied: none: the successor speaks handoff protocol 1 (everything"
                            + " goes in the pause)"), phases.toString());
                } else { // the listener and the calls before the pause, the calls then a delta (none changed)
                    assertTrue(error.contains("pre-copied [control.listener, control.calls] in 1 chunks with 1 fds"),
                            error);
                    assertTrue(error.contains("calls=0 calls_delta=true"), error);
                }
                assertEquals(pid, d.pid(), "the old process serves on");
                assertEquals(baseline, settledFdCount(pid, baseline), "its fds as before (" + kind + ")");
            }
            // a real upgrade now: the pre-copy is as usual (every pair's sockets and the listener)
            List<String> phases = new java.util.concurrent.CopyOnWriteArrayList<>();
            try (Reply r = proxy.call(Request.newBuilder().setId(++id).setRestart(Restart.getDefaultInstance()),
                    List.of(), null, p -> phases.add(p.getUpgradeProgress().getPhase() + ": "
                            + p.getUpgradeProgress().getDetail())).get(120, TimeUnit.SECONDS)) {
                assertTrue(r.response().hasRestarted(), r.response().toString());
            }
            String copied = phases.stream().filter(ph -> ph.startsWith("pre_copied")).findFirst().orElse("none: " + phases);
            assertTrue(copied.startsWith("pre_copied: " + (2 * PAIRS + 1) + " fds"), copied);
            assertTrue(d.pid() != pid);
            idle.oneByteEachWay(); // every pair, now in the new process
            idle.endAndCheck();
        }
    }
}
