package warren.cli;

import java.util.TreeMap;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;
import warren.control.v1.StatusReport;

/** {@code ./warren status --control PATH [--json]}: the daemon's Status. */
@Command(name = "status", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = "Show a daemon's name, version, pid, uptime, tasks, clients, counters.")
public final class StatusCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Mixin
    ControlOption control;

    @Option(names = "--json", description = "one JSON object on one line, for scripts")
    boolean json;

    @Override
    public Integer call() throws CliException {
        StatusReport s;
        try (Control c = Control.connect(control.path())) {
            s = c.status();
        }
        spec.commandLine().getOut().print(json ? json(s) + "\n" : text(s));
        spec.commandLine().getOut().flush();
        return 0;
    }

    static Json json(StatusReport s) {
        return Json.object().put("daemon", s.getDaemon()).put("version", s.getVersion()).put("pid", s.getPid())
                .putUnsigned("uptime_ms", s.getUptimeMs()).putUnsigned("tasks_active", s.getTasksActive())
                .putUnsigned("tasks_total", s.getTasksTotal()).put("clients", s.getClients())
                .put("shutting_down", s.getShuttingDown()).put("counters", new TreeMap<>(s.getCountersMap()));
    }

    static String text(StatusReport s) {
        StringBuilder sb = new StringBuilder(Text.header(s)).append('\n');
        sb.append("state     ").append(s.getShuttingDown() ? "shutting down" : "serving").append('\n');
        sb.append("tasks     ").append(s.getTasksActive()).append(" active, ").append(s.getTasksTotal())
                .append(" since start\n");
        sb.append("clients   ").append(s.getClients()).append(" control connections\n");
        if (s.getCountersCount() > 0) {
            Text.Table t = new Text.Table("COUNTER", "VALUE");
            new TreeMap<>(s.getCountersMap()).forEach((k, v) -> t.row(k, Long.toUnsignedString(v)));
            sb.append('\n').append(t.render());
        }
        return sb.toString();
    }
}
