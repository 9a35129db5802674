package warren.cli;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;
import warren.daemon.cli.UpgradeMain;

/**
 * {@code ./warren upgrade DAEMON --control PATH [--timeout MS] [-- COMMAND...]}: the restarter
 * ({@link UpgradeMain#restart}), printing each phase as the daemon reports it. Exit 0 only when the
 * new process took over, 1 when not (the old one carries on), 2 for bad usage.
 */
@Command(name = "upgrade", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = {"Upgrade a running daemon in place, printing each phase.",
            "It starts a new process (its own command line, so"
                + " the current build, or COMMAND), hands it every connection, pair, flow and fd, and exits once"
                + " the new one has taken over. Nothing is lost; if anything fails first, the old process carries"
                + " on. Each phase (started, pre_copied, paused, fds_sent, ready, committed) is printed as it happens.",
            "Exit status: 0 taken over, 1 not (the old process still serves), 2 bad usage."})
public final class UpgradeCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Parameters(index = "0", paramLabel = "DAEMON",
            description = "splicer, bumblebee or fish (checked against the daemon's Status)")
    String daemon;

    @Parameters(index = "1..*", paramLabel = "COMMAND", arity = "0..*",
            description = "after --: the new process's command line instead of the running one's")
    java.util.List<String> command = new ArrayList<>();

    @Option(names = "--control", required = true, paramLabel = "PATH", description = "the daemon's control socket")
    Path control;

    @Option(names = "--timeout", paramLabel = "MS", description = "limit per handoff step (default: 30000 to start and connect, 10000 for each later step)")
    int timeout;

    @Override
    public Integer call() throws CliException {
        if (!command.isEmpty() && !spec.commandLine().getParseResult().originalArgs().contains("--")) {
            throw new CliException(2, "one daemon at a time ('" + command.get(0) + "' is extra; a COMMAND goes after --)");
        }
        if (spec.commandLine().getParseResult().hasMatchedOption("--timeout") && timeout <= 0) {
            throw new CliException(2, "--timeout must be positive");
        }
        PrintWriter out = spec.commandLine().getOut();
        PrintWriter err = spec.commandLine().getErr();
        return UpgradeMain.restart(daemon, control, timeout, command, out, err);
    }
}
