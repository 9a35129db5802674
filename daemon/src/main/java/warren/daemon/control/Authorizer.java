package warren.daemon.control;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFileAttributes;
import warren.control.v1.Request;
import warren.fdpass.PeerCredentials;
import warren.fdpass.SeqpacketListener;
import warren.fdpass.libc.Native;

/**
 * Who may ask what on a control socket: the one place where a request's role is decided, by
 * {@link ControlServer} before any handler or hook runs. A peer's role comes from the credentials
 * the kernel recorded when it connected (SO_PEERCRED uid and gid, SO_PEERGROUPS supplementary
 * groups), matched once per connection against three config keys. Roles are cumulative: an admin
 * is an operator, an operator is a client.
 *
 * <pre>
 * request                        role needed
 * -----------------------------  ------------------------------------------------------------
 * Splice, Upgrade, Downgrade,    client
 *   Egress
 * Cancel                         client if the target task's peer uid is the requester's (a
 *                                target_id names a request of its own connection, so it always
 *                                is) or no such task exists (the answer is NOT_FOUND);
 *                                operator for another uid's task
 * List                           client; below operator only the requester's own uid's tasks
 *                                are listed (others' are left out, metadata and all)
 * Status, Metrics, Trace         operator
 * Restart                        admin; a Restart with a command also needs
 *                                upgrade.allow_command = true (else refused, whoever asks)
 *
 * role      config key          empty (the default) means
 * --------  ------------------  ---------------------------------------------------------------
 * admin     control.admins      uid 0 and the daemon's own uid (always admins; the key adds more)
 * operator  control.operators   admins only
 * client    control.clients     members of the control socket's group (primary or supplementary):
 *                               the gid its file has after bind, or an inherited socket's file
 *                               (getsockname); nobody for an abstract or unnamed socket
 * </pre>
 * uid 0 and the daemon's own uid stay admins whatever control.admins says: both can send the
 * daemon SIGHUP, which is the same upgrade, so refusing them Restart would protect nothing, and
 * the systemd units' ExecReload= runs the restarter as the daemon's own user. (A Restart with a
 * command is still refused to them without upgrade.allow_command.)
 *
 * <p>A refusal is {@code Error{PERMISSION_DENIED}} naming the role and the key that grants it, an
 * audit {@code rejected} line and the counter {@code errors.PERMISSION_DENIED}; nothing of the
 * request runs and its fds are closed.
 */
public final class Authorizer {
    /** Roles in increasing power; each includes the ones before it. */
    public enum Role {
        NONE(""), CLIENT("control.clients"), OPERATOR("control.operators"), ADMIN("control.admins");

        private final String key;

        Role(String key) {
            this.key = key;
        }

        /** The config key that grants this role. */
        public String key() {
            return key;
        }

        /** "client", "operator", "admin", "none". */
        public String word() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }

