package warren.daemon.control;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Cancel;
import warren.control.v1.Error;
import warren.control.v1.Limits;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Restart;
import warren.control.v1.Splice;
import warren.control.v1.Status;
import warren.daemon.Daemon;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.config.Config;
import warren.daemon.config.ConfigException;
import warren.daemon.testing.HoldingSpliceHandler;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.FdCount;
import warren.fdpass.PeerCredentials;
import warren.fdpass.SeqpacketListener;
import warren.fdpass.libc.Native;

/**
 * The role check of a real control server over real sockets (SO_PEERCRED of this JVM, uid 0),
 * given roles in which this test's uid is only a client or has no role at all: refused requests
 * get PERMISSION_DENIED naming the role, an audit line and a counter, run nothing (no process is
 * started) and close their fds; what a client may do is served. Also: a control socket any local
 * user could connect to is refused at start unless the config says so.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ControlAuthorizationTest {
    @TempDir
    Path dir;
    private final List<AutoCloseable> cleanup = new ArrayList<>();

    @AfterEach
    void tearDown() throws Exception {
        for (int i = cleanup.size() - 1; i >= 0; i--) {
            cleanup.get(i).close();
        }
    }

    private RunningDaemon daemon(String config) throws Exception {
        RunningDaemon d = new RunningDaemon(HoldingSpliceHandler.spec(), dir.resolve("ctl.sock"),
                "audit.path = " + dir.resolve("audit.jsonl") + "\n" + config);
        cleanup.add(d);
        return d;
    }

    /**
     * Gives the running server exactly these roles, without the always-admins (uid 0 and the
     * daemon's uid, i.e. this JVM): so this test's connections are the client or no-role peer.
     */
    private static void restrict(RunningDaemon d, String clients, String operators, String admins, boolean allowCommand)
            throws Exception {
        d.daemon.loop().call(() -> {
            d.daemon.server().authorize(Authorizer.exactly(Principals.parse(clients), Principals.parse(operators),
                    Principals.parse(admins), allowCommand));
            return null;
        }, 5000);
    }

    private ControlClient client(RunningDaemon d) throws Exception {
        ControlClient c = ControlClient.connect(d.control);
        cleanup.add(c);
        return c;
    }

    private static Response call(ControlClient c, Request.Builder r, List<Fd> fds) throws Exception {
        try (Reply reply = c.call(r, fds).get(10, TimeUnit.SECONDS)) {
            return reply.response();
        }
    }

    private static Request.Builder heldSplice(long id) {
        return Request.newBuilder().setId(id).setMetadata(ByteString.copyFromUtf8("secret-" + id))
                .setSplice(Splice.newBuilder().setFdA(0).setFdB(1).setLimits(Limits.newBuilder().setLifetimeMs(60_000)));
    }

    private static Fd[] pairs() throws Exception {
        int[] x = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
        int[] y = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
        return new Fd[] {Fd.adopt(x[0]), Fd.adopt(y[0]), Fd.adopt(x[1]), Fd.adopt(y[1])};
    }

    private static void assertDenied(Response r, String role) {
        assertEquals(Error.Code.PERMISSION_DENIED, r.getError().getCode(), r.toString());
        assertTrue(r.getError().getMessage().contains("needs the " + role + " role (control." + role + "s)"),
                r.getError().getMessage());
    }

    @Test
    void aClientIsServedItsWorkAndRefusedEverythingElseWithNothingRun() throws Exception {
        RunningDaemon d = daemon("");
        restrict(d, "uid:0", "uid:4243", "uid:4242", true);
        assertEquals(Authorizer.Role.CLIENT, d.daemon.server().authorizer().roleOf(new PeerCredentials(1, 0, 0)));
        boolean[] restartRan = {false};
        d.daemon.loop().call(() -> {
            d.daemon.server().onRestart(call -> {
                restartRan[0] = true;
                call.fail(Error.Code.INTERNAL, "must not be reached");
            });
            return null;
        }, 5000);
        ControlClient c = client(d);
        Fd[] p = pairs();
        cleanup.add(() -> Fd.closeAll(List.of(p)));
        long[] task = {0};
        var held = c.call(heldSplice(1), List.of(p[0], p[1]), a -> task[0] = a.getAccepted().getTask());
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (task[0] == 0 && System.nanoTime() < deadline) {
            Thread.sleep(5);
        }
        assertTrue(task[0] != 0, "the Splice was accepted");
        long children = ProcessHandle.current().children().count();

        assertDenied(call(c, Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of()), "operator");
        assertDenied(call(c, Request.newBuilder().setMetrics(warren.control.v1.Metrics.getDefaultInstance()), List.of()),
                "operator");
        assertDenied(call(c, Request.newBuilder().setTrace(warren.control.v1.Trace.newBuilder().setTask(task[0])),
                List.of()), "operator");
        assertDenied(call(c, Request.newBuilder().setRestart(Restart.getDefaultInstance()), List.of()), "admin");
        Path owned = dir.resolve("owned");
        assertDenied(call(c, Request.newBuilder().setRestart(Restart.newBuilder().addCommand("/bin/sh").addCommand("-c")
                .addCommand("id > " + owned)), List.of()), "admin");
        // the restarter of a user who is not an operator: its Status is refused, it says so (exit 1, not 2)
        assertEquals(1, warren.daemon.cli.UpgradeMain.run(new String[] {"testd", "--control", d.control.toString()}));
        assertFalse(restartRan[0], "the restart hook never ran");
        assertFalse(Files.exists(owned), "no command ran");
        assertEquals(children, ProcessHandle.current().children().count(), "no process was started");

        // List: its own uid's tasks, with metadata; Cancel of its own task
        Response list = call(c, Request.newBuilder().setList(warren.control.v1.List.getDefaultInstance()), List.of());
        assertEquals(1, list.getListing().getTasksCount(), list.toString());
        assertEquals("secret-1", list.getListing().getTasks(0).getMetadata().toStringUtf8());
        Response cancelled = call(c, Request.newBuilder().setCancel(Cancel.newBuilder().setTask(task[0])), List.of());
        assertEquals(task[0], cancelled.getCancelled().getTask(), cancelled.toString());
        try (Reply r = held.get(10, TimeUnit.SECONDS)) {
            assertEquals(Response.BodyCase.SPLICED, r.response().getBodyCase());
            r.takeFd(0).close();
            r.takeFd(1).close();
        }
        assertEquals(6, d.daemon.counters().snapshot().get("errors.PERMISSION_DENIED"));
        String audit = Files.readString(dir.resolve("audit.jsonl"));
        assertTrue(audit.contains("\"event\":\"rejected\"") && audit.contains("\"peer_pid\":" + ProcessHandle.current().pid())
                && audit.contains("\"peer_uid\":0,\"peer_gid\":0") && audit.contains("\"code\":\"PERMISSION_DENIED\"")
                && audit.contains("\"request\":\"restart\",\"role\":\"admin\"")
                && audit.contains("\"request\":\"status\",\"role\":\"operator\""), audit);
    }

    @Test
    void aPeerWithNoRoleGetsNothingAndTheFdsItSentAreClosed() throws Exception {
        RunningDaemon d = daemon("");
        restrict(d, "uid:4244", "", "uid:4242", false);
        ControlClient c = client(d);
        call(c, Request.newBuilder().setList(warren.control.v1.List.getDefaultInstance()), List.of()); // warm-up
        int before = FdCount.stable();
        for (int i = 0; i < 20; i++) {
            Fd[] p = pairs();
            try {
                Response r = call(c, heldSplice(10 + i), List.of(p[0], p[1]));
                assertDenied(r, "client");
                assertTrue(r.getError().getMessage().endsWith("this peer has no role"), r.toString());
                assertEquals("secret-" + (10 + i), r.getMetadata().toStringUtf8(), "id and metadata echoed");
            } finally {
                Fd.closeAll(List.of(p));
            }
        }
        assertDenied(call(c, Request.newBuilder().setList(warren.control.v1.List.getDefaultInstance()), List.of()),
                "client");
        assertEquals(before, FdCount.awaitCount(before), FdCount::dump);
        assertEquals(0, d.daemon.tasks().total(), "no task was started");
    }

    @Test
    void theDefaultsServeRootEverything() throws Exception {
        RunningDaemon d = daemon("");
        ControlClient c = client(d);
        assertEquals(Authorizer.Role.ADMIN, d.daemon.server().authorizer().roleOf(new PeerCredentials(1, 0, 0)));
        assertEquals("testd", call(c, Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                .getStatus().getDaemon());
        // the default clients are the socket file's group: a peer of another uid in that group is one
        int gid = (Integer) Files.getAttribute(d.control, "unix:gid", LinkOption.NOFOLLOW_LINKS);
        assertEquals(Authorizer.Role.CLIENT, d.daemon.server().authorizer().roleOf(new PeerCredentials(1, 4000, gid)));
        assertEquals(Authorizer.Role.CLIENT,
                d.daemon.server().authorizer().roleOf(new PeerCredentials(1, 4000, 4000, new int[] {gid})));
        assertEquals(Authorizer.Role.NONE, d.daemon.server().authorizer().roleOf(new PeerCredentials(1, 4000, gid + 1)));
        // a Restart with a command is refused even for root while upgrade.allow_command = false
        Response r = call(c, Request.newBuilder().setRestart(Restart.newBuilder().addCommand("/bin/true")), List.of());
        assertEquals(Error.Code.PERMISSION_DENIED, r.getError().getCode());
        assertTrue(r.getError().getMessage().contains("upgrade.allow_command = false"), r.toString());
    }

    @Test
    void aSocketAnyLocalUserMayConnectToIsRefusedUnlessTheConfigSaysSo() throws Exception {
        var keys = Daemon.configKeys(HoldingSpliceHandler.spec());
        Path ctl = dir.resolve("open.sock");
        ConfigException e = assertThrows(ConfigException.class,
                () -> Daemon.start(HoldingSpliceHandler.spec(), ctl, Config.parse("control.mode = 0666", keys, "t")));
        assertEquals("control.mode = 0666 lets any local user connect; refusing (set control.allow_world_writable ="
                + " true to mean it)", e.getMessage());
        assertFalse(Files.exists(ctl), "nothing was bound");
        assertEquals(2, Daemon.main(HoldingSpliceHandler.spec(), new String[] {"--control", ctl.toString(), "--config",
                Files.writeString(dir.resolve("open.conf"), "control.mode = 0662\n").toString()}));
        RunningDaemon d = daemon("control.mode = 0666\ncontrol.allow_world_writable = true");
        assertEquals(0666, (Integer) Files.getAttribute(d.control, "unix:mode", LinkOption.NOFOLLOW_LINKS) & 0777);

        // an inherited socket (socket activation): its file is looked up by getsockname
        Path inh = dir.resolve("inherited.sock");
        for (int mode : new int[] {0666, 0660}) {
            Fd fd = Fd.adopt(Native.socket(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC, 0));
            Native.bind(fd.get(), Native.sockaddrUn(inh.toString()), inh.toString());
            Native.chmod(inh.toString(), mode);
            Native.chown(inh.toString(), -1, 4321);
            Native.listen(fd.get(), 8);
            SeqpacketListener l = SeqpacketListener.adopt(fd);
            try {
                if (mode == 0666) {
                    e = assertThrows(ConfigException.class, () -> Daemon.start(HoldingSpliceHandler.spec(), null, l,
                            Config.defaults(keys)));
                    assertEquals("the control socket " + inh + " (mode 0666, gid 4321) lets any local user connect;"
                            + " refusing (set control.allow_world_writable = true to mean it)", e.getMessage());
                } else {
                    Daemon started = Daemon.start(HoldingSpliceHandler.spec(), null, l, Config.defaults(keys));
                    try {
                        assertEquals(Authorizer.Role.CLIENT,
                                started.server().authorizer().roleOf(new PeerCredentials(1, 4000, 4000, new int[] {4321})),
                                "the inherited socket's group are clients");
                    } finally {
                        started.shutdown();
                        started.run();
                    }
                }
            } finally {
                l.close();
                Files.deleteIfExists(inh);
            }
        }
    }
}
