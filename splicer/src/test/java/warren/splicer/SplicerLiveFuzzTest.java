package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.EndReason;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.DaemonProcess;
import warren.daemon.testing.livefuzz.LiveFuzzer;
import warren.daemon.testing.livefuzz.Messages;
import warren.fdpass.Fd;
import warren.fdpass.TestSockets;

/**
 * The live-daemon fuzzer against a real Splicer process (docs/testing.md, "Live fuzzing"): 5,000
 * mutated control messages with fds of every kind here ({@code ./warren fuzz live} runs 100,000 and
 * takes WARREN_LIVE_FUZZ_MESSAGES / _SEED), Status answered throughout, every request answered,
 * the fd count back to its baseline, and a real pair spliced before and after.
 */
@Timeout(value = 1800, unit = TimeUnit.SECONDS)
class SplicerLiveFuzzTest {
    @TempDir
    Path dir;

    @Test
    void mutatedControlMessagesWithFdsOfEveryKindLeaveSplicerServingAndItsFdsAtBaseline() throws Exception {
        Path conf = Files.writeString(dir.resolve("splicer.conf"), "audit.path = " + dir.resolve("audit.jsonl") + "\n");
        try (DaemonProcess d = new DaemonProcess("splicer", Main.class, dir.resolve("splicer.sock"), conf,
                dir.resolve("splicer.log"))) {
            spliceARealPair(d.control); // its pipes in the pool before the baseline
            LiveFuzzer.Result r = new LiveFuzzer(new LiveFuzzer.Daemon("splicer", d.control, d.pid(), Messages.Target.NONE),
                    LiveFuzzer.Settings.fromEnvironment(5_000)).run();
            assertTrue(r.findings().isEmpty(), () -> r + "\nlog:\n" + tail(dir.resolve("splicer.log")));
            assertEquals(r.fdsBaseline(), r.fdsAfter(), r::toString);
            spliceARealPair(d.control);
            assertTrue(d.process().isAlive(), "the first process still serves");
        }
    }

    /** A pair spliced, "ping" relayed, both ends closed: Spliced BOTH_EOF with 4 bytes a to b. */
    static void spliceARealPair(Path control) throws Exception {
        Fd[] x = TestSockets.streamPair();
        Fd[] y = TestSockets.streamPair();
        try (ControlClient c = ControlClient.connect(control)) {
            CompletableFuture<Reply> answer = c.call(Request.newBuilder().setSplice(Splice.newBuilder().setFdA(0).setFdB(1)),
                    List.of(x[0], y[0]));
            x[0].close();
            y[0].close();
            TestSockets.writeAll(x[1], "ping".getBytes(StandardCharsets.US_ASCII));
            assertEquals("ping", new String(TestSockets.readExactly(y[1], 4), StandardCharsets.US_ASCII));
            x[1].close();
            y[1].close();
            try (Reply r = answer.get(30, TimeUnit.SECONDS)) {
                Response resp = r.response();
                assertEquals(Response.BodyCase.SPLICED, resp.getBodyCase(), resp::toString);
                assertEquals(EndReason.BOTH_EOF, resp.getSpliced().getReason(), resp::toString);
                assertEquals(4, resp.getSpliced().getBytesAToB());
            }
        } finally {
            Fd.closeAll(List.of(x[0], x[1], y[0], y[1]));
        }
    }

    static String tail(Path log) {
        try {
            String s = Files.readString(log);
            return s.length() > 8000 ? s.substring(s.length() - 8000) : s;
        } catch (java.io.IOException e) {
            return "(no log: " + e + ")";
        }
    }
}
