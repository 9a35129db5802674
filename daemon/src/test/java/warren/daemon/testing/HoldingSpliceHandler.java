package warren.daemon.testing;

import java.util.List;
import java.util.Set;
import warren.control.v1.EndReason;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.control.v1.Spliced;
import warren.daemon.Daemon;
import warren.daemon.DaemonSpec;
import warren.daemon.audit.JsonLine;
import warren.daemon.control.Call;
import warren.daemon.control.RequestHandler;
import warren.daemon.loop.EventLoop;
import warren.daemon.task.Task;
import warren.fdpass.Fd;
import warren.fdpass.FdInfo;
import warren.fdpass.FdPassException;

/**
 * A stand-in daemon for plumbing tests: it serves Splice without moving bytes. With
 * {@code limits.lifetime_ms == 0} it hands both sockets back at once; otherwise it holds them as a
 * task until the lifetime passes, the request is cancelled or the daemon stops, then hands them
 * back with the reason.
 */
public final class HoldingSpliceHandler implements RequestHandler {
    private final EventLoop loop;

    public HoldingSpliceHandler(Daemon d) {
        this.loop = d.loop();
    }

    public static DaemonSpec spec() {
        return new DaemonSpec("testd", "test", "a test daemon that holds socket pairs", List.of(),
                HoldingSpliceHandler::new);
    }

    @Override
    public Set<Request.BodyCase> serves() {
        return Set.of(Request.BodyCase.SPLICE);
    }

    @Override
    public void handle(Call call) {
        Splice s = call.request().getSplice();
        try {
            FdInfo.requireConnectedStream(call.peekFd(s.getFdA()), "fd_a", true);
            FdInfo.requireConnectedStream(call.peekFd(s.getFdB()), "fd_b", true);
        } catch (FdPassException e) {
            call.fail(Error.Code.BAD_FD_TYPE, e.getMessage());
            return;
        } catch (java.io.IOException e) {
            call.fail(Error.Code.INTERNAL, e.getMessage());
            return;
        }
        Fd a = call.takeFd(s.getFdA());
        Fd b = call.takeFd(s.getFdB());
        long lifetime = s.getLimits().getLifetimeMs();
        if (lifetime == 0) {
            answer(call, a, b, EndReason.BOTH_EOF);
            return;
        }
        Held held = new Held(call, a, b);
        call.startTask("splice", held, new JsonLine().put("fd_a", a.number()).put("fd_b", b.number()), true);
        held.timer = loop.schedule(lifetime, () -> held.end(EndReason.LIFETIME));
    }

    private static void answer(Call call, Fd a, Fd b, EndReason reason) {
        call.reply(Response.newBuilder().setSpliced(Spliced.newBuilder().setFdA(0).setFdB(1).setReason(reason)),
                List.of(a, b), reason.name(), new JsonLine().put("reason", reason.name()));
    }

    private final class Held implements Task {
        final Call call;
        final Fd a;
        final Fd b;
        EventLoop.Timer timer;
        boolean ended;

        Held(Call call, Fd a, Fd b) {
            this.call = call;
            this.a = a;
            this.b = b;
        }

        void end(EndReason reason) {
            if (ended) {
                return;
            }
            ended = true;
            if (timer != null) {
                timer.cancel();
            }
            answer(call, a, b, reason);
        }

        @Override
        public void cancel() {
            loop.execute(() -> end(EndReason.CANCELLED));
        }

        @Override
        public void stop() {
            loop.execute(() -> end(EndReason.SHUTDOWN));
        }

        @Override
        public String state() {
            return "holding";
        }
    }

    /** Runs the test daemon as a process (for the SIGTERM test). */
    public static void main(String[] args) {
        System.exit(Daemon.main(spec(), args));
    }
}
