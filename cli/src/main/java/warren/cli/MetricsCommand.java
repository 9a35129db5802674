package warren.cli;

import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Spec;
import warren.control.v1.Error;
import warren.control.v1.Metrics;
import warren.control.v1.Request;
import warren.control.v1.Response;

/** {@code ./warren metrics --control PATH}: the daemon's metrics as OpenMetrics text (Metrics). */
@Command(name = "metrics", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = "Print a daemon's metrics as OpenMetrics text (what Prometheus scrapes).")
public final class MetricsCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Mixin
    ControlOption control;

    @Override
    public Integer call() throws CliException {
        try (Control c = Control.connect(control.path())) {
            Response r;
            try {
                r = c.ask(Request.newBuilder().setMetrics(Metrics.getDefaultInstance()), Response.BodyCase.METRICS);
            } catch (CliException e) {
                if (e.code() == Error.Code.UNKNOWN_REQUEST) {
                    throw new CliException("the daemon at " + c.path() + " does not serve Metrics (a build without"
                            + " metrics): " + e.getMessage());
                }
                throw e;
            }
            String text = r.getMetrics().getText();
            spec.commandLine().getOut().print(text.endsWith("\n") || text.isEmpty() ? text : text + "\n");
            spec.commandLine().getOut().flush();
        }
        return 0;
    }
}
