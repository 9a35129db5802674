package warren.daemon.cli;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Restart;
import warren.control.v1.Status;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;

/**
 * The restarter: {@code ./warren upgrade DAEMON --control PATH [--timeout MS] [-- COMMAND...]}.
 * Asks the running daemon to hand everything to a new process (its own command line, or COMMAND)
 * and prints each phase as it happens, then what happened; exit 0 only if the new process took
 * over, 1 if not (with the reason), 2 for bad usage. {@code ./warren upgrade} is the cli module's
 * {@code UpgradeCommand}, which parses the same options and calls {@link #restart}.
 */
public final class UpgradeMain {
    private UpgradeMain() {}

    static final String USAGE = "usage: ./warren upgrade DAEMON --control PATH [--timeout MS] [-- COMMAND...]\n\n"
            + "Upgrades a running daemon in place: it starts a new process (its own command line, so the\n"
            + "current build, or COMMAND), hands it every connection, pair, flow and fd, and exits once the\n"
            + "new one has taken over. Nothing is lost; if anything fails first, the old process carries on.\n\n"
            + "  DAEMON          splicer, bumblebee or fish (checked against the daemon's Status)\n"
            + "  --control PATH  the daemon's control socket\n"
            + "  --timeout MS    limit per handoff step (default: 30000 to start and connect, 10000 for each later step)\n"
            + "  -- COMMAND...   the new process's command line instead of the running one's (refused unless\n"
            + "                  the daemon's config has upgrade.allow_command = true)\n\n"
            + "Exit status: 0 taken over, 1 not (the old process still serves), 2 bad usage.\n";

    public static void main(String[] args) {
        System.exit(run(args));
    }

    public static int run(String[] args) {
        String daemon = null;
        Path control = null;
        int timeout = 0;
        List<String> command = new ArrayList<>();
        try {
            for (int i = 0; i < args.length; i++) {
                String a = args[i];
                if (a.equals("--help") || a.equals("-h")) {
                    System.out.print(USAGE);
                    return 0;
                } else if (a.equals("--")) {
                    for (i++; i < args.length; i++) {
                        command.add(args[i]);
                    }
                } else if (a.equals("--control") || a.equals("--timeout")) {
                    if (i + 1 >= args.length || args[i + 1].isEmpty()) {
                        throw new UsageException(a + " needs a value");
                    }
                    String v = args[++i];
                    if (a.equals("--control")) {
                        control = Path.of(v);
                    } else {
                        try {
                            timeout = Integer.parseInt(v);
                        } catch (NumberFormatException e) {
                            throw new UsageException("--timeout needs milliseconds, not '" + v + "'");
                        }
                        if (timeout <= 0) {
                            throw new UsageException("--timeout must be positive");
                        }
                    }
                } else if (a.startsWith("-")) {
                    throw new UsageException("unknown option '" + a + "' (try --help)");
                } else if (daemon == null) {
                    daemon = a;
                } else {
                    throw new UsageException("one daemon at a time ('" + a + "' is extra)");
                }
            }
            if (daemon == null || control == null) {
                throw new UsageException("DAEMON and --control PATH are required (try --help)");
            }
        } catch (UsageException e) {
            System.err.println("upgrade: " + e.getMessage());
            return 2;
        }
        return restart(daemon, control, timeout, command, new PrintWriter(System.out, true), new PrintWriter(System.err, true));
    }

    /**
     * Asks the daemon at {@code control} (checked to be {@code daemon}) to upgrade in place,
     * printing each phase to {@code out} as it arrives and then the final line. Returns 0 if the
     * new process took over, 1 if not (the reason on {@code err}), 2 if the socket serves another
     * daemon.
     */
    public static int restart(String daemon, Path control, int timeout, List<String> command, PrintWriter out,
            PrintWriter err) {
        try (ControlClient c = ControlClient.connect(control)) {
            String running;
            try (Reply st = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                    .get(10, TimeUnit.SECONDS)) {
                if (st.isError()) { // e.g. PERMISSION_DENIED: this user is not an operator of that daemon
                    System.err.println("upgrade: " + control + ": " + st.response().getError().getCode() + ": "
                            + st.response().getError().getMessage());
                    return 1;
                }
                running = st.response().getStatus().getDaemon();
            }
            if (!running.equals(daemon)) {
                err.println("upgrade: " + control + " is " + running + ", not " + daemon);
                return 2;
            }
            long wait = (timeout == 0 ? 10_000L : timeout) * 6 + 10_000;
            try (Reply r = c.call(Request.newBuilder().setRestart(Restart.newBuilder().addAllCommand(command)
                    .setTimeoutMs(timeout)), List.of(), null, p -> progress(daemon, p, out))
                    .get(wait, TimeUnit.MILLISECONDS)) {
                Response resp = r.response();
                if (resp.hasRestarted()) {
                    var u = resp.getRestarted();
                    out.printf("%s: upgraded in place: pid %d -> pid %d, %d items, %d fds, tasks paused %.1f ms;"
                            + " version %s -> %s%n", daemon, u.getOldPid(), u.getNewPid(), u.getItems(), u.getFds(),
                            u.getPauseUs() / 1000.0, orUnknown(u.getOldVersion()), orUnknown(u.getNewVersion()));
                    out.flush();
                    return 0;
                }
                err.println(daemon + ": " + (resp.hasError() ? resp.getError().getMessage()
                        : "unexpected answer " + resp.getBodyCase()) + " (the old process carries on)");
                return 1;
            }
        } catch (Exception e) {
            Throwable t = e instanceof java.util.concurrent.ExecutionException && e.getCause() != null ? e.getCause() : e;
            err.println("upgrade: " + control + ": " + (t.getMessage() != null ? t.getMessage() : t.toString()));
            return 1;
        }
    }

    /** One phase line as it arrives, e.g. {@code splicer: paused      3 connections, 20 tasks  (+412.3 ms)}. */
    private static void progress(String daemon, Response r, PrintWriter out) {
        if (!r.hasUpgradeProgress()) {
            return;
        }
        var p = r.getUpgradeProgress();
        out.printf("%s: %-9s %s (+%.1f ms)%n", daemon, p.getPhase(), p.getDetail(), p.getElapsedUs() / 1000.0);
        out.flush();
    }

    private static String orUnknown(String v) {
        return v.isEmpty() ? "unknown" : v;
    }
}
