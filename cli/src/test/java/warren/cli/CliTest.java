package warren.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.EndReason;
import warren.control.v1.Request;
import warren.control.v1.Splice;
import warren.daemon.Version;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.DaemonProcess;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;

/**
 * The operator's commands against a real Splicer process with two live TCP pairs (loopback): the
 * commands run in this JVM ({@link Main#run}) with their output captured, exactly what
 * {@code ./warren status ...} runs. Status and List in both forms, Cancel of a task by number,
 * --version equal to the build's version, bad usage (exit 2, one line), an unreachable daemon
 * (exit 1, one line), and an upgrade in place that prints its phases in order, exits 0 and
 * leaves the pairs (with their counts) to the new process.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class CliTest {
    private static final int A_TO_B = 1000; // bytes the client sends through each pair
    private static final int B_TO_A = 300;

    @TempDir
    static Path dir;

    private DaemonProcess splicer;
    private ControlClient proxy;
    private final List<Fd> fds = new ArrayList<>();
    private final List<Fd[]> clients = new ArrayList<>(); // per pair: {client end, upstream end}
    private final List<CompletableFuture<Reply>> answers = new ArrayList<>();
    private final Pointer scratch = Native.allocate(64 * 1024);

    /** What one command printed and returned. */
    record Run(int status, String out, String err) {
        List<String> errLines() {
            return err.isEmpty() ? List.of() : List.of(err.split("\n"));
        }
    }

    static Run cli(String... args) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int st = Main.run(args, new PrintStream(out, true, StandardCharsets.UTF_8),
                new PrintStream(err, true, StandardCharsets.UTF_8));
        return new Run(st, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }

    @BeforeAll
    void startSplicerWithTwoPairs() throws Exception {
        Path conf = Files.writeString(dir.resolve("s.conf"), "audit.path = " + dir.resolve("audit.jsonl") + "\n");
        splicer = new DaemonProcess("splicer", warren.splicer.Main.class, dir.resolve("splicer.sock"), conf,
                dir.resolve("splicer.log"));
        proxy = ControlClient.connect(splicer.control);
        Fd listener = TcpSockets.listen(new InetSocketAddress("127.0.0.1", 0), 16);
        fds.add(listener);
        InetSocketAddress at = TcpSockets.localAddress(listener);
        for (int i = 0; i < 2; i++) {
            Fd client = TcpSockets.connect(at);
            Fd a = TcpSockets.accept(listener); // the proxy's accepted socket
            Fd b = TcpSockets.connect(at);      // the proxy's upstream socket
            Fd upstream = TcpSockets.accept(listener);
            fds.add(client);
            fds.add(upstream);
            clients.add(new Fd[] {client, upstream});
            CompletableFuture<Long> accepted = new CompletableFuture<>();
            answers.add(proxy.call(Request.newBuilder().setSplice(Splice.newBuilder().setFdA(0).setFdB(1)),
                    List.of(a, b), r -> accepted.complete(r.getAccepted().getTask())));
            accepted.get(10, TimeUnit.SECONDS);
            a.close(); // Splicer holds its own copies now
            b.close();
            TcpSockets.writeFully(client, scratch, new byte[A_TO_B], 0, A_TO_B);
            readExactly(upstream, A_TO_B);
            TcpSockets.writeFully(upstream, scratch, new byte[B_TO_A], 0, B_TO_A);
            readExactly(client, B_TO_A);
        }
    }

    private void readExactly(Fd fd, int n) throws Exception {
        byte[] into = new byte[n];
        int got = 0;
        while (got < n) {
            int r = TcpSockets.read(fd, scratch, into, got, n - got);
            assertTrue(r > 0, "EOF after " + got + " of " + n + " bytes");
            got += r;
        }
    }

    @AfterAll
    void stop() throws Exception {
        if (proxy != null) {
            proxy.close();
        }
        for (CompletableFuture<Reply> a : answers) {
            a.cancel(false);
        }
        Fd.closeAll(fds);
        if (splicer != null) {
            try {
                splicer.pid(); // whichever process serves now (an upgrade may have replaced it) gets SIGTERM
            } catch (Exception e) {
                // nobody answers: close() signals the last pid known
            }
            splicer.close();
        }
    }

    private String control() {
        return splicer.control.toString();
    }

    @Test
    @Order(1)
    void statusShowsTheDaemonItsVersionAndItsTasks() {
        Run r = cli("status", "--control", control());
        assertEquals(0, r.status(), r.err());
        assertEquals("", r.err());
        String first = r.out().lines().findFirst().orElseThrow();
        assertTrue(first.startsWith("splicer " + Version.string() + ", pid "), first);
        assertTrue(r.out().contains("tasks     2 active, 2 since start"), r.out());
        assertTrue(r.out().contains("pairs.started"), r.out());

        Run j = cli("status", "--control", control(), "--json");
        assertEquals(0, j.status(), j.err());
        assertEquals(1, j.out().lines().count(), j.out());
        String json = j.out().strip();
        assertTrue(json.startsWith("{\"daemon\":\"splicer\",\"version\":\"" + Version.string() + "\""), json);
        assertTrue(json.contains("\"tasks_active\":2,"), json);
        assertTrue(json.matches(".*\"counters\":\\{.*\"pairs.started\":2[,}].*"), json);
    }

    @Test
    @Order(2)
    void listShowsKindPeerBytesAndTuplesInBothForms() throws Exception {
        long me = ProcessHandle.current().pid();
        Run r = cli("list", "--control", control());
        assertEquals(0, r.status(), r.err());
        List<String> lines = r.out().lines().toList();
        assertTrue(lines.get(0).startsWith("splicer " + Version.string()) && lines.get(0).endsWith(": 2 tasks"),
                lines.get(0));
        assertTrue(lines.get(1).startsWith("TASK  KIND    STATE"), lines.get(1));
        int rows = 0;
        for (String l : lines.subList(2, lines.size())) {
            if (!l.startsWith(" ")) {
                rows++;
                assertTrue(l.matches("\\d+\\s+splice\\s+.*\\s" + me + "/\\d+/\\d+\\s+.*\\s1000 B / 300 B\\s+-\\s+"
                        + "tcp 127\\.0\\.0\\.1:\\d+ -> 127\\.0\\.0\\.1:\\d+"), l);
            } else {
                assertTrue(l.strip().matches("tcp 127\\.0\\.0\\.1:\\d+ -> 127\\.0\\.0\\.1:\\d+"), l);
            }
        }
        assertEquals(2, rows, r.out());

        Run j = cli("list", "--control", control(), "--json");
        assertEquals(0, j.status(), j.err());
        String json = j.out().strip();
        assertTrue(json.startsWith("{\"daemon\":\"splicer\",\"version\":\"" + Version.string() + "\""), json);
        Matcher m = Pattern.compile("\\{\"task\":(\\d+),\"request_id\":\\d+,\"kind\":\"splice\",\"state\":\"[^\"]+\","
                + "\"peer_pid\":" + me + ",\"peer_uid\":\\d+,\"peer_gid\":\\d+,\"connection\":\\d+,"
                + "\"start_unix_nanos\":\\d+,\"age_ms\":\\d+,\"bytes_out\":1000,\"bytes_in\":300,\"packets_out\":0,"
                + "\"packets_in\":0,\"tuples\":\\[\\{\"protocol\":\"tcp\",\"src\":\"127.0.0.1\",\"src_port\":\\d+,"
                + "\"dst\":\"127.0.0.1\",\"dst_port\":\\d+\\},\\{[^]]+\\}\\]").matcher(json);
        int n = 0;
        while (m.find()) {
            n++;
        }
        assertEquals(2, n, json);
    }

    @Test
    @Order(3)
    void versionIsTheBuildsOnEveryCommand() throws Exception {
        String expected = System.getProperty("warren.expected.version");
        assertTrue(expected != null && !expected.isEmpty(), "the build passes its version");
        for (String[] args : List.of(new String[] {"--version"}, new String[] {"status", "--version"},
                new String[] {"list", "--version"}, new String[] {"cancel", "--version"},
                new String[] {"metrics", "--version"}, new String[] {"upgrade", "--version"})) {
            Run r = cli(args);
            assertEquals(0, r.status(), String.join(" ", args));
            assertEquals("warren " + Version.string() + "\n", r.out(), String.join(" ", args));
            assertTrue(r.out().startsWith("warren " + expected + " ") || r.out().equals("warren " + expected + "\n"),
                    r.out());
        }
        // the daemons themselves (./warren splicer --version), and what their Status says
        Process p = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-cp",
                System.getProperty("java.class.path"), warren.splicer.Main.class.getName(), "--version")
                .redirectErrorStream(true).start();
        String daemonSays = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, p.waitFor());
        assertEquals("splicer " + Version.string() + "\n", daemonSays);
        for (String sub : List.of("status", "list", "cancel", "metrics", "upgrade")) {
            Run r = cli(sub, "--help");
            assertEquals(0, r.status(), sub);
            assertTrue(r.out().startsWith("Usage: warren " + sub), r.out());
        }
    }

    @Test
    @Order(4)
    void badUsageIsOneLineAndExit2UnreachableIsOneLineAndExit1() {
        for (String[] args : List.of(new String[] {"status", "--control", control(), "--bogus"}, new String[] {"status", "--contrl", control()},
                new String[] {"list"}, new String[] {"cancel", "--control", control()},
                new String[] {"cancel", "--control", control(), "seven"},
                new String[] {"upgrade", "--control", control()},
                new String[] {"upgrade", "splicer", "--control", control(), "extra"},
                new String[] {"upgrade", "splicer", "--control", control(), "--timeout", "0"},
                new String[] {"nosuchcommand"})) {
            Run r = cli(args);
            assertEquals(2, r.status(), String.join(" ", args) + ": " + r.err());
            assertEquals(1, r.errLines().size(), r.err());
            assertEquals("", r.out());
        }
        assertEquals(List.of("warren status: Unknown option: '--contrl' (try ./warren status --help)"),
                cli("status", "--contrl", control()).errLines());
        Run wrongDaemon = cli("upgrade", "fish", "--control", control());
        assertEquals(2, wrongDaemon.status(), wrongDaemon.err());
        Run r = cli("status", "--control", dir.resolve("nobody.sock").toString());
        assertEquals(1, r.status());
        assertEquals(1, r.errLines().size(), r.err());
        assertTrue(r.err().startsWith("warren status: cannot reach a daemon at "), r.err());
        Run notFound = cli("cancel", "--control", control(), "999999");
        assertEquals(1, notFound.status());
        assertEquals(List.of("warren cancel: NOT_FOUND: no task 999999"), notFound.errLines());
    }

    @Test
    @Order(5)
    void metricsPrintsTextOrSaysInOneLineThatTheDaemonHasNone() {
        Run r = cli("metrics", "--control", control());
        if (r.status() == 0) { // a daemon with the Metrics request
            assertTrue(r.out().contains("# EOF") || r.out().contains("# TYPE"), r.out());
        } else {
            assertEquals(1, r.status());
            assertEquals(1, r.errLines().size(), r.err());
            assertTrue(r.err().contains("does not serve Metrics"), r.err());
        }
    }

    @Test
    @Order(6)
    void upgradePrintsEachPhaseInOrderAndThePairsLiveOn() throws Exception {
        long before = splicer.pid();
        // a generous step limit: the new JVM warms up before it connects, and this machine is shared
        Run r = cli("upgrade", "splicer", "--control", control(), "--timeout", "60000");
        assertEquals(0, r.status(), r.out() + r.err());
        List<String> lines = r.out().lines().toList();
        List<String> phases = List.of("started", "pre_copied", "paused", "fds_sent", "ready", "committed");
        assertEquals(phases.size() + 1, lines.size(), r.out());
        for (int i = 0; i < phases.size(); i++) {
            assertTrue(lines.get(i).startsWith("splicer: " + phases.get(i) + " "), lines.get(i));
        }
        assertTrue(lines.get(0).contains("pid "), lines.get(0));
        long after = splicer.pid();
        assertNotEquals(before, after);
        String last = lines.get(phases.size());
        assertEquals("splicer: upgraded in place: pid " + before + " -> pid " + after, last.substring(0, last.indexOf(',')));
        assertTrue(last.endsWith("; version " + Version.string() + " -> " + Version.string()), last);
        // the new process serves the same pairs with their counts
        Run l = cli("list", "--control", control(), "--json");
        assertEquals(2, l.out().split("\"bytes_out\":1000,\"bytes_in\":300,").length - 1, l.out());
    }

    @Test
    @Order(7)
    void cancelEndsTheTaskByNumber() throws Exception {
        Matcher m = Pattern.compile("\"task\":(\\d+)").matcher(cli("list", "--control", control(), "--json").out());
        assertTrue(m.find());
        long task = Long.parseLong(m.group(1));
        Run r = cli("cancel", "--control", control(), Long.toString(task));
        assertEquals(0, r.status(), r.err());
        assertEquals("splicer: task " + task + " cancelled\n", r.out());
        Reply answer = answers.get((int) task - 1).get(10, TimeUnit.SECONDS); // tasks 1 and 2, in order
        try (answer) {
            assertEquals(EndReason.CANCELLED, answer.response().getSpliced().getReason(), answer.toString());
            assertEquals(A_TO_B, answer.response().getSpliced().getBytesAToB());
        }
        Run l = cli("list", "--control", control());
        assertTrue(l.out().lines().findFirst().orElseThrow().endsWith(": 1 task"), l.out());
        assertTrue(!l.out().matches("(?s).*\\n" + task + "\\s+splice.*"), l.out());
    }
}
