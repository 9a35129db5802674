package warren.linux.net;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import warren.fdpass.Fd;
import warren.fdpass.libc.Errno;

/**
 * Loading the steering programs through bpf(2) from Java: both load as root; a program the
 * verifier rejects comes back with the verifier's log; without the capability (a child JVM in a
 * user namespace, where Bumblebee's helper path runs) the failure is EPERM, flagged
 * {@link SteeringException#notPermitted()} with a message that says what is missing.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class TunSteeringLoadTest {

    private static Fd loadOrSkip(String name, long[] program) throws SteeringException {
        try {
            return TunSteering.load(name, program);
        } catch (SteeringException e) {
            Assumptions.assumeFalse(e.notPermitted(), "bpf(2) not permitted here: " + e.getMessage());
            throw e;
        }
    }

    @Test
    void bothProgramsPassTheVerifier() throws Exception {
        try (Fd low16 = loadOrSkip("warren_low16", TunSteering.low16());
                Fd port = loadOrSkip("warren_port", TunSteering.port())) {
            assertTrue(low16.isOpen() && port.isOpen());
        }
    }

    @Test
    void aRejectedProgramComesBackWithTheVerifiersLog() throws Exception {
        loadOrSkip("warren_low16", TunSteering.low16()).close(); // skips where bpf(2) is not allowed
        long[] readsUnsetR0 = {Bpf.exit()};
        SteeringException e = org.junit.jupiter.api.Assertions.assertThrows(SteeringException.class,
                () -> TunSteering.load("warren_bad", readsUnsetR0));
        assertFalse(e.notPermitted(), e.getMessage());
        assertTrue(e.errno() == Errno.EACCES || e.errno() == Errno.EINVAL, e.getMessage());
        assertTrue(e.verifierLog().contains("R0"), e.verifierLog());
        assertTrue(e.getMessage().contains("verifier log:"), e.getMessage());
    }

    @Test
    void inAUserNamespaceTheLoadIsNotPermitted() throws Exception {
        Assumptions.assumeTrue(Files.isExecutable(Path.of("/usr/bin/unshare")), "needs unshare(1)");
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process p = new ProcessBuilder(List.of("/usr/bin/unshare", "--user", "--map-root-user", java, "-cp",
                System.getProperty("java.class.path"), SteeringProbe.class.getName()))
                .redirectErrorStream(true).start();
        assertTrue(p.waitFor(50, TimeUnit.SECONDS), "probe finished");
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        Assumptions.assumeFalse(out.contains("unshare failed"), "user namespaces not available: " + out);
        System.out.println("in a user namespace: " + out.strip());
        assertTrue(out.contains("notPermitted=true errno=1 "), out);
        assertTrue(out.contains("CAP_BPF or CAP_SYS_ADMIN"), out);
    }
}
