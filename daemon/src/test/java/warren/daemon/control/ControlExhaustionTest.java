package warren.daemon.control;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Status;
import warren.control.v1.StatusReport;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.HoldingSpliceHandler;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Received;
import warren.fdpass.SeqpacketSocket;

/**
 * Issue 12, item 2: a daemon out of fds neither spins nor floods its log, and one uid cannot hold
 * every control connection. Before the fix, accept4() failing with EMFILE on the level-triggered
 * listener was retried at once, for ever: ~500,000 log lines in 2 s at two CPUs.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ControlExhaustionTest {
    @TempDir
    Path dir;

    private static Response status(ControlClient c) throws Exception {
        try (Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                .get(20, TimeUnit.SECONDS)) {
            return r.response();
        }
    }

    @Test
    void oneUidCannotHoldEveryConnection() throws Exception {
        try (RunningDaemon d = new RunningDaemon(HoldingSpliceHandler.spec(), dir.resolve("ctl.sock"),
                "audit.path = /dev/null\ncontrol.max_clients_per_uid = 3\n")) {
            List<ControlClient> held = new ArrayList<>();
            try {
                for (int i = 0; i < 3; i++) {
                    held.add(ControlClient.connect(d.control));
                    assertEquals(Response.BodyCase.STATUS, status(held.get(i)).getBodyCase());
                }
                try (SeqpacketSocket fourth = SeqpacketSocket.connect(d.control); Received r = fourth.receiveBlocking(10_000)) {
                    Response resp = Response.parseFrom(r.data());
                    assertEquals(Error.Code.RESOURCE_EXHAUSTED, resp.getError().getCode(), resp.toString());
                    assertTrue(resp.getError().getMessage().contains("control.max_clients_per_uid"), resp.toString());
                }
                held.remove(0).close();
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
                while (true) { // the daemon sees the close when it next reads that connection
                    try (ControlClient again = ControlClient.connect(d.control)) {
                        Response resp = status(again);
                        if (resp.getBodyCase() == Response.BodyCase.STATUS) {
                            assertEquals(1L, resp.getStatus().getCountersOrDefault("clients.refused_per_uid", 0));
                            break;
                        }
                    } catch (java.util.concurrent.ExecutionException e) {
                        // refused: the closed one was not seen yet
                    }
                    assertTrue(System.nanoTime() < deadline, "a connection freed is a connection available");
                    Thread.sleep(20);
                }
            } finally {
                held.forEach(ControlClient::close);
            }
        }
    }

    @Test
    void outOfFdsTheListenerBacksOffAndTheLogStaysShort() throws Exception {
        Path sock = dir.resolve("low.sock");
        Path log = dir.resolve("out.log");
        Path conf = Files.writeString(dir.resolve("low.conf"), "audit.path = /dev/null\n"); // the per-uid cap (256) is above the fd limit
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process p = new ProcessBuilder("bash", "-c", "ulimit -n 160 && exec \"$0\" \"$@\"", java, "-cp",
                System.getProperty("java.class.path"), HoldingSpliceHandler.class.getName(), "--control", sock.toString(),
                "--config", conf.toString()).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        List<SeqpacketSocket> flood = new ArrayList<>();
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (!Files.exists(sock)) {
                assertTrue(System.nanoTime() < deadline && p.isAlive(), "the daemon came up");
                Thread.sleep(20);
            }
            try (ControlClient early = ControlClient.connect(sock)) {
                assertEquals(Response.BodyCase.STATUS, status(early).getBodyCase());
                warmUp(early);
                for (int i = 0; i < 250; i++) { // more than its 160 fds: the rest wait in the backlog
                    flood.add(SeqpacketSocket.connect(sock));
                }
                deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                long exhausted = 0;
                while (exhausted == 0) { // (before the fix: no such counter, every failure a loop error)
                    StatusReport now = status(early).getStatus();
                    exhausted = now.getCountersOrDefault("accept.exhausted", 0) + now.getCountersOrDefault("loop.errors", 0);
                    if (System.nanoTime() > deadline) {
                        fail("accept4() never ran out of fds: " + status(early) + "\n" + tail(log));
                    }
                    Thread.sleep(50);
                }
                // saturated: how much CPU does it burn, how much does it log?
                long cpu0 = cpuTicks(p.pid());
                Thread.sleep(1000);
                long cpu = cpuTicks(p.pid()) - cpu0;
                Response st = status(early);
                long emfileLines;
                try (var lines = Files.lines(log)) {
                    emfileLines = lines.filter(l -> l.contains("EMFILE")).count();
                }
                System.out.printf("out of fds for 1 s: %d ms of CPU, %d log lines about EMFILE, accept.exhausted %d,"
                        + " loop.errors %d%n", cpu * 10, emfileLines, st.getStatus().getCountersOrDefault("accept.exhausted", 0),
                        st.getStatus().getCountersOrDefault("loop.errors", 0));
                // log.rate_limit_lines (10 per 10 s per kind) bounds them; before the fix: 15,526 lines in 1 s
                assertTrue(emfileLines <= 10, emfileLines + " log lines about EMFILE:\n" + tail(log));
                assertEquals(0, st.getStatus().getCountersOrDefault("loop.errors", 0), tail(log));
                // a request whose fds cannot be received (recvmsg: MSG_CTRUNC) is "not now", answered by its id
                int[] x = warren.fdpass.libc.Native.socketpair(warren.fdpass.libc.Native.AF_UNIX,
                        warren.fdpass.libc.Native.SOCK_STREAM | warren.fdpass.libc.Native.SOCK_CLOEXEC);
                int[] y = warren.fdpass.libc.Native.socketpair(warren.fdpass.libc.Native.AF_UNIX,
                        warren.fdpass.libc.Native.SOCK_STREAM | warren.fdpass.libc.Native.SOCK_CLOEXEC);
                List<warren.fdpass.Fd> ends = List.of(warren.fdpass.Fd.adopt(x[0]), warren.fdpass.Fd.adopt(x[1]),
                        warren.fdpass.Fd.adopt(y[0]), warren.fdpass.Fd.adopt(y[1]));
                try (Reply r = early.call(Request.newBuilder().setSplice(warren.control.v1.Splice.newBuilder()
                        .setFdA(0).setFdB(1)), List.of(ends.get(0), ends.get(2))).get(20, TimeUnit.SECONDS)) {
                    assertEquals(Error.Code.RESOURCE_EXHAUSTED, r.response().getError().getCode(), r.response().toString());
                    assertTrue(r.response().getError().getMessage().contains("MSG_CTRUNC"), r.response().toString());
                } catch (java.util.concurrent.TimeoutException e) {
                    fail("no answer to a Splice whose fds could not be received: " + status(early) + "\n" + tail(log));
                } finally {
                    warren.fdpass.Fd.closeAll(ends);
                }
                // connections go away: the listener comes back and a new client is served
                for (int i = 0; i < 150; i++) {
                    flood.remove(0).close();
                }
                try (ControlClient late = ControlClient.connect(sock)) {
                    assertEquals(Response.BodyCase.STATUS, status(late).getBodyCase());
                }
            }
            p.destroy(); // SIGTERM
            assertTrue(p.waitFor(30, TimeUnit.SECONDS), "stopped on SIGTERM");
            assertEquals(0, p.exitValue(), tail(log));
        } finally {
            flood.forEach(SeqpacketSocket::close);
            p.destroyForcibly();
            p.waitFor(10, TimeUnit.SECONDS);
        }
    }

    /**
     * Runs the daemon's refusal, audit and timer code once before it runs out of fds: this test's
     * class path is directories, and loading a class from a directory takes an fd (from a jar, as
     * deployed, it does not: the jar stays open).
     */
    private static void warmUp(ControlClient c) throws Exception {
        int[] x = warren.fdpass.libc.Native.socketpair(warren.fdpass.libc.Native.AF_UNIX,
                warren.fdpass.libc.Native.SOCK_STREAM | warren.fdpass.libc.Native.SOCK_CLOEXEC);
        try (warren.fdpass.Fd a = warren.fdpass.Fd.adopt(x[0]); warren.fdpass.Fd b = warren.fdpass.Fd.adopt(x[1]);
                Reply r = c.call(Request.newBuilder().setSplice(warren.control.v1.Splice.newBuilder().setFdA(0).setFdB(1)
                        .setLimits(warren.control.v1.Limits.newBuilder().setLifetimeMs(1))), List.of(a, b))
                        .get(20, TimeUnit.SECONDS);
                Reply refused = c.call(Request.newBuilder(), List.of()).get(20, TimeUnit.SECONDS)) { // no body: refused
            assertEquals(Response.BodyCase.SPLICED, r.response().getBodyCase(), r.response().toString());
            assertEquals(Error.Code.UNKNOWN_REQUEST, refused.response().getError().getCode(), refused.response().toString());
            r.takeFd(0).close();
            r.takeFd(1).close();
        }
    }

    /** utime + stime of a process, in clock ticks (1/100 s). */
    private static long cpuTicks(long pid) throws Exception {
        String stat = Files.readString(Path.of("/proc/" + pid + "/stat"));
        String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
        return Long.parseLong(f[11]) + Long.parseLong(f[12]);
    }

    private static String tail(Path log) throws Exception {
        try (java.io.RandomAccessFile f = new java.io.RandomAccessFile(log.toFile(), "r")) {
            long from = Math.max(0, f.length() - 3000);
            byte[] b = new byte[(int) (f.length() - from)];
            f.seek(from);
            f.readFully(b);
            return "... (" + f.length() + " bytes of log)\n" + new String(b);
        }
    }
}
