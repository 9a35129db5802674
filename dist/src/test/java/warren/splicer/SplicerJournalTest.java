package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.control.v1.Status;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.SystemdBoot;
import warren.fdpass.Received;
import warren.fdpass.SeqpacketSocket;

/**
 * Splicer's lines in a real journal (systemd 252 and journald booted by {@link SystemdBoot}, the
 * Debian package installed and its unit started unmodified, its output going to the journal): each entry has the priority of its line and the
 * unit's {@code SyslogIdentifier=}, no "&lt;N&gt;" is left in a message, and a repeated refusal
 * is a few entries and a count. Then the logrotate snippet of docs/logging.md, run as it is: the
 * audit file is renamed, a new one created, the daemon signalled and its next lines are in the
 * new file.
 */
@Timeout(value = 300, unit = TimeUnit.SECONDS)
class SplicerJournalTest {
    private static final String AUDIT = "/var/log/warren/splicer-audit.jsonl";
    private static final String UNIT = "warren-splicer.service";

    private static void await(String what, BooleanSupplier cond, SystemdBoot sd) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (!cond.getAsBoolean()) {
            assertTrue(System.nanoTime() < deadline, "timed out waiting for " + what + sd.report("splicer")
                    + "\n--- journal:\n" + journal(sd, "-o", "cat"));
            Thread.sleep(100);
        }
    }

    private static String journal(SystemdBoot sd, String... args) {
        try {
            List<String> cmd = new java.util.ArrayList<>(List.of("journalctl", "--no-pager", "-t", "warren-splicer"));
            cmd.addAll(List.of(args));
            return sd.exec(cmd.toArray(new String[0]));
        } catch (Exception e) {
            return e.toString();
        }
    }

    /** The logrotate configuration of docs/logging.md, as printed there. */
    private static String logrotateSnippet() throws Exception {
        String doc = Files.readString(Path.of("..", "docs", "logging.md"));
        int at = doc.indexOf("<!-- logrotate snippet");
        int from = doc.indexOf("```\n", at) + 4;
        return doc.substring(from, doc.indexOf("```", from));
    }

    @Test
    void entriesCarryPriorityAndIdentifierAndTheLogrotateSnippetReopensTheAudit() throws Exception {
        assumeTrue(SystemdBoot.available(), "needs root and systemd");
        assumeTrue(Files.isExecutable(Path.of("/usr/sbin/logrotate")), "needs logrotate (./warren test installs it)");
        Path stage = Files.createDirectories(Path.of("target", "systemd-journal-" + ProcessHandle.current().pid()))
                .toAbsolutePath();
        SystemdBoot.stagePackage(stage, SystemdBoot.builtPackage());
        Files.writeString(stage.resolve("logrotate.conf"), logrotateSnippet());
        byte[] data = new byte[16 * 1024];
        new java.util.Random(3).nextBytes(data);
        ExecutorService io = Executors.newCachedThreadPool();
        try (SystemdBoot sd = new SystemdBoot(stage)) {
            // the package installed, its units as shipped (journald runs with a package staged)
            sd.configurePackage();
            sd.appendConfig("splicer", "audit.path = " + AUDIT + "\nlog.rate_limit_lines = 3\nlog.rate_limit_interval = 1s\n");
            Path sock = sd.path("/run/warren/splicer.sock");
            String j = sd.systemctl("start", "systemd-journald.socket", "systemd-journald-dev-log.socket",
                    "systemd-journald.service");
            assertEquals("active", sd.show("systemd-journald.service", "ActiveState"), j);
            sd.systemctl("start", "warren-splicer.socket");
            try (ControlClient c = ControlClient.connect(sock);
                    Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                            .get(60, TimeUnit.SECONDS)) {
                assertEquals("splicer", r.response().getStatus().getDaemon());
            }
            Pairs.relayMany(sock, 1, 1, data, io);
            try (SeqpacketSocket s = SeqpacketSocket.connect(sock)) {
                for (int i = 0; i < 20; i++) { // a Splice naming fds it does not carry: refused 20 times
                    s.sendBlocking(Request.newBuilder().setId(100 + i).setSplice(Splice.newBuilder().setFdA(0).setFdB(1))
                            .build().toByteArray(), List.of(), 5000);
                    try (Received r = s.receiveBlocking(10_000)) {
                        assertTrue(Response.parseFrom(r.data()).hasError());
                    }
                }
            }
            await("the count of the repeated refusals", () -> journal(sd, "-o", "cat")
                    .contains(" similar lines suppressed)"), sd);

            String json = journal(sd, "-o", "json", "--output-fields=PRIORITY,MESSAGE,SYSLOG_IDENTIFIER");
            String cat = journal(sd, "-o", "cat");
            assertTrue(json.lines().anyMatch(l -> l.contains("\"PRIORITY\":\"5\"") && l.contains("splicer: serving on ")),
                    "serving is notice (5):\n" + json);
            assertTrue(json.lines().filter(l -> l.contains(" rejected: ") || l.contains(" refused: "))
                    .allMatch(l -> l.contains("\"PRIORITY\":\"6\"")), "refusals are info (6):\n" + json);
            assertTrue(cat.lines().noneMatch(l -> l.startsWith("<")), "journald took every prefix:\n" + cat);
            String notice = journal(sd, "-o", "cat", "-p", "notice");
            assertTrue(notice.contains("splicer: serving on ") && !notice.contains(" refused: ")
                    && !notice.contains(" rejected: "), "-p notice leaves the info lines out:\n" + notice);
            long printed = 0;
            long counted = 0;
            java.util.regex.Pattern summary = java.util.regex.Pattern.compile(".* \\((\\d+) similar lines? suppressed\\)$");
            for (String l : cat.lines().filter(l -> l.contains(" rejected: ") || l.contains(" refused: ")).toList()) {
                java.util.regex.Matcher m = summary.matcher(l);
                if (m.matches()) {
                    counted += Long.parseLong(m.group(1));
                } else {
                    printed++;
                }
            }
            assertEquals(20, printed + counted, "each refusal an entry or counted:\n" + cat);
            assertTrue(printed <= 6, printed + " entries of the repeated kind:\n" + cat);

            // logrotate as docs/logging.md says: rename, create 0640 warren, SIGUSR1 to the main process
            // 1 pair (start, end) and 20 rejected requests
            await("the audit lines so far", () -> exec(sd, "cat", AUDIT).lines().count() == 22, sd);
            String rot = sd.exec("logrotate", "-v", "-f", "-s", SystemdBoot.inside(stage, stage.resolve("logrotate.state")).toString(),
                    SystemdBoot.inside(stage, stage.resolve("logrotate.conf")).toString());
            assertEquals("640 warren", exec(sd, "stat", "-c", "%a %U", AUDIT).strip(), rot);
            Pairs.relayMany(sock, 1, 1, data, io);
            await("the next pair's lines in the new file", () -> exec(sd, "cat", AUDIT).lines().count() == 2, sd);
            assertEquals(22, exec(sd, "cat", AUDIT + ".1").lines().count(), "the rotated file got nothing more");
            await("the reopen in the journal", () -> journal(sd, "-o", "cat").contains(
                    "splicer: audit log reopened: " + AUDIT), sd);
            assertEquals("active", sd.show(UNIT, "ActiveState"));
            assertEquals("0", sd.show(UNIT, "NRestarts"), "USR1 neither killed nor restarted it");
            sd.systemctl("stop", UNIT);
            assertEquals("0", sd.show(UNIT, "ExecMainStatus"), "a clean exit on stop" + sd.report("splicer"));
            assertTrue(journal(sd, "-o", "cat", "-p", "notice").contains("splicer: stopped"));
        } finally {
            io.shutdownNow();
            SystemdBoot.deleteTree(stage);
        }
    }

    private static String exec(SystemdBoot sd, String... args) {
        try {
            return sd.exec(args);
        } catch (Exception e) {
            return e.toString();
        }
    }
}
