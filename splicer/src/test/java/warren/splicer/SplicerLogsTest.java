package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Request;
import warren.control.v1.Splice;
import warren.control.v1.Status;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.DaemonProcess;
import warren.fdpass.libc.Native;

/**
 * Logs and the audit never hold the relay (issue 11 part 5, issue 12 "also seen"), with a real
 * Splicer process: an audit file on a full tmpfs, stderr a pipe nobody reads, SIGUSR1 after
 * logrotate's rename, and the lines' priorities under journald (and none on a plain file).
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class SplicerLogsTest {
    @TempDir
    Path dir;

    private final byte[] data = new byte[64 * 1024];
    private final ExecutorService io = Executors.newCachedThreadPool();

    SplicerLogsTest() {
        new java.util.Random(11).nextBytes(data);
    }

    // ---- helpers

    /** {@code pairs} pairs, {@code parallel} at a time; returns the slowest pair's milliseconds. */
    private long relayMany(Path control, int pairs, int parallel) throws Exception {
        return Pairs.relayMany(control, pairs, parallel, data, io);
    }

    private static Map<String, Long> counters(Path control) throws Exception {
        try (ControlClient c = ControlClient.connect(control);
                Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                        .get(5, TimeUnit.SECONDS)) {
            return r.response().getStatus().getCountersMap();
        }
    }

    private static void await(String what, BooleanSupplier cond) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (!cond.getAsBoolean()) {
            assertTrue(System.nanoTime() < deadline, "timed out waiting for " + what);
            Thread.sleep(20);
        }
    }

    private static List<String> lines(Path f) {
        try {
            return Files.exists(f) ? Files.readAllLines(f) : List.of();
        } catch (IOException e) {
            return List.of();
        }
    }

    private static String modeOf(Path f) throws IOException {
        return PosixFilePermissions.toString(Files.getPosixFilePermissions(f));
    }

    /** 0640 less this process's umask (the daemon inherits it), as "rw-r-----". */
    private static String mode0640() throws IOException {
        int umask = 022;
        for (String l : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (l.startsWith("Umask:")) {
                umask = Integer.parseInt(l.substring(6).strip(), 8);
            }
        }
        int mode = 0640 & ~umask;
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < 9; i++) {
            sb.append((mode & (1 << (8 - i))) != 0 ? "rwxrwxrwx".charAt(i) : '-');
        }
        return sb.toString();
    }

    private void stop(DaemonProcess d) throws Exception {
        d.close();
        io.shutdownNow();
    }

    // ---- the tests

    @Test
    void anAuditFileOnAFullTmpfsNeitherStopsNorSlowsRelayingAndTheLostLinesAreCounted() throws Exception {
        assumeTrue(Native.getuid() == 0, "needs root (a tmpfs in a private mount namespace)");
        Path mnt = Files.createDirectory(dir.resolve("auditfs"));
        Process probe = new ProcessBuilder("unshare", "-m", "--propagation", "private", "sh", "-c",
                "mount -t tmpfs -o size=16k tmpfs \"$0\"", mnt.toString()).redirectErrorStream(true).start();
        assumeTrue(probe.waitFor(10, TimeUnit.SECONDS) && probe.exitValue() == 0, "unshare -m and a tmpfs mount work here");
        Path audit = mnt.resolve("audit.jsonl");
        Path conf = Files.writeString(dir.resolve("s.conf"), "audit.path = " + audit + "\n");
        Path ctl = dir.resolve("s.sock");
        Path log = dir.resolve("out.log");
        // the daemon's own mount namespace: the 16 KiB tmpfs exists only for it (and goes with it)
        DaemonProcess d = new DaemonProcess("splicer", Main.class, ctl, conf,
                List.of("unshare", "-m", "--propagation", "private", "sh", "-c",
                        "mount -t tmpfs -o size=16k tmpfs \"$0\" && exec \"$@\"", mnt.toString()),
                List.of(), pb -> pb.redirectErrorStream(true).redirectOutput(log.toFile()), log);
        try {
            long pid = d.pid();
            Path seen = Path.of("/proc/" + pid + "/root" + audit); // the file as the daemon sees it
            long slowest = relayMany(ctl, 200, 8); // ~1.5 KB of audit per pair: full after ~10 pairs
            await("audit.dropped > 0", () -> {
                try {
                    return counters(ctl).getOrDefault("audit.dropped", 0L) > 0;
                } catch (Exception e) {
                    return false;
                }
            });
            Map<String, Long> c = counters(ctl);
            assertTrue(c.get("audit.write_errors") > 0, c.toString());
            assertEquals(200 - 0, c.getOrDefault("requests.splice", 0L), "every pair was served");
            List<String> kept = Files.readAllLines(seen);
            assertTrue(Files.size(seen) <= 16 * 1024 && kept.size() > 4, kept.size() + " lines kept");
            for (int i = 0; i < kept.size() - 1; i++) { // only the last line may be cut by ENOSPC
                assertTrue(kept.get(i).startsWith("{\"ts\":") && kept.get(i).endsWith("}"), kept.get(i));
            }
            long lost = c.get("audit.dropped");
            assertTrue(lost + kept.size() >= 2 * 200 - 1, lost + " lost + " + kept.size() + " kept: every line is"
                    + " either in the file or counted");
            relayMany(ctl, 1, 1); // still relaying
            String out = Files.readString(log);
            assertTrue(out.contains("audit log " + audit + ": write failed") && out.contains("No space left on device"),
                    out);
            long reports = out.lines().filter(l -> l.contains(": write failed")).count();
            assertTrue(reports <= 10, reports + " reports of the failing audit write: rate-limited");
            System.err.printf("audit on a full 16 KiB tmpfs: 201 pairs relayed, slowest %d ms; %d lines kept,"
                    + " %d dropped, %d failed writes%n", slowest, kept.size(), lost, c.get("audit.write_errors"));
            assertTrue(slowest < 10_000, "slowest pair " + slowest + " ms");
        } finally {
            stop(d);
        }
    }

    @Test
    void stderrAPipeNobodyReadsHoldsNeitherStatusNorRelaying() throws Exception {
        // the default audit goes to stderr: 200 pairs write ~300 KB there, far more than a pipe (64 KiB) holds
        Path conf = Files.writeString(dir.resolve("s.conf"), "audit.queue = 64\nlog.queue = 64\n");
        Path ctl = dir.resolve("s.sock");
        DaemonProcess d = new DaemonProcess("splicer", Main.class, ctl, conf, List.of(), List.of(), pb -> { }, null);
        try {
            assertTrue(d.process().isAlive());
            long slowest = relayMany(ctl, 200, 8);
            long t0 = System.nanoTime();
            Map<String, Long> c = counters(ctl); // answered within 5 s, or this throws
            long statusMs = (System.nanoTime() - t0) / 1_000_000;
            assertTrue(c.getOrDefault("audit.dropped", 0L) > 0, "the audit queue filled and counted its drops: " + c);
            relayMany(ctl, 1, 1);
            System.err.printf("stderr unread: 201 pairs relayed, slowest %d ms; Status in %d ms; audit.dropped %d,"
                    + " log.dropped %d%n", slowest, statusMs, c.get("audit.dropped"), c.getOrDefault("log.dropped", 0L));
            // and it still stops: the exit waits for stderr only a bounded time
            long pid = d.pid();
            long t1 = System.nanoTime();
            new ProcessBuilder("kill", "-TERM", Long.toString(pid)).start().waitFor();
            assertTrue(d.process().waitFor(30, TimeUnit.SECONDS), "exited despite the stuck stderr");
            assertEquals(0, d.process().exitValue());
            System.err.printf("stderr unread: exit %d ms after SIGTERM%n", (System.nanoTime() - t1) / 1_000_000);
        } finally {
            stop(d);
        }
    }

    @Test
    void sigusr1ReopensTheAuditFileAfterLogrotateRenamedIt() throws Exception {
        Path audit = dir.resolve("audit.jsonl");
        Path rotated = dir.resolve("audit.jsonl.1");
        Path conf = Files.writeString(dir.resolve("s.conf"), "audit.path = " + audit + "\n");
        Path ctl = dir.resolve("s.sock");
        Path log = dir.resolve("out.log");
        DaemonProcess d = new DaemonProcess("splicer", Main.class, ctl, conf, log);
        try {
            assertEquals(mode0640(), modeOf(audit), "created 0640 (less the umask)");
            relayMany(ctl, 1, 1);
            await("2 audit lines", () -> lines(audit).size() == 2);
            Files.move(audit, rotated);
            long pid = d.pid();
            new ProcessBuilder("kill", "-USR1", Long.toString(pid)).start().waitFor();
            await("a new audit file at the path", () -> Files.exists(audit));
            assertEquals(mode0640(), modeOf(audit));
            relayMany(ctl, 2, 1);
            await("4 audit lines in the new file", () -> lines(audit).size() == 4);
            assertEquals(2, lines(rotated).size(), "the rotated file got nothing more");
            assertTrue(lines(rotated).get(0).contains("\"event\":\"start\""));
            assertTrue(lines(audit).get(0).contains("\"event\":\"start\""));
            assertEquals(pid, d.pid(), "SIGUSR1 did not stop or upgrade the daemon");
            await("the reopen logged", () -> lines(log).stream().anyMatch(l -> l.equals("splicer: audit log reopened: "
                    + audit)));
        } finally {
            stop(d);
        }
    }

    /** Starts Splicer with stderr to {@code out} and JOURNAL_STREAM set to {@code journalStream} (null: unset). */
    private DaemonProcess startLogging(Path out, String journalStream, String config) throws Exception {
        Path conf = Files.writeString(dir.resolve("s.conf"), "audit.path = " + dir.resolve("audit.jsonl") + "\n"
                + config);
        Files.deleteIfExists(dir.resolve("s.sock"));
        return new DaemonProcess("splicer", Main.class, dir.resolve("s.sock"), conf, List.of(),
                List.of("-Dwarren.debug=true"), pb -> {
                    pb.environment().remove("JOURNAL_STREAM");
                    if (journalStream != null) {
                        pb.environment().put("JOURNAL_STREAM", journalStream);
                    }
                    pb.redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.appendTo(out.toFile()));
                }, out);
    }

    private static String devIno(Path f) throws IOException {
        return Long.toUnsignedString(((Number) Files.getAttribute(f, "unix:dev")).longValue()) + ":"
                + Files.getAttribute(f, "unix:ino");
    }

    @Test
    void underJournaldLinesCarryTheirPriorityStartSaysNothingOfUpgradesAndRepeatsAreCounted() throws Exception {
        Path out = Files.createFile(dir.resolve("journal.log"));
        DaemonProcess d = startLogging(out, devIno(out), "log.rate_limit_lines = 3\nlog.rate_limit_interval = 1s\n");
        try {
            // the in-process warm-up (run at every start) is one debug line that says what it is
            await("the warm-up's debug line", () -> lines(out).stream().anyMatch(l -> l.startsWith("<7>splicer: debug: warm-up: ")));
            // 50 requests refused the same way: 3 lines, then a count
            try (warren.fdpass.SeqpacketSocket s = warren.fdpass.SeqpacketSocket.connect(d.control)) {
                for (int i = 0; i < 50; i++) { // a Splice naming fds it does not carry
                    s.sendBlocking(Request.newBuilder().setId(100 + i).setSplice(Splice.newBuilder().setFdA(0).setFdB(1))
                            .build().toByteArray(), List.of(), 5000);
                    try (warren.fdpass.Received r = s.receiveBlocking(10_000)) {
                        assertTrue(warren.control.v1.Response.parseFrom(r.data()).hasError());
                    }
                }
            }
            await("the summary of the repeated line", () -> lines(out).stream().anyMatch(l -> l.endsWith(
                    " similar lines suppressed)")));
            long pid = d.pid();
            d.close();
            await("exit", () -> !ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false));
            List<String> ls = lines(out);
            String all = String.join("\n", ls);
            assertTrue(ls.stream().allMatch(l -> l.matches("<[0-7]>.*")), "every line has its priority:\n" + all);
            assertTrue(ls.stream().anyMatch(l -> l.startsWith("<5>splicer: serving on ")), all);
            assertTrue(ls.stream().anyMatch(l -> l.equals("<5>splicer: stopped")), all);
            long printed = 0;
            long suppressed = 0;
            java.util.regex.Pattern summary = java.util.regex.Pattern.compile(".* \\((\\d+) similar lines? suppressed\\)$");
            for (String l : ls) {
                if (l.startsWith("<6>splicer: connection ") && (l.contains(" rejected: ") || l.contains(" refused: "))) {
                    java.util.regex.Matcher m = summary.matcher(l);
                    if (m.matches()) {
                        suppressed += Long.parseLong(m.group(1));
                    } else {
                        printed++;
                    }
                }
            }
            assertEquals(50, printed + suppressed, "every refusal printed or counted:\n" + all);
            assertTrue(printed <= 6, printed + " lines of the repeated kind:\n" + all);
            for (String l : ls) {
                assertFalse(l.contains("handoff:") || l.contains("warmed up") || l.contains("upgrade:")
                        || l.contains("took over"), "a plain start reads like an upgrade: " + l);
            }
        } finally {
            stop(d);
        }
    }

    @Test
    void onAFileOrATerminalThereIsNoPrefixEvenWithAnInheritedJournalStream() throws Exception {
        Path out = Files.createFile(dir.resolve("plain.log"));
        Path other = Files.createFile(dir.resolve("other"));
        // JOURNAL_STREAM inherited from a unit, but this stderr was redirected elsewhere
        DaemonProcess d = startLogging(out, devIno(other), "");
        try {
            await("the warm-up's debug line", () -> lines(out).stream().anyMatch(l -> l.startsWith("splicer: debug: warm-up: ")));
            long pid = d.pid();
            d.close();
            await("exit", () -> !ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false));
            List<String> ls = lines(out);
            assertTrue(ls.stream().noneMatch(l -> l.startsWith("<")), String.join("\n", ls));
            assertTrue(ls.contains("splicer: stopped"), String.join("\n", ls));
        } finally {
            stop(d);
        }
    }
}
