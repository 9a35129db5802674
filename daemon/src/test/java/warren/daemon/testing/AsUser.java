package warren.daemon.testing;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import warren.fdpass.libc.Native;

/**
 * A {@link ScriptedClient} running as another user: a real process started through
 * {@code setpriv --reuid U --regid G (--clear-groups | --groups LIST)}, so the daemon sees that
 * process's credentials in SO_PEERCRED and SO_PEERGROUPS, and nothing of this JVM's. That user
 * cannot read this JVM's class path (~/.m2 is under /root, 0700), so the class path is copied into
 * a fresh world-readable directory first ({@link #classPathCopy}); its java.io.tmpdir is a
 * directory of its own there. Needs root and setpriv (util-linux): otherwise the test is skipped.
 */
public final class AsUser implements AutoCloseable {
    private final Process process;
    private final PrintStream in;
    private final BlockingQueue<String> lines = new LinkedBlockingQueue<>();
    private final StringBuilder transcript = new StringBuilder();

    /**
     * Starts the client on {@code control}; {@code groups} null = --clear-groups. Returns once it
     * has connected (its "READY" line).
     */
    public AsUser(Path classPathCopy, Path control, int uid, int gid, int[] groups) throws Exception {
        List<String> cmd = new ArrayList<>(List.of("setpriv", "--reuid", Integer.toString(uid), "--regid",
                Integer.toString(gid)));
        if (groups == null) {
            cmd.add("--clear-groups");
        } else {
            List<String> g = new ArrayList<>();
            for (int x : groups) {
                g.add(Integer.toString(x));
            }
            cmd.add("--groups");
            cmd.add(String.join(",", g));
        }
        cmd.addAll(List.of("--", Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-Xmx64m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-XX:-UsePerfData", // no /tmp/hsperfdata_*
                "-Djava.io.tmpdir=" + classPathCopy.resolve("tmp"), "-cp", classPathCopy.resolve("classes") + ":"
                        + classPathCopy.resolve("lib") + "/*", ScriptedClient.class.getName(), control.toString()));
        process = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        in = new PrintStream(process.getOutputStream(), true, StandardCharsets.UTF_8);
        Thread reader = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(process.getInputStream(),
                    StandardCharsets.UTF_8))) {
                for (String line; (line = r.readLine()) != null; ) {
                    lines.add(line);
                }
            } catch (IOException e) {
                lines.add("FAILED reading: " + e);
            }
        }, "as-user-" + uid);
        reader.setDaemon(true);
        reader.start();
        String first = next(60);
        if (!first.equals("READY")) {
            String rest = drain();
            close();
            throw new IllegalStateException("the client as uid " + uid + " did not start: " + first + "\n" + rest);
        }
    }

    /** The client process's pid (setpriv execs java, so it is the connecting process). */
    public long pid() {
        return process.pid();
    }

    /** Sends one command; returns its answer line. */
    public String ask(String command) throws Exception {
        in.println(command);
        String answer = next(60);
        transcript.append("> ").append(command).append("\n< ").append(answer).append('\n');
        return answer;
    }

    /** What was asked and answered so far (for failure messages). */
    public String transcript() {
        return transcript.toString();
    }

    private String next(int seconds) throws Exception {
        String l = lines.poll(seconds, TimeUnit.SECONDS);
        if (l == null) {
            throw new IllegalStateException("no answer within " + seconds + " s; output so far:\n" + drain());
        }
        return l;
    }

    private String drain() {
        List<String> rest = new ArrayList<>();
        lines.drainTo(rest);
        return String.join("\n", rest);
    }

    @Override
    public void close() throws Exception {
        in.println("quit");
        in.close();
        if (!process.waitFor(30, TimeUnit.SECONDS)) {
            process.destroyForcibly();
            process.waitFor(10, TimeUnit.SECONDS);
        }
    }

    /**
     * This JVM's class path copied under {@code dir} (made 0755): directories into classes/ (merged;
     * test and main classes of each module do not overlap), jars into lib/, plus a tmp/ owned by
     * {@code uid}. Skips the test unless this JVM is root and setpriv is installed.
     */
    public static Path classPathCopy(Path dir, int uid, int gid) throws IOException {
        assumeTrue(Native.getuid() == 0, "running a client as another uid needs root");
        assumeTrue(Files.isExecutable(Path.of("/usr/bin/setpriv")), "setpriv (util-linux) not installed");
        Files.createDirectories(dir);
        Path classes = Files.createDirectories(dir.resolve("classes"));
        Path lib = Files.createDirectories(dir.resolve("lib"));
        Path tmp = Files.createDirectories(dir.resolve("tmp"));
        int n = 0;
        for (String entry : System.getProperty("java.class.path").split(":")) {
            Path p = Path.of(entry);
            if (Files.isDirectory(p)) {
                try (var walk = Files.walk(p)) {
                    for (Path f : (Iterable<Path>) walk::iterator) {
                        Path to = classes.resolve(p.relativize(f).toString());
                        if (Files.isDirectory(f)) {
                            Files.createDirectories(to);
                        } else if (!Files.exists(to)) {
                            Files.copy(f, to);
                        }
                    }
                }
            } else if (Files.isRegularFile(p)) {
                Files.copy(p, lib.resolve(n++ + "-" + p.getFileName()), StandardCopyOption.REPLACE_EXISTING);
            }
        }
        try (var walk = Files.walk(dir)) {
            for (Path f : (Iterable<Path>) walk::iterator) {
                Files.setPosixFilePermissions(f, PosixFilePermissions.fromString(Files.isDirectory(f) ? "rwxr-xr-x"
                        : "rw-r--r--"));
            }
        }
        Native.chown(tmp.toString(), uid, gid);
        Files.setPosixFilePermissions(tmp, PosixFilePermissions.fromString("rwx------"));
        for (Path p = dir.getParent(); p != null; p = p.getParent()) {
            if (!Files.getPosixFilePermissions(p).contains(java.nio.file.attribute.PosixFilePermission.OTHERS_EXECUTE)) {
                throw new IllegalStateException(p + " is not searchable by others: uid " + uid + " could not reach " + dir);
            }
        }
        return dir;
    }

    /** Removes a {@link #classPathCopy} (and whatever the client left in its tmp/). */
    public static void remove(Path dir) throws IOException {
        if (!Files.exists(dir)) {
            return;
        }
        try (var walk = Files.walk(dir)) {
            for (Path f : walk.sorted(Comparator.reverseOrder()).toList()) {
                Files.delete(f);
            }
        }
    }
}
