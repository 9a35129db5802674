package warren.daemon.control;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;
import warren.control.v1.Cancel;
import warren.control.v1.Request;
import warren.control.v1.Restart;
import warren.daemon.Daemon;
import warren.daemon.config.Config;
import warren.daemon.config.ConfigException;
import warren.daemon.control.Authorizer.Role;
import warren.daemon.control.Authorizer.SocketFile;
import warren.daemon.control.Authorizer.SocketKind;
import warren.daemon.testing.HoldingSpliceHandler;
import warren.fdpass.PeerCredentials;
import warren.fdpass.libc.Native;

/** The role table, the defaults and the config values of {@link Authorizer}, without sockets. */
class AuthorizerTest {
    private static final SocketFile SOCKET = new SocketFile("/run/x.sock", SocketKind.FILE, 0660, 120);

    private static PeerCredentials peer(int uid, int gid, int... groups) {
        return new PeerCredentials(1234, uid, gid, groups);
    }

    private static Request req(Request.BodyCase body) {
        Request.Builder b = Request.newBuilder().setId(1);
        switch (body) {
            case SPLICE: b.setSplice(warren.control.v1.Splice.getDefaultInstance()); break;
            case UPGRADE: b.setUpgrade(warren.control.v1.Upgrade.getDefaultInstance()); break;
            case DOWNGRADE: b.setDowngrade(warren.control.v1.Downgrade.getDefaultInstance()); break;
            case EGRESS: b.setEgress(warren.control.v1.Egress.getDefaultInstance()); break;
            case CANCEL: b.setCancel(Cancel.newBuilder().setTask(7)); break;
            case LIST: b.setList(warren.control.v1.List.getDefaultInstance()); break;
            case STATUS: b.setStatus(warren.control.v1.Status.getDefaultInstance()); break;
            case RESTART: b.setRestart(Restart.getDefaultInstance()); break;
            case METRICS: b.setMetrics(warren.control.v1.Metrics.getDefaultInstance()); break;
            case TRACE: b.setTrace(warren.control.v1.Trace.getDefaultInstance()); break;
            default: throw new IllegalArgumentException(body.name());
        }
        return b.build();
    }

    @Test
    void theRoleTable() {
        for (Request.BodyCase b : List.of(Request.BodyCase.SPLICE, Request.BodyCase.UPGRADE,
                Request.BodyCase.DOWNGRADE, Request.BodyCase.EGRESS, Request.BodyCase.LIST)) {
            assertEquals(Role.CLIENT, Authorizer.needed(b, true), b.name());
        }
        assertEquals(Role.CLIENT, Authorizer.needed(Request.BodyCase.CANCEL, true));
        assertEquals(Role.OPERATOR, Authorizer.needed(Request.BodyCase.CANCEL, false));
        for (Request.BodyCase b : List.of(Request.BodyCase.STATUS, Request.BodyCase.METRICS, Request.BodyCase.TRACE)) {
            assertEquals(Role.OPERATOR, Authorizer.needed(b, true), b.name());
        }
        assertEquals(Role.ADMIN, Authorizer.needed(Request.BodyCase.RESTART, true));
        // every request kind of the contract has a row (the switch has no default), none needs NONE
        for (Request.BodyCase b : Request.BodyCase.values()) {
            assertTrue(Authorizer.needed(b, false).atLeast(Role.CLIENT), b.name());
        }
    }

