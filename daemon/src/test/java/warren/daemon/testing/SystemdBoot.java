package warren.daemon.testing;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A real systemd (PID 1 of private pid, mount, UTS, IPC and network namespaces) for tests: its
 * /run, /var/log and /var/lib are private tmpfs, its /etc/passwd and /etc/group are copies with a
 * {@code warren} user and group, and it boots only an empty target (nothing of the host's units
 * starts). With a package staged ({@link #stagePackage}, the dist module's tests) the .deb's files
 * are in place (/usr/lib/warren, /usr/bin/warren, /lib/systemd/system, /etc/warren), journald runs
 * and {@link #configurePackage} runs its postinst (which creates the warren user: /etc is then an
 * overlay, not the copies). Test drop-ins are written to its /run/systemd/system before boot. {@link #close} kills it (and
 * so everything in its pid namespace) and removes the staging directory.
 *
 * <p>Inside, the staging directory is seen at {@link #INSIDE} (bind-mounted through an fd opened
 * before the private /tmp, /run, ... hide it), so the checkout may live anywhere, /tmp included, and
 * units with PrivateTmp= still see it. Paths written into units and configs are
 * {@link #inside inside} paths; the test itself uses the stage's own paths (the same inodes).
 */
public final class SystemdBoot implements AutoCloseable {
    /** Where the staging directory is seen inside the booted system. */
    public static final Path INSIDE = Path.of("/run/warren-stage");

    public final Path stage;
    private final Process unshare;
    private final long pid;

    /** Is there a systemd and the right to boot it here? */
    public static boolean available() {
        return Files.isExecutable(Path.of("/lib/systemd/systemd")) && Files.isExecutable(Path.of("/usr/bin/unshare"))
                && warren.fdpass.libc.Native.getuid() == 0;
    }

    /**
     * @param stage a fresh directory (not under /tmp) holding {@code units/} (unit files and
     *     drop-in directories to install) and whatever the units refer to
     */
    public SystemdBoot(Path stage) throws Exception {
        this.stage = stage;
        Files.setPosixFilePermissions(stage, PosixFilePermissions.fromString("rwxr-xr-x"));
        boolean pkg = Files.isDirectory(stage.resolve("pkg"));
        String passwd = Files.readString(Path.of("/etc/passwd")) + "warren:x:64123:64123:warren:/nonexistent:/usr/sbin/nologin\n";
        String group = Files.readString(Path.of("/etc/group")) + "warren:x:64123:\n";
        Files.writeString(stage.resolve("passwd"), passwd);
        Files.writeString(stage.resolve("group"), group);
        Path boot = stage.resolve("boot.sh");
        Files.writeString(boot, "#!/bin/bash\nset -e\n"
                // the stage, held by an fd: the tmpfs mounts below may hide its path (a checkout under /tmp)
                + "exec 3< " + stage + "\n"
                // systemd as PID 1 writes global sysctls (fs.file-max at boot; systemd-sysctl.service
                // fs.protected_*): /proc/sys is read-only in here, so it cannot
                + "mount --bind /proc/sys /proc/sys\n"
                + "mount -o remount,bind,ro /proc/sys\n"
                + "mkdir -p " + stage.resolve("netns") + "\n"
                + "if [ -d /run/netns ]; then mount --rbind /run/netns " + stage.resolve("netns") + "; fi\n"
                // its own /run, /tmp (systemd-tmpfiles would empty the host's), logs and state
                + "for d in /run /tmp /var/tmp /var/log /var/lib; do mount -t tmpfs -o mode=755 tmpfs $d; done\n"
                + "chmod 1777 /tmp /var/tmp\n"
                + "mkdir -p " + INSIDE + "\n"
                + "mount --no-canonicalize --rbind /proc/self/fd/3 " + INSIDE + "\n"
                + "exec 3<&-\n"
                + (pkg ? installedPackage() : "")
                // no generators (fstab, getty, sysv...): only the units installed here
                + "mount -t tmpfs tmpfs /usr/lib/systemd/system-generators\n"
                // /dev/net/tun as udev's default rule leaves it (0666); this machine has no udev (0600)
                + "mount -t tmpfs tmpfs /dev/net\n"
                // with the package: 0600 as on this machine, the package's tmpfiles ACL must grant it
                + "mknod -m " + (pkg ? "0600" : "0666") + " /dev/net/tun c 10 200\n"
                + (pkg ? "" : "mount --bind " + INSIDE.resolve("passwd") + " /etc/passwd\n"
                        + "mount --bind " + INSIDE.resolve("group") + " /etc/group\n")
                + "mkdir -p /run/systemd/system\n"
                // every unit the host's targets pull in is masked: nothing of the host's starts
                + "for f in /usr/lib/systemd/system/*.wants/* /etc/systemd/system/*.wants/*; do"
                + " ln -sf /dev/null /run/systemd/system/$(basename $f); done\n"
                + "for u in systemd-sysctl.service systemd-tmpfiles-setup.service systemd-tmpfiles-setup-dev.service"
                + " systemd-tmpfiles-clean.timer systemd-tmpfiles-clean.service systemd-timesyncd.service"
                + " systemd-modules-load.service systemd-binfmt.service systemd-random-seed.service"
                + " systemd-remount-fs.service systemd-udevd.service systemd-udev-trigger.service ldconfig.service"
                + " systemd-pstore.service systemd-sysusers.service systemd-firstboot.service; do"
                + " ln -sf /dev/null /run/systemd/system/$u; done\n"
                // with the package, journald runs: the units' output goes where it goes when shipped
                + (pkg ? "rm -f /run/systemd/system/systemd-journald.socket /run/systemd/system/systemd-journald-dev-log.socket"
                        + " /run/systemd/system/systemd-journald.service\n" : "")
                + "mkdir -p " + INSIDE.resolve("units") + "\n"
                + "cp -r " + INSIDE.resolve("units") + "/. /run/systemd/system/\n"
                + "printf '[Unit]\\nDescription=warren test boot\\nDefaultDependencies=no\\n' > /run/systemd/system/warren-test.target\n"
                + "exec env container=other /lib/systemd/systemd --system --unit=warren-test.target\n");
        Files.setPosixFilePermissions(boot, PosixFilePermissions.fromString("rwxr-xr-x"));
        unshare = new ProcessBuilder("unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--net", "--mount-proc",
                "--propagation", "private", boot.toString()).redirectErrorStream(true)
                .redirectOutput(stage.resolve("systemd.log").toFile()).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        long found = -1;
        while (found < 0 && System.nanoTime() < deadline) {
            found = unshare.children().findFirst().map(ProcessHandle::pid).orElse(-1L);
            Thread.sleep(50);
        }
        pid = found;
        if (pid < 0) {
            close();
            throw new IllegalStateException("systemd did not start: " + Files.readString(stage.resolve("systemd.log")));
        }
        String state = "";
        while (System.nanoTime() < deadline) {
            state = systemctl("is-system-running").strip();
            if (state.equals("running") || state.equals("degraded")) {
                return;
            }
            Thread.sleep(100);
        }
        close();
        throw new IllegalStateException("systemd is " + state + ": " + Files.readString(stage.resolve("systemd.log")));
    }

    /**
     * The boot's part of installing the package unpacked by {@link #stagePackage}, what dpkg does
     * before the postinst: its /usr (the jars, /usr/bin/warren, the units in /lib/systemd/system =
     * /usr/lib/systemd/system, the tmpfiles snippet) over the host's as a read-only overlay, and
     * /etc/warren (the conffiles) in a writable overlay of /etc whose changes (the postinst's
     * warren user and group, a test's config) live in a tmpfs: the host's /usr and /etc stay as
     * they are.
     */
    private static String installedPackage() {
        Path pkg = INSIDE.resolve("pkg");
        return "mount -t tmpfs -o mode=755 tmpfs " + pkg.resolve("rw") + "\n"
                + "mkdir -p " + pkg.resolve("rw/etc") + " " + pkg.resolve("rw/etc.work") + "\n"
                + "mount -t overlay overlay -o lowerdir=" + pkg.resolve("root/usr") + ":/usr /usr\n"
                + "mount -t overlay overlay -o lowerdir=/etc,upperdir=" + pkg.resolve("rw/etc") + ",workdir="
                + pkg.resolve("rw/etc.work") + " /etc\n"
                + "cp -a " + pkg.resolve("root/etc/warren") + " /etc/warren\n";
    }

    /** The package this module built (target/warren_*_all.deb), or a failed assertion. */
    public static Path builtPackage() throws IOException {
        try (var s = Files.newDirectoryStream(Path.of("target"), "warren_*_all.deb")) {
            for (Path p : s) {
                return p.toAbsolutePath();
            }
        }
        throw new AssertionError("no target/warren_*_all.deb: the dist module builds it in process-test-resources");
    }

    /**
     * Unpacks {@code deb} under {@code stage}/pkg: its files ({@code dpkg-deb -x}; /lib merged
     * into /usr/lib as dpkg does on this merged-/usr system) and its maintainer scripts
     * ({@code dpkg-deb -e}). The boot then shows them in place; {@link #configurePackage} runs the
     * postinst.
     */
    public static void stagePackage(Path stage, Path deb) throws IOException, InterruptedException {
        Path pkg = Files.createDirectories(stage.resolve("pkg"));
        Files.createDirectories(pkg.resolve("rw"));
        for (List<String> cmd : List.of(List.of("dpkg-deb", "-x", deb.toString(), pkg.resolve("root").toString()),
                List.of("dpkg-deb", "-e", deb.toString(), pkg.resolve("DEBIAN").toString()))) {
            Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
            String out = new String(p.getInputStream().readAllBytes());
            if (p.waitFor() != 0) {
                throw new IOException(String.join(" ", cmd) + ": " + out);
            }
        }
        Path lib = pkg.resolve("root/lib");
        if (Files.isDirectory(lib) && Files.isSymbolicLink(Path.of("/lib"))) {
            try (var walk = Files.walk(lib)) {
                for (Path p : (Iterable<Path>) walk::iterator) {
                    Path t = pkg.resolve("root/usr/lib").resolve(lib.relativize(p).toString());
                    if (Files.isDirectory(p)) {
                        Files.createDirectories(t);
                    } else {
                        Files.move(p, t);
                    }
                }
            }
        }
    }

    /**
     * {@code postinst configure} of the staged package, inside, with systemd running (the warren
     * user and group, the /dev/net/tun ACL, daemon-reload); its output, or a failed assertion.
     */
    public String configurePackage() throws Exception {
        String out = exec("sh", "-c", "sh " + INSIDE.resolve("pkg/DEBIAN/postinst") + " configure; echo status=$?");
        if (!out.strip().endsWith("status=0")) {
            throw new AssertionError("postinst configure failed: " + out);
        }
        return out;
    }

    /** As an operator editing the shipped /etc/warren/DAEMON.conf: appends {@code lines} to it. */
    public void appendConfig(String daemon, String lines) throws Exception {
        Path add = Files.writeString(stage.resolve(daemon + ".conf.add"), lines);
        exec("sh", "-c", "cat " + inside(stage, add) + " >> /etc/warren/" + daemon + ".conf");
    }

    /**
     * A path inside the booted system as this (outer) process reaches it, through its PID 1's root
     * (e.g. the shipped control socket /run/warren/splicer.sock).
     */
    public Path path(String inside) {
        return Path.of("/proc", Long.toString(pid), "root", inside.substring(1));
    }

    /**
     * Where a named network namespace of the host (/run/netns/NAME) is seen inside (its /run is
     * private).
     */
    public Path netns(String name) {
        return inside(stage, stage.resolve("netns").resolve(name));
    }

    /** The path inside the booted system of {@code path}, a path under {@code stage}. */
    public static Path inside(Path stage, Path path) {
        Path abs = stage.toAbsolutePath();
        return INSIDE.resolve(abs.relativize(path.toAbsolutePath()).toString());
    }

    /**
     * {@code kill -9} of the unit's main process, then waits (60 s at most) until systemd has
     * restarted it and it is active again; returns the new main pid (inside).
     */
    public String killMainAndAwaitRestart(String unit) throws Exception {
        String before = show(unit, "MainPID");
        exec("kill", "-KILL", before);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        String now = before;
        while ((now.equals(before) || now.equals("0") || !show(unit, "ActiveState").equals("active"))
                && System.nanoTime() < deadline) {
            Thread.sleep(100);
            now = show(unit, "MainPID");
        }
        return now;
    }

    /** The service's status and output, for failure messages. */
    public String report(String daemon) throws Exception {
        if (Files.isDirectory(stage.resolve("pkg"))) {
            return "\n--- status:\n" + systemctl("status", "warren-" + daemon + ".service") + "\n--- journal:\n"
                    + journal("warren-" + daemon + ".service");
        }
        Path out = stage.resolve(daemon + ".out");
        return "\n--- status:\n" + systemctl("status", "warren-" + daemon + ".service") + "\n--- output:\n"
                + (Files.exists(out) ? Files.readString(out) : "");
    }

    /** Removes a staging directory. */
    public static void deleteTree(Path dir) {
        if (Boolean.getBoolean("warren.keepStage")) {
            return; // -Dwarren.keepStage=true: look at what the units did
        }
        try (var s = Files.walk(dir)) {
            s.sorted(java.util.Comparator.reverseOrder()).forEach(q -> q.toFile().delete());
        } catch (IOException e) {
            System.err.println("cannot remove " + dir + ": " + e.getMessage());
        }
    }

    /** systemctl ARGS... inside; its output (stdout and stderr). */
    public String systemctl(String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of("nsenter", "-t", Long.toString(pid), "-m", "-p", "-u", "-i", "-n",
                "systemctl", "--no-pager"));
        cmd.addAll(List.of(args));
        return run(cmd);
    }

    /** A command inside the namespaces; its output. */
    public String exec(String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of("nsenter", "-t", Long.toString(pid), "-m", "-p", "-u", "-i", "-n"));
        cmd.addAll(List.of(args));
        return run(cmd);
    }

    /** A unit property, e.g. MainPID (as seen inside: pids of the inner pid namespace). */
    public String show(String unit, String property) throws Exception {
        return systemctl("show", "-p", property, "--value", unit).strip();
    }

    private static String run(List<String> cmd) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        if (!p.waitFor(120, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new IllegalStateException(String.join(" ", cmd) + ": timed out");
        }
        return out;
    }

    /** The journal of a unit (systemd's own log lines and the service's output). */
    public String journal(String unit) throws Exception {
        return exec("journalctl", "--no-pager", "-o", "cat", "-u", unit);
    }

    @Override
    public void close() throws Exception {
        if (pid > 0) {
            new ProcessBuilder("kill", "-KILL", Long.toString(pid)).start().waitFor(); // PID 1 of its namespace: all go
        }
        unshare.destroyForcibly();
        unshare.waitFor(30, TimeUnit.SECONDS);
    }
}
