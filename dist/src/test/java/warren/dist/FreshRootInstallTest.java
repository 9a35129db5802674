package warren.dist;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import warren.daemon.testing.SystemdBoot;

/**
 * The .deb as a user installs it (packaging/fresh-root-test.sh): {@code apt-get install
 * ./warren_*.deb} into a fresh Debian bookworm root (debootstrap minbase + systemd, cached in
 * ~/.cache/warren; a tmpfs overlay of it per run, private namespaces), which pulls in a Java
 * runtime by the package's Depends; then the root's own systemd boots and each daemon's socket
 * unit starts, a client's {@code warren status} activates the service, {@code systemctl reload}
 * upgrades it in place; then remove (units stopped, files gone, conffiles kept) and purge
 * (/etc/warren and the logs gone, the warren user kept).
 */
@Timeout(value = 900, unit = TimeUnit.SECONDS) // the first run makes the cached root (minutes)
class FreshRootInstallTest {
    @Test
    void aptGetInstallIntoAFreshRootStartsEveryUnit() throws Exception {
        assumeTrue(SystemdBoot.available(), "needs root and systemd");
        Path cache = Path.of(System.getenv().getOrDefault("WARREN_ROOT_CACHE", System.getProperty("user.home") + "/.cache/warren"));
        assumeTrue(Files.isExecutable(Path.of("/usr/sbin/debootstrap")) || Files.isDirectory(cache.resolve("bookworm")),
                "needs debootstrap (./warren test installs it) or a cached root");
        Path work = Files.createDirectories(Path.of("target", "fresh-root-" + ProcessHandle.current().pid())).toAbsolutePath();
        try {
            Process p = new ProcessBuilder("bash", Path.of("..", "packaging", "fresh-root-test.sh").toString(),
                    SystemdBoot.builtPackage().toString(), work.toString()).redirectErrorStream(true).start();
            String out = new String(p.getInputStream().readAllBytes());
            assertTrue(p.waitFor(60, TimeUnit.SECONDS), out);
            assumeTrue(p.exitValue() != 77, out);
            System.out.print(out);
            assertEquals(0, p.exitValue(), out);
            assertTrue(out.contains("fresh-root: ok"), out);
        } finally {
            SystemdBoot.deleteTree(work);
        }
    }
}
