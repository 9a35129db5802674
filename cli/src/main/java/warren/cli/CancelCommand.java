package warren.cli;

import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;
import warren.control.v1.Cancel;
import warren.control.v1.Request;
import warren.control.v1.Response;

/** {@code ./warren cancel --control PATH TASK}: ends one task (Cancel by daemon-wide task number). */
@Command(name = "cancel", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = {"Cancel a task by its number (see list).", "It ends with reason CANCELLED and its requester"
                + " gets its final answer (a Splice's sockets handed back)."})
public final class CancelCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Mixin
    ControlOption control;

    @Parameters(index = "0", paramLabel = "TASK", description = "the daemon-wide task number (list shows it)")
    long task;

    @Override
    public Integer call() throws CliException {
        if (task <= 0) {
            throw new CliException(2, "TASK must be a positive task number, not " + task);
        }
        try (Control c = Control.connect(control.path())) {
            String daemon = c.status().getDaemon();
            long done = c.ask(Request.newBuilder().setCancel(Cancel.newBuilder().setTask(task)),
                    Response.BodyCase.CANCELLED).getCancelled().getTask();
            spec.commandLine().getOut().println(daemon + ": task " + Long.toUnsignedString(done) + " cancelled");
        }
        return 0;
    }
}