    @Test
    void rolesAreCumulativeAndEachRefusalNamesTheRoleAndItsKey() {
        Authorizer a = Authorizer.of(Principals.parse("uid:1000"), Principals.parse("uid:2000"),
                Principals.parse("uid:3000"), false, SOCKET);
        assertEquals(Role.CLIENT, a.roleOf(peer(1000, 1000)));
        assertEquals(Role.OPERATOR, a.roleOf(peer(2000, 2000)));
        assertEquals(Role.ADMIN, a.roleOf(peer(3000, 3000)));
        assertEquals(Role.NONE, a.roleOf(peer(4000, 4000)));
        assertEquals(Role.ADMIN, a.roleOf(peer(0, 0)), "uid 0 stays an admin when control.admins names others");
        assertEquals(Role.ADMIN, a.roleOf(peer(Native.getuid(), 77)), "so does the daemon's own uid");
        assertTrue(a.describe().contains("admins: uid:0") && a.describe().contains("uid:3000"), a.describe());
        for (Request.BodyCase b : List.of(Request.BodyCase.SPLICE, Request.BodyCase.LIST, Request.BodyCase.STATUS,
                Request.BodyCase.METRICS, Request.BodyCase.TRACE, Request.BodyCase.RESTART)) {
            Role need = Authorizer.needed(b, true);
            for (Role have : Role.values()) {
                String why = a.refusal(have, req(b), true);
                assertEquals(have.atLeast(need), why == null, b + " by " + have + ": " + why);
                if (why != null) {
                    assertTrue(why.contains("needs the " + need.word() + " role (" + need.key() + ")"), why);
                }
            }
        }
        assertNull(a.refusal(Role.CLIENT, req(Request.BodyCase.CANCEL), true), "cancel of its own uid's task");
        assertEquals("cancel of another uid's task needs the operator role (control.operators); this peer has the"
                + " client role", a.refusal(Role.CLIENT, req(Request.BodyCase.CANCEL), false));
        assertNull(a.refusal(Role.OPERATOR, req(Request.BodyCase.CANCEL), false));
        assertEquals("status needs the operator role (control.operators); this peer has no role",
                a.refusal(Role.NONE, req(Request.BodyCase.STATUS), true));
        assertFalse(Authorizer.seesAllTasks(Role.CLIENT));
        assertTrue(Authorizer.seesAllTasks(Role.OPERATOR) && Authorizer.seesAllTasks(Role.ADMIN));
    }

    @Test
    void aRestartCommandNeedsUpgradeAllowCommandEvenForAnAdmin() {
        Request withCommand = Request.newBuilder().setRestart(Restart.newBuilder().addCommand("/bin/sh")
                .addCommand("-c").addCommand("id > /tmp/owned")).build();
        Authorizer no = Authorizer.of(Principals.NONE, Principals.NONE, Principals.NONE, false, SOCKET);
        String why = no.refusal(Role.ADMIN, withCommand, true);
        assertTrue(why != null && why.contains("upgrade.allow_command = false"), why);
        assertNull(no.refusal(Role.ADMIN, req(Request.BodyCase.RESTART), true), "without a command");
        Authorizer yes = Authorizer.of(Principals.NONE, Principals.NONE, Principals.NONE, true, SOCKET);
        assertNull(yes.refusal(Role.ADMIN, withCommand, true));
        assertTrue(yes.refusal(Role.OPERATOR, withCommand, true).contains("needs the admin role"));
    }

    @Test
    void defaultsAreRootAndTheDaemonsUidAsAdminsAndTheSocketsGroupAsClients() {
        Authorizer a = Authorizer.of(Principals.NONE, Principals.NONE, Principals.NONE, false, SOCKET);
        assertEquals(Role.ADMIN, a.roleOf(peer(0, 0)));
        assertEquals(Role.ADMIN, a.roleOf(peer(Native.getuid(), 999)));
        assertEquals(Role.CLIENT, a.roleOf(peer(5000, 120)), "primary gid = the socket's group");
        assertEquals(Role.CLIENT, a.roleOf(peer(5000, 5000, 17, 120)), "a supplementary group");
        assertEquals(Role.NONE, a.roleOf(peer(5000, 5000, 17)));
        Authorizer abs = Authorizer.of(Principals.NONE, Principals.NONE, Principals.NONE, false,
                new SocketFile("@warren", SocketKind.ABSTRACT, 0, -1));
        assertEquals(Role.NONE, abs.roleOf(peer(5000, 120)), "an abstract socket has no group: no default clients");
        assertTrue(abs.socket().othersMayConnect());
        assertFalse(SOCKET.othersMayConnect());
        assertTrue(new SocketFile("/x", SocketKind.FILE, 0662, 0).othersMayConnect());
        assertFalse(new SocketFile("/x", SocketKind.FILE, 0664, 0).othersMayConnect(), "o+r does not let anyone connect");
        Authorizer ops = Authorizer.of(Principals.NONE, Principals.parse("gid:300"), Principals.NONE, false, SOCKET);
        assertEquals(Role.OPERATOR, ops.roleOf(peer(5000, 5000, 300)));
        assertEquals(Role.CLIENT, ops.roleOf(peer(5000, 120)));
    }

