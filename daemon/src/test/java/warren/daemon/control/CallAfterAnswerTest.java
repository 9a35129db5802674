package warren.daemon.control;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Request;
import warren.control.v1.Splice;
import warren.daemon.DaemonSpec;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.RunningDaemon;

/**
 * {@link Call#afterFinalAnswer}: the hook runs once, on the control loop, right after the final
 * answer is queued, when the answer is given from another thread (a relay on loop 1+); a call
 * already answered takes no hook. Splicer's fd store journal removes a pair's entry with it, so
 * that a requester cannot hand the same sockets back before the removal (systemd would drop them
 * from the new pair's entry as duplicates).
 */
@Timeout(value = 30, unit = TimeUnit.SECONDS)
class CallAfterAnswerTest {
    @TempDir
    Path dir;

    @Test
    void theHookRunsOnceOnTheControlLoopRightAfterTheAnswerIsQueued() throws Exception {
        AtomicInteger runs = new AtomicInteger();
        CompletableFuture<String> seen = new CompletableFuture<>();
        CompletableFuture<Boolean> secondHook = new CompletableFuture<>();
        warren.daemon.Daemon[] daemon = new warren.daemon.Daemon[1];
        DaemonSpec spec = new DaemonSpec("testd", "test", "answers from another thread", List.of(), d -> {
            daemon[0] = d;
            return new RequestHandler() {
                @Override
                public Set<Request.BodyCase> serves() {
                    return Set.of(Request.BodyCase.SPLICE);
                }

                @Override
                public void handle(Call call) {
                    Thread t = new Thread(() -> { // as a relay on another loop answers
                        boolean set = call.afterFinalAnswer(() -> {
                            runs.incrementAndGet();
                            // the answer is queued or written by now: the call is off its connection
                            seen.complete("inLoop=" + d.loop().inLoop() + " inFlight=" + call.client.inFlight.containsKey(call.id()));
                        });
                        call.fail(warren.control.v1.Error.Code.RESOURCE_EXHAUSTED, "answered from another thread");
                        secondHook.complete(set && !call.afterFinalAnswer(runs::incrementAndGet));
                    });
                    t.start();
                }
            };
        });
        try (RunningDaemon d = new RunningDaemon(spec, dir.resolve("ctl.sock"), "audit.path = /dev/null\n");
                ControlClient c = ControlClient.connect(d.control)) {
            warren.fdpass.Fd[] two = warren.fdpass.TestSockets.streamPair();
            try (warren.fdpass.Fd a = two[0]; warren.fdpass.Fd b = two[1];
                    Reply r = c.call(Request.newBuilder().setSplice(Splice.newBuilder().setFdA(0).setFdB(1)), List.of(a, b))
                            .get(10, TimeUnit.SECONDS)) {
                assertEquals("answered from another thread", r.response().getError().getMessage(), r.response()::toString);
            }
            assertEquals("inLoop=true inFlight=false", seen.get(10, TimeUnit.SECONDS));
            assertTrue(secondHook.get(10, TimeUnit.SECONDS), "the first hook taken, a second refused once answered");
            daemon[0].loop().call(() -> null, 5000); // whatever was posted has run
            assertEquals(1, runs.get(), "the hook ran once");
        }
    }
}
