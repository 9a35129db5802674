package warren.dist;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * The package's /etc/warren/DAEMON.conf (as packed in target/deb) holds every key the daemon
 * knows, each commented out with its default: with every key line uncommented it loads, and the
 * daemon's --print-config is then exactly what it prints with no config at all. Run with the
 * package's own jars (target/deb/usr/lib/warren).
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ShippedConfigTest {
    private static final Path TREE = Path.of("target", "deb");

    @Test
    void everyKeyIsThereCommentedOutAndUncommentedChangesNothing(@TempDir Path tmp) throws Exception {
        for (String d : List.of("splicer", "bumblebee", "fish")) {
            List<String> lines = Files.readAllLines(TREE.resolve("etc/warren/" + d + ".conf"));
            List<String> uncommented = new ArrayList<>();
            int keys = 0;
            for (String l : lines) {
                assertTrue(l.isEmpty() || l.startsWith("#"), d + ".conf: a line that is not a comment: " + l);
                if (l.matches("# [a-z_][a-z0-9_]*(\\.[a-z0-9_]+)* = .*")) { // "threads" has no dot
                    uncommented.add(l.substring(2));
                    keys++;
                }
            }
            String defaults = printConfig(d, null);
            long known = defaults.lines().filter(l -> !l.startsWith("#") && l.contains(" = ")).count();
            assertEquals(known, keys, d + ".conf has a line for every key --print-config knows");
            Path conf = Files.write(tmp.resolve(d + ".conf"), uncommented);
            assertEquals(defaults, printConfig(d, conf), d + ".conf uncommented changes nothing");
        }
    }

    private static String printConfig(String daemon, Path conf) throws Exception {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-cp",
                TREE.resolve("usr/lib/warren").toAbsolutePath() + "/*", "warren." + daemon + ".Main", "--print-config"));
        if (conf != null) {
            cmd.addAll(List.of("--config", conf.toString()));
        }
        Process p = new ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.INHERIT).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertTrue(p.waitFor(60, TimeUnit.SECONDS));
        assertEquals(0, p.exitValue(), String.join(" ", cmd) + ": " + out);
        return out;
    }
}