    @Test
    void principalsParseResolveAndPrintBack() {
        Principals p = Principals.parse(" uid:1000 , gid:20,user:root, group:root,GID:4294967294");
        assertEquals("uid:1000, gid:20, user:root, group:root, gid:4294967294", p.toString());
        assertEquals(List.of(1000, 0), java.util.Arrays.stream(p.uids()).boxed().toList());
        assertEquals(List.of(20, 0, -2), java.util.Arrays.stream(p.gids()).boxed().toList());
        assertTrue(p.matches(peer(1000, 1)) && p.matches(peer(5, 5, 20)) && !p.matches(peer(5, 5, 21)));
        assertEquals(p, Principals.parse(p.toString()));
        assertTrue(Principals.parse("  ").isEmpty());
        assertEquals("unknown user 'no-such-user-warren'",
                assertThrows(IllegalArgumentException.class, () -> Principals.parse("user:no-such-user-warren"))
                        .getMessage());
        assertEquals("unknown group 'no-such-group-warren'",
                assertThrows(IllegalArgumentException.class, () -> Principals.parse("uid:1, group:no-such-group-warren"))
                        .getMessage());
        assertEquals("entry 'uid:x': 'x' is not a number",
                assertThrows(IllegalArgumentException.class, () -> Principals.parse("uid:x")).getMessage());
        assertEquals("entry 'uid:-1': -1 is not a valid id",
                assertThrows(IllegalArgumentException.class, () -> Principals.parse("uid:-1")).getMessage());
        assertEquals("entry 'alice' is not uid:N, gid:N, user:NAME or group:NAME",
                assertThrows(IllegalArgumentException.class, () -> Principals.parse("alice")).getMessage());
        assertEquals("entry '' is not uid:N, gid:N, user:NAME or group:NAME",
                assertThrows(IllegalArgumentException.class, () -> Principals.parse("uid:1,")).getMessage());
        assertEquals("entry 'login:bob': 'login' is not one of uid, gid, user, group",
                assertThrows(IllegalArgumentException.class, () -> Principals.parse("login:bob")).getMessage());
    }

    @Test
    void anUnknownNameInTheConfigIsOneLineNamingTheKey() {
        var keys = Daemon.configKeys(HoldingSpliceHandler.spec());
        assertEquals("t line 2: bad value 'user:root, group:no-such-group-warren' for control.operators: unknown group"
                + " 'no-such-group-warren'", assertThrows(ConfigException.class, () -> Config.parse(
                        "control.admins = uid:0\ncontrol.operators = user:root, group:no-such-group-warren", keys, "t"))
                        .getMessage());
    }

    @Test
    void printedConfigReadsBackUnchangedAndTheModeIsOctal() throws Exception {
        var keys = Daemon.configKeys(HoldingSpliceHandler.spec());
        Config defaults = Config.defaults(keys);
        String printed = defaults.describe();
        assertTrue(printed.contains("\ncontrol.mode = 0660\n"), printed);
        assertEquals(printed, Config.parse(printed, keys, "printed").describe());
        Config set = Config.parse("control.mode = 0600\ncontrol.admins = user:root, uid:4242\ncontrol.clients = gid:120\n"
                + "upgrade.allow_command = true\ncontrol.allow_world_writable = yes\nshutdown.drain_timeout = 2s\n",
                keys, "t");
        String again = set.describe();
        Config reread = Config.parse(again, keys, "printed");
        assertEquals(again, reread.describe());
        assertEquals(0600, reread.get(Daemon.CONTROL_MODE));
        assertEquals(set.get(Daemon.CONTROL_ADMINS), reread.get(Daemon.CONTROL_ADMINS));
        assertTrue(reread.get(Daemon.UPGRADE_ALLOW_COMMAND) && reread.get(Daemon.ALLOW_WORLD_WRITABLE));
        assertEquals(2000L, reread.get(Daemon.DRAIN_TIMEOUT));
        for (var k : keys) {
            assertEquals(set.get(k), reread.get(k), k.name());
        }
    }
}
