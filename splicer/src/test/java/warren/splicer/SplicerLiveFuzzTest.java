package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.daemon.client.ControlClient;
import warren.daemon.testing.DaemonProcess;
import warren.daemon.testing.PingPair;
import warren.daemon.testing.livefuzz.LiveFuzzer;
import warren.daemon.testing.livefuzz.Messages;

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

    /** A pair spliced, "ping" relayed, both ends closed: Spliced BOTH_EOF with 4 bytes a to b ({@link PingPair}). */
    static void spliceARealPair(Path control) throws Exception {
        try (ControlClient c = ControlClient.connect(control)) {
            PingPair.spliceAndEnd(c);
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
