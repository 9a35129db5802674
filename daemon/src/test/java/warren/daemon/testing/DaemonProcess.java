package warren.daemon.testing;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import warren.control.v1.Request;
import warren.control.v1.Status;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.cli.UpgradeMain;

/**
 * A daemon as a real process of this test's JVM and class path (what upgrade-in-place tests
 * need: the successor is started from the running process's own command line). Output goes to
 * {@code log}. {@link #close} sends SIGTERM to whichever process serves now and waits for it.
 */
public final class DaemonProcess implements AutoCloseable {
    public final String name;
    public final Path control;
    private final Process first;
    private long lastPid;

    public DaemonProcess(String name, Class<?> main, Path control, Path config, Path log) throws Exception {
        this(name, main, control, config, List.of(), List.of(),
                pb -> pb.redirectErrorStream(true).redirectOutput(log.toFile()), log);
    }

    /**
     * As above, with {@code wrapper} in front of the java command (e.g. {@code unshare -m sh -c
     * '...; exec "$@"' sh}: it must exec the command so that the pid stays the daemon's),
     * {@code jvmOptions} after "java", and {@code adjust} applied to the ProcessBuilder before
     * the start (environment, redirects); {@code log}, if not null, is shown when it does not start.
     */
    public DaemonProcess(String name, Class<?> main, Path control, Path config, List<String> wrapper,
            List<String> jvmOptions, java.util.function.Consumer<ProcessBuilder> adjust, Path log) throws Exception {
        this.name = name;
        this.control = control;
        List<String> cmd = new java.util.ArrayList<>(wrapper);
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        if (jvmOptions.stream().noneMatch(o -> o.startsWith("-Djava.io.tmpdir="))) {
            cmd.add(tmpOption());
        }
        cmd.addAll(jvmOptions);
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), main.getName(), "--control", control.toString(),
                "--config", config.toString()));
        ProcessBuilder pb = new ProcessBuilder(cmd);
        adjust.accept(pb);
        first = pb.start();
        lastPid = first.pid();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (!Files.exists(control)) {
            if (!first.isAlive() || System.nanoTime() > deadline) {
                throw new IllegalStateException(name + " did not start" + (log == null ? "" : ": " + Files.readString(log)));
            }
            Thread.sleep(20);
        }
    }

    /** The process started (the daemon itself, unless an upgrade replaced it). */
    public Process process() {
        return first;
    }

    /** The pid serving the control socket now (Status). */
    public long pid() throws Exception {
        try (ControlClient c = ControlClient.connect(control);
                Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                        .get(10, TimeUnit.SECONDS)) {
            lastPid = r.response().getStatus().getPid();
            return lastPid;
        }
    }

    /**
     * Process {@code pid}'s count of sockets, pipes, memfds and anon inodes
     * ({@link warren.fdpass.FdCount#of}) once the daemon has caught up with connections the test
     * just closed or a successor it just lost: the first sample equal to {@code expect}; with
     * {@code expect} < 0, the first that is unchanged 300 ms after the one before; else the last
     * sample after 10 s. The fd table has no event to wait on, so it is polled with a deadline.
     */
    public static int settledFdCount(long pid, int expect) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        int last = warren.fdpass.FdCount.of(pid);
        while (last != expect && System.nanoTime() < deadline) {
            Thread.sleep(300);
            int now = warren.fdpass.FdCount.of(pid);
            if (now == last && expect < 0) {
                return now;
            }
            last = now;
        }
        return last;
    }

    /** {@code ./warren upgrade NAME --control PATH [extra...]}; its exit status. */
    public int upgrade(String... extra) {
        String[] args = new String[3 + extra.length];
        args[0] = name;
        args[1] = "--control";
        args[2] = control.toString();
        System.arraycopy(extra, 0, args, 3, extra.length);
        return UpgradeMain.run(args);
    }

    /**
     * {@code restarts} upgrades by Restart (the restarter's code) and one by SIGHUP (what the
     * unit's reload sends), each of which must leave a new process serving; returns its pid.
     * Throws AssertionError naming the upgrade that did not happen.
     */
    public long upgradeRepeatedly(int restarts) throws Exception {
        long last = pid();
        for (int u = 1; u <= restarts; u++) {
            int rc = upgrade();
            long now = pid();
            if (rc != 0 || now == last) {
                throw new AssertionError("upgrade " + u + ": exit " + rc + ", pid " + last + " -> " + now);
            }
            last = now;
        }
        new ProcessBuilder("kill", "-HUP", Long.toString(last)).start().waitFor();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        long now = last;
        while (now == last && System.nanoTime() < deadline) {
            Thread.sleep(50);
            now = pid();
        }
        if (now == last) {
            throw new AssertionError("SIGHUP did not upgrade " + name + " (pid " + last + ")");
        }
        return now;
    }


    private static Path tmp;

    /**
     * {@code -Djava.io.tmpdir=DIR}: one private temporary directory for the daemons this test JVM
     * starts (their successors inherit it with the command line), removed when the JVM exits. So
     * {@link #handoffDirs} counts only this JVM's daemons' directories, not those of tests run at
     * the same time from another checkout.
     */
    public static synchronized String tmpOption() throws java.io.IOException {
        if (tmp == null) {
            Path dir = Files.createTempDirectory("warren-test-tmp-");
            Runtime.getRuntime().addShutdownHook(new Thread(() -> {
                try (var w = Files.walk(dir)) {
                    w.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
                } catch (java.io.IOException e) {
                    // best effort at exit
                }
            }));
            tmp = dir;
        }
        return "-Djava.io.tmpdir=" + tmp;
    }

    /** Private handoff directories left in the daemons' temporary directory (each upgrade must remove its own). */
    public static int handoffDirs() throws Exception {
        tmpOption();
        try (var s = Files.list(tmp)) {
            return (int) s.filter(p -> p.getFileName().toString().startsWith("warren-handoff-")).count();
        }
    }

    @Override
    public void close() throws Exception {
        new ProcessBuilder("kill", "-TERM", Long.toString(lastPid)).start().waitFor();
        ProcessHandle.of(lastPid).ifPresent(h -> {
            try {
                h.onExit().get(30, TimeUnit.SECONDS);
            } catch (Exception e) {
                h.destroyForcibly();
            }
        });
        first.destroyForcibly();
    }
}
