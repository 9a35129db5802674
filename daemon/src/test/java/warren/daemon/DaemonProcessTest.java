package warren.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.EndReason;
import warren.control.v1.Error;
import warren.control.v1.Limits;
import warren.control.v1.Request;
import warren.control.v1.Splice;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.HoldingSpliceHandler;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;

/** The daemon as a real process: SIGTERM drains and exits 0; bad options and configs exit 2. */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class DaemonProcessTest {
    @TempDir
    Path dir;

    private Process start(String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-cp", System.getProperty("java.class.path"), HoldingSpliceHandler.class.getName()));
        cmd.addAll(List.of(args));
        return new ProcessBuilder(cmd).redirectErrorStream(true).start();
    }

    private static String finish(Process p) throws Exception {
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), "process ended");
        return new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    }

    @Test
    void sigtermStopsAcceptingHandsEveryTaskBackAndExitsZero() throws Exception {
        Path sock = dir.resolve("d.sock");
        Path audit = dir.resolve("audit.jsonl");
        Path conf = Files.writeString(dir.resolve("d.conf"), "audit.path = " + audit + "\n");
        Process p = start("--control", sock.toString(), "--config", conf.toString());
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (!Files.exists(sock)) {
                assertTrue(System.nanoTime() < deadline && p.isAlive(), "daemon came up");
                Thread.sleep(20);
            }
            List<Fd> mine = new ArrayList<>();
            List<CompletableFuture<Reply>> held = new ArrayList<>();
            try (ControlClient c = ControlClient.connect(sock)) {
                CountDownLatch accepted = new CountDownLatch(3);
                for (int i = 1; i <= 3; i++) {
                    int[] x = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                    int[] y = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                    Fd a = Fd.adopt(x[0]);
                    Fd b = Fd.adopt(y[0]);
                    mine.addAll(List.of(a, b, Fd.adopt(x[1]), Fd.adopt(y[1])));
                    held.add(c.call(Request.newBuilder().setId(i).setSplice(Splice.newBuilder().setFdA(0).setFdB(1)
                            .setLimits(Limits.newBuilder().setLifetimeMs(600_000))), List.of(a, b),
                            r -> accepted.countDown()));
                }
                assertTrue(accepted.await(20, TimeUnit.SECONDS));
                new ProcessBuilder("kill", "-TERM", Long.toString(p.pid())).start().waitFor();
                for (CompletableFuture<Reply> f : held) {
                    try (Reply r = f.get(20, TimeUnit.SECONDS)) {
                        assertEquals(EndReason.SHUTDOWN, r.response().getSpliced().getReason(), r.toString());
                        assertEquals(2, r.fdCount(), "sockets handed back");
                    }
                }
            } finally {
                Fd.closeAll(mine);
            }
            String out = finish(p);
            assertEquals(0, p.exitValue(), out);
            assertTrue(out.contains("shutting down") && out.contains("stopped"), out);
            assertFalse(Files.exists(sock), "control socket removed");
            List<String> lines = Files.readAllLines(audit);
            assertEquals(3, lines.stream().filter(l -> l.contains("\"event\":\"start\"")).count());
            assertEquals(3, lines.stream().filter(l -> l.contains("\"event\":\"end\"")).count());
        } finally {
            p.destroyForcibly();
        }
    }

    @Test
    void aBadFlagOrConfigIsOneClearLineAndExitTwo() throws Exception {
        Process p = start("--control", dir.resolve("x.sock").toString(), "--bogus");
        String out = finish(p);
        assertEquals(2, p.exitValue());
        assertEquals("testd: unknown option '--bogus' (try --help)\n", out);

        p = start();
        out = finish(p);
        assertEquals(2, p.exitValue());
        assertEquals("testd: --control PATH is required (try --help)\n", out);

        Path conf = Files.writeString(dir.resolve("bad.conf"), "# ok\ncontrol.max_clients = 12\ncontrol.max_clinets = 3\n");
        p = start("--control", dir.resolve("x.sock").toString(), "--config", conf.toString());
        out = finish(p);
        assertEquals(2, p.exitValue());
        assertTrue(out.startsWith("testd: " + conf + " line 3: unknown key 'control.max_clinets'"), out);
        assertEquals(1, out.split("\n").length, out);

        Files.writeString(conf, "shutdown.drain_timeout = soon\n");
        p = start("--control", dir.resolve("x.sock").toString(), "--config", conf.toString());
        out = finish(p);
        assertEquals(2, p.exitValue());
        assertEquals("testd: " + conf + " line 1: bad value 'soon' for shutdown.drain_timeout: not a number\n", out);

        p = start("--control", dir.resolve("x.sock").toString(), "--config", dir.resolve("missing.conf").toString());
        out = finish(p);
        assertEquals(2, p.exitValue());
        assertTrue(out.startsWith("testd: cannot read config"), out);

        p = start("--help");
        out = finish(p);
        assertEquals(0, p.exitValue());
        assertTrue(out.startsWith("usage: ./warren testd --control PATH"), out);

        p = start("--print-config");
        out = finish(p);
        assertEquals(0, p.exitValue());
        assertTrue(out.contains("control.max_in_flight_per_client = 262144"), out);
        assertTrue(out.contains("\ncontrol.mode = 0660\n"), out);
        // the printed config, used as the config, changes nothing (issue 13: 0660 came back as 0432)
        Path printed = Files.writeString(dir.resolve("printed.conf"), out);
        p = start("--print-config", "--config", printed.toString());
        assertEquals(out, finish(p));
        assertEquals(0, p.exitValue());

        Files.writeString(conf, "control.admins = user:root\ncontrol.clients = group:no-such-group-warren\n");
        p = start("--control", dir.resolve("x.sock").toString(), "--config", conf.toString());
        out = finish(p);
        assertEquals(2, p.exitValue());
        assertEquals("testd: " + conf + " line 2: bad value 'group:no-such-group-warren' for control.clients: unknown"
                + " group 'no-such-group-warren'\n", out);

        Files.writeString(conf, "control.mode = 0666\n");
        p = start("--control", dir.resolve("x.sock").toString(), "--config", conf.toString());
        out = finish(p);
        assertEquals(2, p.exitValue());
        assertEquals("testd: cannot start on " + dir.resolve("x.sock") + ": control.mode = 0666 lets any local user"
                + " connect; refusing (set control.allow_world_writable = true to mean it)\n", out);
        assertFalse(Files.exists(dir.resolve("x.sock")));
    }

    @Test
    void aControlPathThatCannotBeBoundIsOneLineAndExitOne() throws Exception {
        Process p = start("--control", dir.resolve("no/such/dir/x.sock").toString());
        String out = finish(p);
        assertEquals(1, p.exitValue(), out);
        assertTrue(out.startsWith("testd: cannot start on ") && out.contains("ENOENT"), out);
        assertEquals(Error.Code.INTERNAL.getNumber(), 17, "error codes are stable");
    }
}
