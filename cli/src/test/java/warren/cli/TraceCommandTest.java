package warren.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.bumblebee.onramp.OnRamp;
import warren.control.v1.FiveTuple;
import warren.control.v1.Request;
import warren.control.v1.TaskInfo;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.RunningDaemon;
import warren.daemon.testing.Tcpdump;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;
import warren.linux.net.Netns;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;
import warren.splicer.client.SplicerClient;

/**
 * {@code ./warren trace} as run by the launcher ({@link Main#run} in this JVM, output captured):
 * a Bumblebee flow's packets into a pcap tcpdump reads, a Splicer pair's byte counts as lines,
 * and the one-line failures (unknown task: exit 1; bad usage: exit 2).
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class TraceCommandTest {
    @TempDir
    Path dir;
    private final ExecutorService pool = Executors.newCachedThreadPool();

    @AfterEach
    void tearDown() {
        pool.shutdownNow();
    }

    /** A command's exit status, stdout and stderr. */
    record Run(int status, String out, String err) {}

    private Future<Run> run(String... args) {
        return pool.submit(() -> {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            ByteArrayOutputStream err = new ByteArrayOutputStream();
            int st = Main.run(args, new PrintStream(out, true, StandardCharsets.UTF_8),
                    new PrintStream(err, true, StandardCharsets.UTF_8));
            return new Run(st, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
        });
    }

    /** Waits until the daemon lists a task of kind "trace" (the command's trace is in place). */
    private static void awaitTrace(ControlClient c) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (System.nanoTime() < deadline) {
            try (Reply r = c.call(Request.newBuilder().setList(warren.control.v1.List.getDefaultInstance()), List.of())
                    .get(5, TimeUnit.SECONDS)) {
                if (r.response().getListing().getTasksList().stream().anyMatch(t -> t.getKind().equals("trace"))) {
                    return;
                }
            }
            Thread.sleep(10);
        }
        throw new AssertionError("no trace task appeared");
    }

    @Test
    @ExtendWith(NetnsExtension.class)
    void aBumblebeeFlowsPacketsGoToAPcapFileInBothForms(TestNetwork net) throws Exception {
        CompletableFuture<Reply> upgraded = new CompletableFuture<>();
        Path file = dir.resolve("flow.pcap");
        try (RunningDaemon d = new RunningDaemon(warren.bumblebee.Main.spec(), dir.resolve("bb.sock"),
                "audit.path = /dev/null\n");
                ControlClient c = ControlClient.connect(d.control);
                OnRamp ramp = new OnRamp(net.namespace("onramp").name, c, upgraded::complete)) {
            Fd client = Netns.call("/run/netns/" + ramp.client,
                    () -> TcpSockets.connect(new InetSocketAddress(InetAddress.getByName("198.18.99.9"), 80)));
            Reply up = upgraded.get(10, TimeUnit.SECONDS);
            FiveTuple nat = up.response().getUpgraded().getTranslated();
            long task;
            try (Fd server = up.takeFd(up.response().getUpgraded().getFdSocket());
                    Reply r = c.call(Request.newBuilder().setList(warren.control.v1.List.getDefaultInstance()), List.of())
                            .get(5, TimeUnit.SECONDS)) {
                up.close();
                task = r.response().getListing().getTasksList().stream().mapToLong(TaskInfo::getTask).max().orElseThrow();
                // one request and its answer: 2 data segments, each seen twice (client side, translated),
                // and the ACKs: at least 6 packets
                Future<Run> trace = run("trace", "--control", d.control.toString(), "--task", Long.toString(task),
                        "--pcap", file.toString(), "--packets", "6", "--seconds", "30");
                awaitTrace(c);
                Pointer p = Native.allocate(256);
                TcpSockets.writeFully(client, p, "ping".getBytes(), 0, 4);
                byte[] got = new byte[4];
                assertEquals(4, TcpSockets.read(server, p, got, 0, 4));
                TcpSockets.writeFully(server, p, "pong".getBytes(), 0, 4);
                assertEquals(4, TcpSockets.read(client, p, got, 0, 4));
                Run res = trace.get(30, TimeUnit.SECONDS);
                System.out.print(res.out());
                assertEquals(0, res.status(), res.err() + res.out());
                assertTrue(res.out().startsWith("bumblebee "), res.out());
                assertTrue(res.out().contains("tracing task " + task), res.out());
                assertTrue(res.out().contains("trace of task " + task + " ended (max_packets): 6 packets, written to "
                        + file), res.out());
            }
            client.close();
            Tcpdump.Read read = Tcpdump.read(file);
            System.out.print(read.raw());
            assertEquals(6, read.packets().size(), read.raw());
            String all = String.join("\n", read.packets());
            String natSrc = InetAddress.getByAddress(nat.getSrcIp().toByteArray()).getHostAddress() + "." + nat.getSrcPort();
            assertTrue(all.contains("198.18.50.1.") && all.contains(" > 198.18.99.9.80: Flags [P.]"), all);
            assertTrue(all.contains(natSrc + " > 198.19.255.254.8080: Flags [P.]"), all);
            assertFalse(all.contains("incorrect") || all.contains("bad cksum"), all);
        }
    }

    @Test
    void aSplicerPairsByteCountsArePrintedAsLines() throws Exception {
        Fd[] l = listeners();
        try (RunningDaemon d = new RunningDaemon(warren.splicer.Main.spec(), dir.resolve("s.sock"),
                "audit.path = /dev/null\n");
                SplicerClient client = SplicerClient.connect(d.control)) {
            Fd c = TcpSockets.connect(TcpSockets.localAddress(l[0]));
            Fd a = TcpSockets.accept(l[0]);
            Fd b = TcpSockets.connect(TcpSockets.localAddress(l[1]));
            Fd u = TcpSockets.accept(l[1]);
            CompletableFuture<Long> task = new CompletableFuture<>();
            client.splice(a, b, null, null, task::complete);
            a.close();
            b.close();
            Pointer p = Native.allocate(2048);
            TcpSockets.writeFully(c, p, new byte[1000], 0, 1000);
            byte[] got = new byte[1000];
            for (int off = 0; off < 1000; ) {
                off += TcpSockets.read(u, p, got, off, 1000 - off);
            }
            Run res = run("trace", "--control", d.control.toString(), "--task", Long.toString(task.get(10, TimeUnit.SECONDS)),
                    "--seconds", "1").get(30, TimeUnit.SECONDS);
            System.out.print(res.out());
            assertEquals(0, res.status(), res.err() + res.out());
            assertTrue(res.out().startsWith("splicer "), res.out());
            assertTrue(res.out().matches("(?s).*\\d\\d:\\d\\d:\\d\\d\\.\\d{9}  a->b 1000 B  b->a 0 B\n.*"),
                    res.out());
            assertTrue(res.out().endsWith("trace of task " + task.get() + " ended (seconds)\n"), res.out());
            assertTrue(res.out().lines().filter(x -> x.contains("a->b")).count() >= 2,
                    "a count at once and one at the end at least (and every 500 ms between): " + res.out());
            Fd.closeAll(List.of(c, u));
        } finally {
            Fd.closeAll(List.of(l));
        }
    }

    /** The command as its own process (as the launcher runs it): Ctrl-C ends the trace through Cancel. */
    @Test
    void ctrlCCancelsTheTraceAndFinishesTheOutput() throws Exception {
        Fd[] l = listeners();
        try (RunningDaemon d = new RunningDaemon(warren.splicer.Main.spec(), dir.resolve("s.sock"),
                "audit.path = /dev/null\n");
                SplicerClient client = SplicerClient.connect(d.control)) {
            Fd c = TcpSockets.connect(TcpSockets.localAddress(l[0]));
            Fd a = TcpSockets.accept(l[0]);
            Fd b = TcpSockets.connect(TcpSockets.localAddress(l[1]));
            Fd u = TcpSockets.accept(l[1]);
            CompletableFuture<Long> task = new CompletableFuture<>();
            client.splice(a, b, null, null, task::complete);
            a.close();
            b.close();
            Process p = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-cp",
                    System.getProperty("java.class.path"), Main.class.getName(), "trace", "--control", d.control.toString(),
                    "--task", Long.toString(task.get(10, TimeUnit.SECONDS)), "--seconds", "60")
                    .redirectErrorStream(true).start();
            try {
                java.io.BufferedReader out = new java.io.BufferedReader(
                        new java.io.InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
                StringBuilder seen = new StringBuilder();
                String line;
                while ((line = out.readLine()) != null && !line.contains("a->b")) {
                    seen.append(line).append('\n'); // the header, then the first count: the trace runs
                }
                assertTrue(line != null, "no count line: " + seen);
                assertEquals(0, new ProcessBuilder("kill", "-INT", Long.toString(p.pid())).start().waitFor());
                while ((line = out.readLine()) != null) {
                    seen.append(line).append('\n');
                }
                assertTrue(p.waitFor(20, TimeUnit.SECONDS), "exited after Ctrl-C");
                assertTrue(seen.toString().endsWith("trace of task " + task.get() + " ended (cancelled)\n"), seen.toString());
            } finally {
                p.destroyForcibly();
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (d.daemon.tasks().list().stream().anyMatch(r -> r.kind().equals("trace")) && System.nanoTime() < deadline) {
                Thread.sleep(20);
            }
            assertFalse(d.daemon.tasks().list().stream().anyMatch(r -> r.kind().equals("trace")), "the trace ended");
            Fd.closeAll(List.of(c, u));
        } finally {
            Fd.closeAll(List.of(l));
        }
    }

    @Test
    void failuresAreOneLine() throws Exception {
        try (RunningDaemon d = new RunningDaemon(warren.splicer.Main.spec(), dir.resolve("s.sock"),
                "audit.path = /dev/null\n")) {
            Run none = run("trace", "--control", d.control.toString(), "--task", "99").get(30, TimeUnit.SECONDS);
            assertEquals(1, none.status(), none.toString());
            assertEquals("warren trace: NOT_FOUND: no task 99\n", none.err());
            Run bad = run("trace", "--control", d.control.toString(), "--task", "0").get(30, TimeUnit.SECONDS);
            assertEquals(2, bad.status(), bad.toString());
            assertEquals(1, bad.err().lines().count(), bad.err());
            Run missing = run("trace", "--control", d.control.toString()).get(30, TimeUnit.SECONDS);
            assertEquals(2, missing.status(), missing.toString());
            assertTrue(missing.err().contains("--task"), missing.err());
        }
    }

    private static Fd[] listeners() throws Exception {
        InetSocketAddress any = new InetSocketAddress(InetAddress.getLoopbackAddress(), 0);
        return new Fd[] {TcpSockets.listen(any, 16), TcpSockets.listen(any, 16)};
    }
}
