package warren.soak;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import warren.daemon.testing.SystemdBoot;
import warren.netns.testing.TestNetwork;

/**
 * The soak with faults ({@link Soak}) for {@code -Dwarren.soak.minutes} (default 1: what
 * {@code ./warren test} runs) with {@code -Dwarren.soak.seed} (default: from the clock, printed) and
 * {@code -Dwarren.soak.faults} ({@link Soak.Faults}; default all kinds on all daemons).
 * {@code ./warren soak [--minutes N] [--seed S]} runs this test alone. The report (the tables,
 * any failure) is printed and written to target/soak-report.txt; its lines go to
 * target/soak-progress.log as they happen; each daemon's journal to target/soak-journals/.
 */
class SoakTest {
    /** The longest soak the launcher allows (minutes) and the setup and wind-down around it. */
    static final int MAX_MINUTES = 240;

    @Test
    @Timeout(value = MAX_MINUTES + 20, unit = TimeUnit.MINUTES) // the soak's own length is checked below
    void daemonsUnderTrafficAndFaultsLoseNothingAndLeakNothing() throws Exception {
        assumeTrue(SystemdBoot.available() && TestNetwork.available(), "needs root, systemd and ip");
        int minutes = Integer.getInteger("warren.soak.minutes", 1);
        if (minutes < 1 || minutes > MAX_MINUTES) {
            throw new IllegalArgumentException("warren.soak.minutes: 1 to " + MAX_MINUTES + ", got " + minutes);
        }
        long seed = Long.getLong("warren.soak.seed", System.nanoTime());
        Soak.Faults faults = Soak.Faults.parse(System.getProperty("warren.soak.faults", ""));
        Soak soak = new Soak(Duration.ofMinutes(minutes), seed, Path.of("target", "soak-progress.log").toAbsolutePath(),
                faults, Path.of("target", "soak-journals").toAbsolutePath());
        String report = soak.run(Path.of("target", "soak-" + ProcessHandle.current().pid()).toAbsolutePath());
        System.out.println(report);
        Files.writeString(Path.of("target", "soak-report.txt"), report);
        assertFalse(soak.failed(), report);
    }
}
