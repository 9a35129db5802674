package warren.packet;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/**
 * Writes a fuzz test's seeds (inputs made by the real encoders) where Jazzer's regression mode
 * reads them, {@code src/test/resources/<package>/<Class>Inputs/<method>/<name>}, when the build
 * runs with {@code -Dwarren.fuzz.writeSeeds=true}; otherwise checks that each is there. A copy per
 * module (this module depends on nothing).
 */
final class FuzzSeeds {
    private FuzzSeeds() {}

    static void writeOrCheck(Class<?> test, String method, Map<String, byte[]> seeds) {
        Path dir = Path.of("src/test/resources", test.getPackageName().replace('.', '/'),
                test.getSimpleName() + "Inputs", method);
        try {
            if (Boolean.getBoolean("warren.fuzz.writeSeeds")) {
                Files.createDirectories(dir);
                for (Map.Entry<String, byte[]> e : seeds.entrySet()) {
                    Files.write(dir.resolve(e.getKey()), e.getValue());
                }
                return;
            }
            for (Map.Entry<String, byte[]> e : seeds.entrySet()) {
                if (!Files.isRegularFile(dir.resolve(e.getKey()))) {
                    throw new AssertionError("seed " + dir.resolve(e.getKey())
                            + " missing: run with -Dwarren.fuzz.writeSeeds=true and commit it");
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
