package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Cancel;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.control.v1.Status;
import warren.control.v1.TaskInfo;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.AsUser;
import warren.daemon.testing.DaemonProcess;
import warren.fdpass.Fd;
import warren.fdpass.TestSockets;

/**
 * Issue 11, part 1, from outside: a Splicer process run by root with its control socket's group
 * set to nogroup (mode 0660, the default; so uid 65534 can connect, and its group makes it a
 * client by default), and clients that are real processes of uid 65534 (setpriv). Such a client
 * is served its Splices and may list and cancel its own; it is refused Status, Metrics, Trace,
 * Cancel of root's task and Restart (with or without a command: nothing is spawned, the pid and
 * the daemon's process tree stay as they are), and List leaves root's tasks out. Root is served
 * everything, and after an upgrade in place the new process applies the same roles to the
 * connections it was handed. A peer whose only link to the socket's group is a supplementary
 * group (SO_PEERGROUPS) is a client too.
 */
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class SplicerAuthorizationTest {
    private static final int NOBODY = 65534;
    private static final int NOGROUP = 65534;

    @TempDir
    Path dir;

    private static void assertDenied(String answer, String role, AsUser who) {
        assertTrue(answer.startsWith("ERROR PERMISSION_DENIED ") && answer.contains("needs the " + role + " role (control."
                + role + "s)"), answer + "\n" + who.transcript());
    }

    private static long task(String acceptedLine, AsUser who) {
        assertTrue(acceptedLine.startsWith("OK accepted task=") && acceptedLine.endsWith(" relayed=ping"),
                acceptedLine + "\n" + who.transcript());
        return Long.parseLong(acceptedLine.substring("OK accepted task=".length(), acceptedLine.indexOf(' ', 17)));
    }

    private static Response call(ControlClient c, Request.Builder r) throws Exception {
        try (Reply reply = c.call(r, List.of()).get(30, TimeUnit.SECONDS)) {
            return reply.response();
        }
    }

    private static Map<Long, String> listing(ControlClient root) throws Exception {
        return call(root, Request.newBuilder().setList(warren.control.v1.List.getDefaultInstance())).getListing()
                .getTasksList().stream().collect(Collectors.toMap(TaskInfo::getTask, t -> t.getPeerUid() + ":"
                        + t.getMetadata().toStringUtf8()));
    }

    @Test
    void anotherUidIsServedItsWorkAndRefusedTheRestBeforeAndAfterAnUpgrade() throws Exception {
        Files.setPosixFilePermissions(dir, PosixFilePermissions.fromString("rwx--x--x")); // uid 65534 reaches the socket
        Path cp = AsUser.classPathCopy(dir.resolve("cp"), NOBODY, NOGROUP);
        Path ctl = dir.resolve("splicer.sock");
        Path audit = dir.resolve("audit.jsonl");
        Path owned = dir.resolve("owned");
        Path conf = Files.writeString(dir.resolve("splicer.conf"), "audit.path = " + audit + "\ncontrol.gid = " + NOGROUP
                + "\n");
        Fd[] x = TestSockets.streamPair();
        Fd[] y = TestSockets.streamPair();
        try (DaemonProcess splicer = new DaemonProcess("splicer", Main.class, ctl, conf, dir.resolve("splicer.log"));
                ControlClient root = ControlClient.connect(ctl)) {
            CompletableFuture<Long> rootAccepted = new CompletableFuture<>();
            CompletableFuture<Reply> rootSplice = root.call(Request.newBuilder().setMetadata(ByteString.copyFromUtf8(
                    "root-secret")).setSplice(Splice.newBuilder().setFdA(0).setFdB(1)), List.of(x[0], y[0]),
                    a -> rootAccepted.complete(a.getAccepted().getTask()));
            long rootTask = rootAccepted.get(30, TimeUnit.SECONDS);
            long pid = splicer.pid();

            try (AsUser nobody = new AsUser(cp, ctl, NOBODY, NOGROUP, null)) {
                assertEquals("OK uid=" + NOBODY + " gid=" + NOGROUP + " pid=" + nobody.pid(), nobody.ask("whoami"));
                long nobody1 = task(nobody.ask("splice nobody-1"), nobody);
                long nobody2 = task(nobody.ask("splice nobody-2"), nobody);
                long nobody3 = task(nobody.ask("splice nobody-3"), nobody);
                assertEquals("OK listing task=" + nobody1 + " uid=" + NOBODY + " metadata=nobody-1;task=" + nobody2 + " uid="
                        + NOBODY + " metadata=nobody-2;task=" + nobody3 + " uid=" + NOBODY + " metadata=nobody-3",
                        nobody.ask("list"), "root's task is left out");
                assertDenied(nobody.ask("status"), "operator", nobody);
                assertDenied(nobody.ask("metrics"), "operator", nobody);
                assertDenied(nobody.ask("trace " + rootTask), "operator", nobody);
                String cancelRoot = nobody.ask("cancel-task " + rootTask);
                assertDenied(cancelRoot, "operator", nobody);
                assertTrue(cancelRoot.contains("cancel of another uid's task"), cancelRoot);
                assertDenied(nobody.ask("restart"), "admin", nobody);
                assertDenied(nobody.ask("restart-command " + owned), "admin", nobody);
                assertEquals("OK cancelled " + nobody1, nobody.ask("cancel-own nobody-1"), nobody.transcript());
                assertEquals("OK cancelled " + nobody3, nobody.ask("cancel-task " + nobody3), "its own task by number");

                // nothing was started, root's pair still relays
                assertEquals(pid, splicer.pid());
                assertEquals(0, ProcessHandle.of(pid).orElseThrow().descendants().count(), "the daemon started no process");
                assertFalse(Files.exists(owned), "no command ran");
                TestSockets.writeAll(x[1], "root".getBytes(StandardCharsets.UTF_8));
                assertEquals("root", new String(TestSockets.readExactly(y[1], 4), StandardCharsets.UTF_8));

                // root (an admin by default) sees every task with its metadata and gets Status
                Map<Long, String> all = listing(root);
                assertEquals("0:root-secret", all.get(rootTask));
                assertEquals(NOBODY + ":nobody-2", all.get(nobody2));
                Response st = call(root, Request.newBuilder().setStatus(Status.getDefaultInstance()));
                assertEquals(6L, st.getStatus().getCountersOrThrow("errors.PERMISSION_DENIED"));

                // upgrade in place by root: the new process holds the same roles over the handed-over connections
                assertEquals(0, splicer.upgrade(), "root may Restart");
                long newPid = splicer.pid();
                assertNotEquals(pid, newPid);
                assertDenied(nobody.ask("status"), "operator", nobody);
                assertDenied(nobody.ask("restart"), "admin", nobody);
                assertEquals("OK listing task=" + nobody2 + " uid=" + NOBODY + " metadata=nobody-2", nobody.ask("list"),
                        "the new process found the socket's group (nogroup: clients) and leaves root's task out");
                assertEquals(newPid, splicer.pid());
                assertEquals(0, ProcessHandle.of(newPid).orElseThrow().descendants().count());

                String rejected = Files.readAllLines(audit).stream().filter(l -> l.contains("\"event\":\"rejected\"")
                        && l.contains("\"request\":\"restart\"")).findFirst().orElse("none");
                assertTrue(rejected.contains("\"peer_pid\":" + nobody.pid() + ",\"peer_uid\":" + NOBODY + ",\"peer_gid\":"
                        + NOGROUP) && rejected.contains("\"code\":\"PERMISSION_DENIED\"")
                        && rejected.contains("\"role\":\"admin\""), rejected);

                // an operator (root) may cancel another uid's task
                assertEquals(nobody2, call(root, Request.newBuilder().setCancel(Cancel.newBuilder().setTask(nobody2)))
                        .getCancelled().getTask());
                assertEquals("OK listing ", nobody.ask("list"));
            }

            // a member of the socket's group by a supplementary group only (SO_PEERGROUPS) is a client
            try (AsUser member = new AsUser(cp, ctl, NOBODY, 4000, new int[] {NOGROUP})) {
                long own = task(member.ask("splice member-1"), member);
                assertEquals("OK listing task=" + own + " uid=" + NOBODY + " metadata=member-1", member.ask("list"),
                        member.transcript());
                assertDenied(member.ask("status"), "operator", member);
                assertEquals(NOBODY + ":member-1", listing(root).get(own));
            }
            Fd.closeAll(List.of(x[1], y[1]));
            try (Reply r = rootSplice.get(30, TimeUnit.SECONDS)) {
                assertEquals(Response.BodyCase.SPLICED, r.response().getBodyCase(), r.toString());
                r.takeFd(0).close();
                r.takeFd(1).close();
            }
        } finally {
            Fd.closeAll(List.of(x[0], y[0], x[1], y[1]));
            AsUser.remove(cp);
        }
    }

    @Test
    void aRestartCommandRunsOnlyWhenTheConfigAllowsIt() throws Exception {
        Path ran = dir.resolve("ran");
        Request.Builder restart = Request.newBuilder().setRestart(warren.control.v1.Restart.newBuilder()
                .addCommand("/bin/sh").addCommand("-c").addCommand("echo ran > " + ran + "; exit 3").setTimeoutMs(5000));
        for (boolean allowed : new boolean[] {false, true}) {
            try (warren.daemon.testing.RunningDaemon d = new warren.daemon.testing.RunningDaemon(Main.spec(),
                    dir.resolve("s" + allowed + ".sock"), "audit.path = " + dir.resolve("audit.jsonl")
                            + "\nupgrade.allow_command = " + allowed + "\n");
                    ControlClient root = ControlClient.connect(d.control)) {
                Response r = call(root, restart.clone());
                if (allowed) {
                    assertEquals(warren.control.v1.Error.Code.INTERNAL, r.getError().getCode(), r.toString());
                    assertTrue(r.getError().getMessage().contains("exited with status 3"), r.toString());
                    assertEquals("ran\n", Files.readString(ran), "the command ran");
                } else {
                    assertEquals(warren.control.v1.Error.Code.PERMISSION_DENIED, r.getError().getCode(), r.toString());
                    assertTrue(r.getError().getMessage().contains("upgrade.allow_command = false"), r.toString());
                    assertFalse(Files.exists(ran), "nothing ran");
                }
            }
        }
    }
}
