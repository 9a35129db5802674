package warren.demo;

import java.io.PrintStream;
import warren.control.v1.Restarted;

/** The upgrade step every part shares: a daemon replaced in place while a {@link Transfer} runs through it. */
final class Upgrades {
    private static final long MIB = 1 << 20;
    private static final long SOME = 256 << 10;

    private Upgrades() {}

    /**
     * Waits until the transfer moves, upgrades the daemon (Restart), waits until it moves again
     * through the new process, ends it and checks: a new pid serves and the old one is gone, bytes
     * flowed after the upgrade, SHA-256 of what came back equals that of what was sent.
     */
    static void run(PrintStream out, Checks checks, DaemonRun daemon, Transfer t) throws Exception {
        run(out, checks, daemon, t, null);
    }

    /** What a part looks at while the transfer is still live after the upgrade. */
    interface Step {
        void run() throws Exception;
    }

    /** As above; {@code afterUpgrade}, if not null, runs once the stream moved through the new process. */
    static void run(PrintStream out, Checks checks, DaemonRun daemon, Transfer t, Step afterUpgrade) throws Exception {
        String name = daemon.name;
        checks.check(t.awaitMore(SOME, 20), "the transfer runs through " + name + " (256 KiB echoed)");
        long before = daemon.pid();
        long atStart = t.received();
        long t0 = System.nanoTime();
        Restarted r = daemon.upgrade();
        double ms = (System.nanoTime() - t0) / 1e6;
        long during = t.received() - atStart;
        long after = daemon.pid();
        boolean oldGone = awaitGone(before, 20);
        String versions = r.getOldVersion().equals(r.getNewVersion()) ? "same build"
                : r.getOldVersion() + " -> " + r.getNewVersion();
        out.printf("upgrade   pid %d -> %d in %.0f ms (%s): tasks paused %.1f ms, %d fds handed over;"
                + " %.1f MiB echoed meanwhile%n", before, after, ms, versions, r.getPauseUs() / 1000.0, r.getFds(),
                during / (double) MIB);
        boolean moved = t.awaitMore(SOME, 20);
        if (afterUpgrade != null) {
            afterUpgrade.run();
        }
        boolean same = t.finish(60);
        out.println("transfer  " + t.describe());
        checks.check(after != before && after == r.getNewPid() && oldGone,
                "a new process serves (pid " + before + " -> " + after + "), the old one exited");
        checks.check(moved, "the same connection carried on through the new process (256 KiB more echoed)");
        checks.check(same, "SHA-256 of what came back equals SHA-256 of what was sent");
    }

    private static boolean awaitGone(long pid, int seconds) throws InterruptedException {
        long deadline = System.nanoTime() + seconds * 1_000_000_000L;
        while (ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false)) {
            if (System.nanoTime() > deadline) {
                return false;
            }
            Thread.sleep(20);
        }
        return true;
    }
}