        public boolean atLeast(Role r) {
            return compareTo(r) >= 0;
        }
    }

    /** What kind of name the control socket has, and so who can connect to it at all. */
    public enum SocketKind { FILE, ABSTRACT, UNNAMED }

    /**
     * The control socket as the filesystem shows it: its name, and for a file its permission bits
     * and group. Read once at start.
     */
    public record SocketFile(String name, SocketKind kind, int mode, int gid) {
        /** Unknown: no name to look at (a test server on a socketpair, say). */
        public static final SocketFile UNKNOWN = new SocketFile("", SocketKind.UNNAMED, 0, -1);

        /**
         * The listener's file: the path it bound, else {@code knownPath} (a predecessor's, handed
         * over; a listener bound under a temporary name and renamed keeps that name for
         * getsockname), else its getsockname(2) name (systemd binds directly at the unit's path).
         */
        public static SocketFile of(SeqpacketListener l, String knownPath) throws IOException {
            String name = l.path() != null ? l.path().toString()
                    : knownPath != null && !knownPath.isEmpty() ? knownPath : l.boundName();
            if (name.isEmpty()) {
                return new SocketFile(name, SocketKind.UNNAMED, 0, -1);
            }
            if (name.startsWith("@")) {
                return new SocketFile(name, SocketKind.ABSTRACT, 0, -1);
            }
            PosixFileAttributes a;
            try {
                a = Files.readAttributes(Path.of(name), PosixFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
            } catch (NoSuchFileException e) {
                return new SocketFile(name, SocketKind.UNNAMED, 0, -1); // unlinked: nobody can connect by name
            }
            if (!a.isOther()) {
                throw new IOException(name + " is not a socket");
            }
            Path p = Path.of(name);
            int mode = (Integer) Files.getAttribute(p, "unix:mode", LinkOption.NOFOLLOW_LINKS) & 07777;
            int gid = (Integer) Files.getAttribute(p, "unix:gid", LinkOption.NOFOLLOW_LINKS);
            return new SocketFile(name, SocketKind.FILE, mode, gid);
        }

        /**
         * True if any local user may connect: the file is writable by others (connect(2) to a unix
         * socket needs write permission on it), or the name is abstract (no permission at all).
         */
        public boolean othersMayConnect() {
            return kind == SocketKind.ABSTRACT || (kind == SocketKind.FILE && (mode & 0002) != 0);
        }

        /** E.g. "/run/warren/splicer.sock (mode 0660, gid 120)". */
        public String describe() {
            switch (kind) {
                case FILE: return name + " (mode " + String.format("0%03o", mode) + ", gid " + gid + ")";
                case ABSTRACT: return "the abstract socket " + name;
                default: return name.isEmpty() ? "an unnamed socket" : name + " (no longer in the filesystem)";
            }
        }
    }

    private final Principals clients;
    private final Principals operators;
    private final Principals admins;
    private final boolean allowCommand;
    private final SocketFile socket;

    private Authorizer(Principals clients, Principals operators, Principals admins, boolean allowCommand,
            SocketFile socket) {
        this.clients = clients;
        this.operators = operators;
        this.admins = admins;
        this.allowCommand = allowCommand;
        this.socket = socket;
    }

    /**
     * The configured roles with the defaults applied (see the table above): uid 0 and the
     * daemon's own uid added to the admins, the socket's group for empty clients.
     * {@code allowCommand} is upgrade.allow_command.
     */
    public static Authorizer of(Principals clients, Principals operators, Principals admins, boolean allowCommand,
            SocketFile socket) {
        Principals c = !clients.isEmpty() ? clients
                : socket.kind() == SocketKind.FILE ? Principals.of(new int[0], new int[] {socket.gid()}) : Principals.NONE;
        return new Authorizer(c, operators, defaultAdmins().plus(admins), allowCommand, socket);
    }

    /** Exactly these principals, no defaults (tests that need this JVM's uid 0 to be a mere client). */
    static Authorizer exactly(Principals clients, Principals operators, Principals admins, boolean allowCommand) {
        return new Authorizer(clients, operators, admins, allowCommand, SocketFile.UNKNOWN);
    }

    /** Admins only (the defaults), no command: what a server gets before it is told its config. */
    public static Authorizer ownerOnly() {
        return new Authorizer(Principals.NONE, Principals.NONE, defaultAdmins(), false, SocketFile.UNKNOWN);
    }

    private static Principals defaultAdmins() {
        int own = Native.getuid();
        return Principals.of(own == 0 ? new int[] {0} : new int[] {0, own}, new int[0]);
    }

    /** The role of a peer: the highest of the sets it is in. */
    public Role roleOf(PeerCredentials p) {
        if (admins.matches(p)) {
            return Role.ADMIN;
        }
        if (operators.matches(p)) {
            return Role.OPERATOR;
        }
        return clients.matches(p) ? Role.CLIENT : Role.NONE;
    }

    /**
     * The role a request body needs (the table above). {@code ownTarget}: for Cancel, whether the
     * target task's peer uid is the requester's (or there is no such task).
     */
    public static Role needed(Request.BodyCase body, boolean ownTarget) {
        // no default: a request kind added to the contract does not compile until it has a row here
        return switch (body) {
            case SPLICE, UPGRADE, DOWNGRADE, EGRESS, LIST -> Role.CLIENT;
            case CANCEL -> ownTarget ? Role.CLIENT : Role.OPERATOR;
            case STATUS, METRICS, TRACE -> Role.OPERATOR;
            case RESTART -> Role.ADMIN;
            // never here: the codec unwraps the one and answers UNKNOWN_REQUEST to the other
            case SPILLED, BODY_NOT_SET -> Role.CLIENT;
        };
    }

    /**
     * Null if a peer with role {@code have} may make {@code req}; otherwise why not, in one line
     * naming the role needed and the config key that grants it.
     */
    public String refusal(Role have, Request req, boolean ownTarget) {
        Request.BodyCase body = req.getBodyCase();
        Role need = needed(body, ownTarget);
        if (!have.atLeast(need)) {
            return body.name().toLowerCase(java.util.Locale.ROOT) + (body == Request.BodyCase.CANCEL && !ownTarget ? " of another uid's task" : "")
                    + " needs the " + need.word() + " role (" + need.key() + "); this peer has "
                    + (have == Role.NONE ? "no role" : "the " + have.word() + " role");
        }
        if (body == Request.BodyCase.RESTART && req.getRestart().getCommandCount() > 0 && !allowCommand) {
            return "restart with a command is refused: upgrade.allow_command = false on this daemon (a Restart"
                    + " without a command starts the daemon's own executable and arguments)";
        }
        return null;
    }

    /** True if a peer with this role sees every task in List, with metadata. */
    public static boolean seesAllTasks(Role r) {
        return r.atLeast(Role.OPERATOR);
    }

    public boolean allowsCommand() {
        return allowCommand;
    }

    public SocketFile socket() {
        return socket;
    }

    /** One line for the log at start. */
    public String describe() {
        return "control socket " + socket.describe() + "; admins: " + admins + "; operators: "
                + (operators.isEmpty() ? "(admins only)" : operators) + "; clients: "
                + (clients.isEmpty() ? "(operators and admins only)" : clients)
                + (allowCommand ? "; Restart.command allowed" : "");
    }
}
