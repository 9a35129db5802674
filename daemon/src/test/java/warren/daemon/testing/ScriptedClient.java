package warren.daemon.testing;

import com.google.protobuf.ByteString;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import warren.control.v1.Cancel;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Restart;
import warren.control.v1.Splice;
import warren.control.v1.TaskInfo;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.fdpass.Fd;
import warren.fdpass.TestSockets;
import warren.fdpass.libc.Native;

/**
 * A control client driven line by line on stdin, one answer line on stdout per command, so a test
 * can run it as another user ({@link AsUser}) and interleave its requests with its own. Commands:
 * <pre>
 * splice META          two socket pairs spliced, held open; "OK accepted task=N relayed=ping"
 * list                 "OK listing task=N uid=U metadata=M;..."
 * status | metrics     "OK status ..." / "OK metrics_text ..."
 * trace N              a Trace of task N (answered at once when refused)
 * cancel-task N        Cancel{task N}
 * cancel-own META      Cancel{target_id} of this client's splice with that metadata
 * restart              Restart{} (no command)
 * restart-command F    Restart{command: /bin/sh -c "id > F"}
 * whoami               "OK uid=U gid=G pid=P"
 * quit
 * </pre>
 * A refusal prints "ERROR CODE message"; the first line printed is "READY".
 */
public final class ScriptedClient {
    private ScriptedClient() {}

    private record Held(long id, CompletableFuture<Reply> answer, List<Fd> fds) {}

    public static void main(String[] args) throws Exception {
        Map<String, Held> held = new LinkedHashMap<>();
        try (ControlClient c = ControlClient.connect(Path.of(args[0]));
                BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            System.out.println("READY");
            System.out.flush();
            long nextId = 1;
            for (String line; (line = in.readLine()) != null; ) {
                String[] w = line.strip().split(" ", 2);
                String arg = w.length > 1 ? w[1] : "";
                String out;
                try {
                    switch (w[0]) {
                        case "quit": return;
                        case "whoami":
                            out = "OK uid=" + Native.getuid() + " gid=" + Native.getgid() + " pid="
                                    + ProcessHandle.current().pid();
                            break;
                        case "splice": out = splice(c, nextId++, arg, held); break;
                        case "list": out = show(call(c, Request.newBuilder().setList(warren.control.v1.List.getDefaultInstance()))); break;
                        case "status": out = show(call(c, Request.newBuilder().setStatus(warren.control.v1.Status.getDefaultInstance()))); break;
                        case "metrics": out = show(call(c, Request.newBuilder().setMetrics(warren.control.v1.Metrics.getDefaultInstance()))); break;
                        case "trace":
                            out = show(call(c, Request.newBuilder().setTrace(warren.control.v1.Trace.newBuilder()
                                    .setTask(Long.parseLong(arg)).setSeconds(1))));
                            break;
                        case "cancel-task":
                            out = show(call(c, Request.newBuilder().setCancel(Cancel.newBuilder().setTask(Long.parseLong(arg)))));
                            break;
                        case "cancel-own":
                            out = show(call(c, Request.newBuilder().setCancel(Cancel.newBuilder().setTargetId(held.get(arg).id()))));
                            break;
                        case "restart": out = show(call(c, Request.newBuilder().setRestart(Restart.getDefaultInstance()))); break;
                        case "restart-command":
                            out = show(call(c, Request.newBuilder().setRestart(Restart.newBuilder().addCommand("/bin/sh")
                                    .addCommand("-c").addCommand("id > " + arg))));
                            break;
                        default: out = "BAD command " + w[0];
                    }
                } catch (Exception e) {
                    out = "FAILED " + e;
                }
                System.out.println(out);
                System.out.flush();
            }
        } finally {
            for (Held h : held.values()) {
                Fd.closeAll(h.fds());
            }
        }
    }

    private static Response call(ControlClient c, Request.Builder r) throws Exception {
        try (Reply reply = c.call(r, List.of()).get(30, TimeUnit.SECONDS)) {
            return reply.response();
        }
    }

    private static String splice(ControlClient c, long id, String meta, Map<String, Held> held) throws Exception {
        Fd[] x = TestSockets.streamPair();
        Fd[] y = TestSockets.streamPair();
        CompletableFuture<Long> accepted = new CompletableFuture<>();
        CompletableFuture<Reply> answer = c.call(Request.newBuilder().setId(id).setMetadata(ByteString.copyFromUtf8(meta))
                .setSplice(Splice.newBuilder().setFdA(0).setFdB(1)), List.of(x[0], y[0]),
                a -> accepted.complete(a.getAccepted().getTask()));
        x[0].close();
        y[0].close();
        List<Fd> keep = new ArrayList<>(List.of(x[1], y[1]));
        held.put(meta, new Held(id, answer, keep));
        CompletableFuture.anyOf(accepted, answer).get(30, TimeUnit.SECONDS);
        if (!accepted.isDone()) {
            try (Reply r = answer.get()) {
                return show(r.response());
            }
        }
        TestSockets.writeAll(x[1], "ping".getBytes(StandardCharsets.UTF_8));
        return "OK accepted task=" + accepted.get() + " relayed="
                + new String(TestSockets.readExactly(y[1], 4), StandardCharsets.UTF_8);
    }

    private static String show(Response r) {
        switch (r.getBodyCase()) {
            case ERROR: return "ERROR " + r.getError().getCode() + " " + r.getError().getMessage();
            case LISTING: {
                List<String> tasks = new ArrayList<>();
                for (TaskInfo t : r.getListing().getTasksList()) {
                    tasks.add("task=" + t.getTask() + " uid=" + t.getPeerUid() + " metadata=" + t.getMetadata().toStringUtf8());
                }
                return "OK listing " + String.join(";", tasks);
            }
            case CANCELLED: return "OK cancelled " + r.getCancelled().getTask();
            default: return "OK " + r.getBodyCase().name().toLowerCase(java.util.Locale.ROOT);
        }
    }
}
