package warren.cli;

import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Spec;

/**
 * The top-level command. Its {@code subcommands} list is the one place a subcommand is
 * registered (see the package documentation for the steps).
 */
@Command(name = "warren", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = "The operator's tools for a running warren daemon (Splicer, Bumblebee, Fish), over its"
                + " control socket.",
        subcommands = {
            StatusCommand.class,
            ListCommand.class,
            CancelCommand.class,
            MetricsCommand.class,
            UpgradeCommand.class,
            TraceCommand.class,
        })
public final class WarrenCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Override
    public Integer call() {
        spec.commandLine().usage(spec.commandLine().getErr());
        return 2;
    }
}
