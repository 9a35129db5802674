package warren.cli;

import java.util.Base64;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;
import warren.control.v1.FiveTuple;
import warren.control.v1.List;
import warren.control.v1.Listing;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.StatusReport;
import warren.control.v1.TaskInfo;

/** {@code ./warren list --control PATH [--json]}: the daemon's tasks in flight (List). */
@Command(name = "list", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = {"List a daemon's tasks in flight.", "Number, kind, state, who asked (pid/uid/gid), control"
                + " connection, age, bytes and packets each way (out = from the socket handed in), 5-tuples."})
public final class ListCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Mixin
    ControlOption control;

    @Option(names = "--json", description = "one JSON object on one line, for scripts")
    boolean json;

    @Override
    public Integer call() throws CliException {
        StatusReport s;
        Listing l;
        try (Control c = Control.connect(control.path())) {
            try {
                s = c.status();
            } catch (CliException e) {
                if (e.code() != warren.control.v1.Error.Code.PERMISSION_DENIED) {
                    throw e;
                }
                s = null; // a client (not an operator) may List its own tasks but not ask Status
            }
            l = c.ask(Request.newBuilder().setList(List.getDefaultInstance()), Response.BodyCase.LISTING).getListing();
        }
        spec.commandLine().getOut().print(json ? json(s, l) + "\n" : text(s, l));
        spec.commandLine().getOut().flush();
        return 0;
    }

    static Json json(StatusReport s, Listing l) {
        Json tasks = Json.array();
        for (TaskInfo t : l.getTasksList()) {
            Json tuples = Json.array();
            for (FiveTuple f : t.getTuplesList()) {
                tuples.add(Json.object().put("protocol", Text.protocol(f.getProtocol()))
                        .put("src", Text.address(f.getSrcIp())).put("src_port", f.getSrcPort())
                        .put("dst", Text.address(f.getDstIp())).put("dst_port", f.getDstPort()));
            }
            tasks.add(Json.object().putUnsigned("task", t.getTask()).putUnsigned("request_id", t.getRequestId())
                    .put("kind", t.getKind()).put("state", t.getState()).put("peer_pid", t.getPeerPid())
                    .put("peer_uid", t.getPeerUid()).put("peer_gid", t.getPeerGid())
                    .putUnsigned("connection", t.getConnection()).putUnsigned("start_unix_nanos", t.getStartUnixNanos())
                    .putUnsigned("age_ms", t.getAgeMs()).putUnsigned("bytes_out", t.getBytesOut())
                    .putUnsigned("bytes_in", t.getBytesIn()).putUnsigned("packets_out", t.getPacketsOut())
                    .putUnsigned("packets_in", t.getPacketsIn()).put("tuples", tuples)
                    .put("metadata", Base64.getEncoder().encodeToString(t.getMetadata().toByteArray()))
                    .put("metadata_hidden", t.getMetadataHidden()));
        }
        if (s == null) {
            return Json.object().put("tasks", tasks);
        }
        return Json.object().put("daemon", s.getDaemon()).put("version", s.getVersion()).put("pid", s.getPid())
                .put("tasks", tasks);
    }

    static String text(StatusReport s, Listing l) {
        StringBuilder sb = new StringBuilder(s != null ? Text.header(s) : "your uid's tasks (Status needs the operator role)")
                .append(": ").append(l.getTasksCount())
                .append(l.getTasksCount() == 1 ? " task\n" : " tasks\n");
        if (l.getTasksCount() == 0) {
            return sb.toString();
        }
        Text.Table t = new Text.Table("TASK", "KIND", "STATE", "PEER pid/uid/gid", "CONN", "AGE", "BYTES out/in",
                "PACKETS out/in", "5-TUPLES");
        for (TaskInfo i : l.getTasksList()) {
            boolean packets = i.getPacketsOut() != 0 || i.getPacketsIn() != 0;
            java.util.List<FiveTuple> tuples = i.getTuplesList();
            t.row(Long.toUnsignedString(i.getTask()), i.getKind(), i.getState(),
                    i.getPeerPid() + "/" + i.getPeerUid() + "/" + i.getPeerGid(), Long.toUnsignedString(i.getConnection()),
                    Text.duration(i.getAgeMs()), Text.bytes(i.getBytesOut()) + " / " + Text.bytes(i.getBytesIn()),
                    packets ? i.getPacketsOut() + " / " + i.getPacketsIn() : "-",
                    tuples.isEmpty() ? "-" : Text.tuple(tuples.get(0)));
            for (int k = 1; k < tuples.size(); k++) {
                t.row("", "", "", "", "", "", "", "", Text.tuple(tuples.get(k)));
            }
        }
        return sb.append(t.render()).toString();
    }
}
