package warren.demo;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import warren.control.v1.Request;
import warren.control.v1.Restart;
import warren.control.v1.Restarted;
import warren.control.v1.Status;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;

/**
 * One daemon as its own process, started from this JVM's class path with a config written to
 * the demo's directory ({@code NAME.conf}, audit to {@code NAME-audit.jsonl}, output to
 * {@code NAME.log}). After an upgrade the serving process is no longer our child: it is known by
 * the pid Status or Restarted names, and stopped by that pid.
 */
final class DaemonRun implements AutoCloseable {
    final String name;
    final Path control;
    final Path audit;
    final Path log;
    private final Process first;
    private volatile long pid;

    /** Starts the process; {@link #awaitReady} waits for its control socket. */
    DaemonRun(String name, String mainClass, Path dir, String config) throws IOException {
        this.name = name;
        this.control = dir.resolve(name + ".sock");
        this.audit = dir.resolve(name + "-audit.jsonl");
        this.log = dir.resolve(name + ".log");
        Path conf = Files.writeString(dir.resolve(name + ".conf"), "audit.path = " + audit + "\n" + config);
        // C1 only and the serial collector: a JVM that starts (and starts its successor) on little CPU;
        // an upgrade's successor inherits these options with the rest of the command line
        first = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp", System.getProperty("java.class.path"), mainClass, "--control", control.toString(), "--config",
                conf.toString()).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        pid = first.pid();
    }

    /** Waits until the control socket answers; throws with the daemon's output if it exits or takes too long. */
    void awaitReady(int seconds) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        while (!Files.exists(control)) {
            if (!first.isAlive() || System.nanoTime() > deadline) {
                throw new IllegalStateException(name + " did not start:\n" + logText());
            }
            Thread.sleep(20);
        }
    }

    /** The pid serving the control socket now (asked with Status). */
    long pid() throws Exception {
        try (ControlClient c = ControlClient.connect(control);
                Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                        .get(10, TimeUnit.SECONDS)) {
            pid = r.response().getStatus().getPid();
            return pid;
        }
    }

    Map<String, Long> counters() throws Exception {
        try (ControlClient c = ControlClient.connect(control);
                Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                        .get(10, TimeUnit.SECONDS)) {
            return r.response().getStatus().getCountersMap();
        }
    }

    /** An upgrade in place (Restart: the daemon starts its successor from its own command line). */
    Restarted upgrade() throws Exception {
        try (ControlClient c = ControlClient.connect(control);
                Reply r = c.call(Request.newBuilder().setRestart(Restart.newBuilder().setTimeoutMs(30_000)), List.of())
                        .get(60, TimeUnit.SECONDS)) {
            if (!r.response().hasRestarted()) {
                throw new IllegalStateException(name + ": upgrade failed: " + r.response());
            }
            pid = r.response().getRestarted().getNewPid();
            return r.response().getRestarted();
        }
    }

    /** The last {@code n} lines of a log file. */
    static List<String> tail(Path file, int n) {
        try {
            List<String> all = Files.readAllLines(file);
            return all.subList(Math.max(0, all.size() - n), all.size());
        } catch (IOException e) {
            return List.of("(no log: " + e.getMessage() + ")");
        }
    }

    String logText() {
        try {
            return Files.readString(log);
        } catch (IOException e) {
            return "(no log: " + e.getMessage() + ")";
        }
    }

    /**
     * SIGTERM to the serving process, then waits for it (a daemon drains and exits); returns true
     * when it exited within the time. Idempotent.
     */
    boolean stop() {
        long p = pid;
        if (p <= 0) {
            return true;
        }
        pid = 0;
        // a successor being started (an upgrade under way when Ctrl-C came) is a child of the serving
        // process: noted while that one drains, ended after it
        java.util.Set<ProcessHandle> successors = new java.util.LinkedHashSet<>();
        boolean gone = ProcessHandle.of(p).map(h -> terminate(h, successors)).orElse(true);
        for (ProcessHandle s : successors) {
            terminate(s, new java.util.HashSet<>());
        }
        if (first.isAlive()) { // not upgraded, or a successor that failed: ours to end
            first.destroy();
            try {
                if (!first.waitFor(10, TimeUnit.SECONDS)) {
                    first.destroyForcibly();
                }
            } catch (InterruptedException e) {
                first.destroyForcibly();
            }
        }
        return gone;
    }

    /**
     * SIGTERM, up to 20 s for the exit (noting its descendants into {@code children} meanwhile),
     * then SIGKILL; true when it exited by itself.
     */
    private static boolean terminate(ProcessHandle h, java.util.Set<ProcessHandle> children) {
        h.descendants().forEach(children::add);
        if (!h.isAlive()) {
            return true;
        }
        h.destroy();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (h.isAlive()) {
            h.descendants().forEach(children::add);
            if (System.nanoTime() > deadline) {
                h.destroyForcibly();
                return false;
            }
            try {
                Thread.sleep(20);
            } catch (InterruptedException e) {
                h.destroyForcibly();
                Thread.currentThread().interrupt();
                return false;
            }
        }
        return true;
    }

    @Override
    public void close() {
        stop();
    }
}
