package warren.daemon;

import java.io.IOException;
import java.io.InputStream;
import java.util.Properties;

/**
 * The build's version, from one source: {@code warren/version.properties}, which Maven fills at
 * build time ({@code ${project.version}} and the git commit, daemon/pom.xml). Every daemon's
 * Status, the upgrade handoff's hello, {@code Restarted} and {@code ./warren --version} use it.
 */
public final class Version {
    private static final String RESOURCE = "/warren/version.properties";
    private static final String VERSION;
    private static final String COMMIT;

    static {
        Properties p = new Properties();
        try (InputStream in = Version.class.getResourceAsStream(RESOURCE)) {
            if (in != null) {
                p.load(in);
            }
        } catch (IOException e) {
            // an unreadable resource leaves "unknown": the version is for people, never fatal
        }
        VERSION = known(p.getProperty("version"));
        COMMIT = known(p.getProperty("commit"));
    }

    private Version() {}

    /** A value the build filled in, else "unknown" (unfiltered, empty: no git, no checkout). */
    private static String known(String v) {
        return v == null || v.isBlank() || v.contains("${") ? "unknown" : v.strip();
    }

    /** The Maven project version, e.g. "0.1.0-SNAPSHOT". */
    public static String version() {
        return VERSION;
    }

    /** The git commit the build was made from (12 hex digits), or "unknown". */
    public static String commit() {
        return COMMIT;
    }

    /** What Status, Restarted and --version show, e.g. "0.1.0-SNAPSHOT (git 1a2b3c4d5e6f)". */
    public static String string() {
        return COMMIT.equals("unknown") ? VERSION : VERSION + " (git " + COMMIT + ")";
    }
}
