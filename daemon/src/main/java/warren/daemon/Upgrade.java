package warren.daemon;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import warren.control.v1.Error;
import warren.control.v1.Response;
import warren.control.v1.Restart;
import warren.control.v1.Restarted;
import warren.control.v1.UpgradeProgress;
import warren.daemon.cli.DaemonOptions;
import warren.daemon.config.Config;
import warren.daemon.control.Call;
import warren.daemon.handoff.HandoffException;
import warren.daemon.handoff.HandoffItem;
import warren.daemon.handoff.HandoffReceiver;
import warren.daemon.handoff.HandoffSender;
import warren.daemon.handoff.Handoffable;
import warren.fdpass.Fd;
import warren.fdpass.SeqpacketListener;
import warren.fdpass.SeqpacketSocket;
import warren.fdpass.libc.Native;
import warren.handoff.v1.ControlState;

/**
 * Upgrade in place, both sides (docs/upgrade.md). The old process, on {@code Restart}: binds a
 * private handoff socket (0600 in a fresh 0700 directory), starts the new process (its own command
 * line or the one asked for) with {@code --handoff PATH}, and on a thread of its own runs
 * {@link HandoffSender} with the control server's and the handler's items, posting pause and
 * resume to the loop. On commit it answers {@code Restarted}, forgets everything and stops; on any
 * failure the new process is killed, this one resumes and the answer is an Error with the reason.
 * The new process ({@link #successorMain}) connects to PATH, rebuilds the daemon from the items
 * before its loop runs, and serves after the commit.
 */
final class Upgrade {
    /** The handoff state layout all daemons write now (the handler checks its own on adopt). */
    static final List<Integer> STATE_VERSIONS = List.of(1);
    private static final long DEFAULT_TIMEOUT_MS = 10_000;
    /**
     * The first step's default, from the new process's start to its connection: a JVM starting
     * and warming up (its rehearsal handoff) while the old process serves, so waiting longer costs
     * nothing but the time to notice a successor that hangs. 10 s was not enough on 2 loaded cores
     * (load 12: the soak saw a SIGHUP's successor miss it; one right after a kill -9 recovery took
     * 3.6 s just to build its daemon). An explicit timeout applies to every step as given.
     */
    private static final long DEFAULT_START_TIMEOUT_MS = 30_000;
    /** Synthetic tasks the warm-up adopts, pauses and exports. */
    private static final int WARM_UP_TASKS = 2000;
    private static final java.util.concurrent.atomic.AtomicLong WARM_UP_FDS = new java.util.concurrent.atomic.AtomicLong();

    /**
     * Fds the background warm-up holds right now (its synthetic tasks' dup'd sockets), so that a
     * handler measuring its fd baseline at that moment (Splicer's fd reserve) can leave them out.
     */
    public static long warmUpFds() {
        return WARM_UP_FDS.get();
    }

    private Upgrade() {}

    static void start(Daemon d, Call call, Runnable done) {
        long t0 = System.nanoTime();
        if (!(d.handler() instanceof Handoffable h)) {
            fail(call, Error.Code.UNKNOWN_REQUEST, d.name() + " cannot be upgraded in place");
            done.run();
            return;
        }
        Restart r = call != null ? call.request().getRestart() : Restart.getDefaultInstance(); // null: SIGHUP
        if (r.getCommandCount() > 0 && !d.config().get(Daemon.UPGRADE_ALLOW_COMMAND)) {
            // the control server refuses these first (Authorizer); nothing is ever spawned from one
            fail(call, Error.Code.PERMISSION_DENIED, "restart with a command is refused: upgrade.allow_command = false");
            done.run();
            return;
        }
        long timeout = r.getTimeoutMs() == 0 ? DEFAULT_TIMEOUT_MS : r.getTimeoutMs();
        long startTimeout = r.getTimeoutMs() == 0 ? DEFAULT_START_TIMEOUT_MS : r.getTimeoutMs();
        // off the loop from here: starting a process (the first in this JVM runs cold code; the child
        // closes every inherited fd before its exec, 16,000 of them at 8,000 pairs, while the caller
        // waits) held this loop's tasks for tens of ms, seen as a traffic gap at the Restart itself
        Thread t = new Thread(() -> spawnAndRun(d, h, call, r, startTimeout, timeout, done, t0), "upgrade");
        t.setDaemon(true);
        try {
            t.start();
        } catch (Throwable e) { // no thread to be had (out of memory or of tasks): answered, not stuck
            fail(call, Error.Code.INTERNAL, "upgrade failed: cannot start its thread: " + e);
            done.run();
        }
    }

    private static void spawnAndRun(Daemon d, Handoffable h, Call call, Restart r, long startTimeout, long timeout,
            Runnable done, long t0) {
        Path dir = null;
        SeqpacketListener hl = null;
        Child child;
        List<String> cmd;
        try {
            if (d.stopRequested()) { // a stop came between the Restart and this thread
                fail(call, Error.Code.SHUTTING_DOWN, "shutting down; no upgrade");
                done.run();
                return;
            }
            dir = Files.createTempDirectory("warren-handoff-");
            Path sock = dir.resolve("h.sock");
            hl = SeqpacketListener.bind(sock, 0600, -1, -1, 4);
            cmd = new ArrayList<>(r.getCommandCount() > 0 ? r.getCommandList() : ownCommand());
            cmd.add("--handoff");
            cmd.add(sock.toString());
            child = spawn(cmd, dir, d.notifier().enabled());
        } catch (Throwable e) {
            if (hl != null) {
                hl.close();
            }
            deleteQuietly(dir);
            fail(call, Error.Code.INTERNAL, "upgrade failed: cannot start the new process: " + e.getMessage());
            done.run();
            return;
        }
        boolean stopping = d.stopRequested(); // the stop came while it started: it never gets the handoff
        Throwable broke = null;
        if (!stopping) {
            try {
                Log.info("upgrade: started pid " + child.pid() + " (" + String.join(" ", cmd) + ")");
                progress(call, t0, "started", "pid " + child.pid());
                d.notifier().reloading("upgrading in place: new process " + child.pid());
            } catch (Throwable e) {
                broke = e;
            }
        }
        if (stopping || broke != null) { // answered and cleaned up: never a call left waiting
            String status = child.kill();
            hl.close();
            deleteQuietly(dir);
            fail(call, stopping ? Error.Code.SHUTTING_DOWN : Error.Code.INTERNAL,
                    (stopping ? "shutting down; no upgrade" : "upgrade failed: " + broke) + status);
            done.run();
            return;
        }
        run(d, h, call, hl, dir, child, startTimeout, timeout, done, t0);
    }

    private static void run(Daemon d, Handoffable h, Call call, SeqpacketListener hl, Path dir, Child child,
            long startTimeout, long timeout, Runnable done, long t0) {
        SeqpacketSocket s = null;
        try {
            s = acceptChild(hl, child, startTimeout);
            // connected: the path has done its job; removed now so that no kill -9 of either side leaves it
            hl.close();
            deleteQuietly(dir);
            HandoffSender.Report rep = HandoffSender.hand(s, d.name(), source(d, h, call), timeout,
                    (phase, detail) -> progress(call, t0, phase, detail));
            // clean up before the loop stops: the JVM exits right after, without waiting for this thread
            s.close();
            hl.close();
            deleteQuietly(dir);
            Log.info("upgrade: handoff " + rep.timings());
            Log.notice("upgrade: pid " + child.pid() + " took over " + rep.items() + " items and " + rep.fds()
                    + " fds after a pause of " + rep.pausedNanos() / 1000 + " us (and " + rep.preCopiedFds()
                    + " fds pre-copied before it)");
            // under systemd: the successor is the main process now, and systemd must know before this one exits
            if (d.notifier().mainPid(child.pid(), "handed over to pid " + child.pid()) && !d.notifier().barrier(5000)) {
                Log.warn("upgrade: systemd did not confirm MAINPID=" + child.pid() + " within 5 s");
            }
            d.metricsHandedOver(); // before any loop forgets its tasks: scrapes from now on get 503
            d.loops().onEach((i, l) -> {
                if (i > 0) {
                    h.abandonLoop(i);
                }
                return null;
            }, LOOP_TIMEOUT_MS);
            onLoop(d, () -> {
                if (call != null) {
                    call.reply(Response.newBuilder().setRestarted(Restarted.newBuilder().setOldPid(Native.getpid())
                            .setNewPid(child.pid()).setItems(rep.items()).setFds(rep.fds() + rep.preCopiedFds())
                            .setPauseUs(rep.pausedNanos() / 1000).setOldVersion(d.spec().version())
                            .setNewVersion(rep.successorVersion())));
                }
                h.abandonLoop(0);
                d.server().abandonAfterHandoff();
                d.handedOver = true;
                d.loops().stop();
                return null;
            });
        } catch (Exception e) {
            String status = child.kill();
            String why = e instanceof HandoffException ? e.getMessage() : e.toString();
            if (!why.contains("exited with status")) {
                why += status;
            }
            Log.warn("upgrade failed, carrying on: " + why);
            d.notifier().ready("serving (an upgrade failed: " + why + ")");
            fail(call, Error.Code.INTERNAL, "upgrade failed: " + why);
            done.run();
        } finally {
            if (s != null) {
                s.close();
            }
            hl.close();
            deleteQuietly(dir);
        }
    }

    /** The new process: our child, or (under systemd) the service manager's. */
    private static final class Child {
        final Process proc;          // null when detached
        final ProcessHandle handle;

        Child(Process proc, ProcessHandle handle) {
            this.proc = proc;
            this.handle = handle;
        }

        long pid() {
            return handle.pid();
        }

        boolean isAlive() {
            return handle.isAlive();
        }

        String exitStatus() {
            return proc != null && !proc.isAlive() ? " with status " + proc.exitValue() : "";
        }

        /** Kills it and whatever it started; returns " (... status N)" when known. */
        String kill() {
            handle.descendants().forEach(ProcessHandle::destroyForcibly); // a wrapper's children too
            handle.destroyForcibly();
            try {
                handle.onExit().get(5, TimeUnit.SECONDS);
            } catch (Exception e) {
                return "";
            }
            String st = exitStatus();
            return st.isEmpty() ? "" : " (the new process exited" + st + ")";
        }
    }

    /**
     * Starts the new process. Under systemd it is detached through a shell that exits at once, so
     * that it is the service manager's child when the old process says MAINPID=: systemd then
     * watches its exit itself (a main pid that is not its child is "alien", and on the legacy
     * cgroup hierarchy in a container systemd stops an alien main process with SIGKILL at once).
     */
    private static Child spawn(List<String> cmd, Path dir, boolean detach) throws Exception {
        if (!detach) {
            Process p = new ProcessBuilder(cmd).inheritIO().start();
            return new Child(p, p.toHandle());
        }
        Path pidFile = dir.resolve("pid");
        List<String> sh = new ArrayList<>(List.of("/bin/sh", "-c", "\"$@\" & echo $! > \"$0\"", pidFile.toString()));
        sh.addAll(cmd);
        Process wrapper = new ProcessBuilder(sh).inheritIO().start();
        if (!wrapper.waitFor(10, TimeUnit.SECONDS) || wrapper.exitValue() != 0) {
            wrapper.destroyForcibly();
            throw new IllegalStateException("/bin/sh could not start it");
        }
        long pid = Long.parseLong(Files.readString(pidFile).strip());
        ProcessHandle h = ProcessHandle.of(pid).orElseThrow(() -> new IllegalStateException("pid " + pid + " exited at once"));
        return new Child(null, h);
    }

    private static HandoffSender.Source source(Daemon d, Handoffable h, Call call) {
        return new HandoffSender.Source() {
            @Override
            public int stateVersion() {
                return h.stateVersion();
            }

            @Override
            public List<HandoffItem> pause() throws Exception {
                long t0 = System.nanoTime();
                List<HandoffItem> items = new ArrayList<>();
                try {
                    // A. loop 0: no request is read from now on (so no new pair and no Cancel reaches a loop)
                    onLoop(d, () -> {
                        d.tracer().endAll("upgrade"); // a trace does not move: its TraceEnded goes out before the pause
                        d.server().pauseForHandoff(call);
                        return null;
                    });
                    long t1 = System.nanoTime();
                    // B. every loop: the handler's part stops moving; what ended before is posted to loop 0 already
                    d.loops().onEach((i, l) -> {
                        h.pauseLoop(i);
                        return null;
                    }, LOOP_TIMEOUT_MS);
                    long t2 = System.nanoTime();
                    // C. loop 0, in one go: those answers sent (checked again), the control server, loop 0's part
                    items.addAll(onLoop(d, () -> {
                        d.server().pauseForHandoff(call);
                        List<HandoffItem> first = new ArrayList<>();
                        first.add(d.server().export("control"));
                        first.addAll(h.exportLoop(0, d.server()::callRef));
                        return first;
                    }));
                    long t3 = System.nanoTime();
                    // D. the other loops' parts (the call refs were fixed in C)
                    for (List<HandoffItem> part : d.loops().onEach((i, l) -> i == 0 ? List.<HandoffItem>of()
                            : h.exportLoop(i, d.server()::callRef), LOOP_TIMEOUT_MS)) {
                        items.addAll(part);
                    }
                    Log.info(String.format("upgrade: control paused after %.1f ms; %d loops paused in %.1f ms; control"
                            + " and loop 0 exported in %.1f ms, the other loops in %.1f ms", (t1 - t0) / 1e6,
                            d.loops().size(), (t2 - t1) / 1e6, (t3 - t2) / 1e6, (System.nanoTime() - t3) / 1e6));
                    return items;
                } catch (Exception e) {
                    resumeLoops(d, h);
                    throw e;
                }
            }

            @Override
            public void resume() {
                resumeLoops(d, h);
            }

            private boolean listenerCopied;
            /** What the successor takes (decided at the first chunk): the handler's tasks; anything at all. */
            private boolean handlerCopied;
            private boolean nothing;

            /**
             * While serving: first the control listener (so the successor builds its daemon now,
             * not in the pause), then each loop's next share of the handler's long-lived tasks;
             * only what the successor takes ({@code takes}: its hello's pre_copies). Without the
             * listener nothing is copied (the rest needs the daemon built on it); calls and the
             * handler's tasks each go whole at the pause if not taken (a handler's items all or none).
             */
            @Override
            public List<HandoffItem> preCopy(int maxFds, java.util.function.Predicate<String> takes) throws Exception {
                List<HandoffItem> items = new ArrayList<>();
                if (!listenerCopied) {
                    listenerCopied = true;
                    nothing = !takes.test(LISTENER_ITEM);
                    boolean calls = !nothing && takes.test(CALLS_ITEM);
                    handlerCopied = !nothing && h.preCopies() && h.preCopyItems().stream().allMatch(takes);
                    List<String> left = new ArrayList<>();
                    if (!nothing && !calls) {
                        left.add(CALLS_ITEM);
                    }
                    if (!nothing && h.preCopies() && !handlerCopied) {
                        left.addAll(h.preCopyItems());
                    }
                    if (nothing) {
                        Log.info("upgrade: the successor does not pre-adopt " + LISTENER_ITEM
                                + ": nothing is pre-copied, everything goes whole in the pause");
                    } else if (!left.isEmpty()) {
                        Log.info("upgrade: the successor does not pre-adopt all of " + left + ": those go whole in the pause");
                    }
                    if (nothing) {
                        return List.of();
                    }
                    items.addAll(onLoop(d, () -> {
                        HandoffItem l = d.server().exportListener(LISTENER_ITEM);
                        return calls ? List.of(l, d.server().preCopyCalls(CALLS_ITEM)) : List.of(l);
                    }));
                }
                if (nothing || !handlerCopied) {
                    return items;
                }
                int share = Math.max(2, maxFds / d.loops().size());
                java.util.concurrent.atomic.AtomicReference<Exception> failed = new java.util.concurrent.atomic.AtomicReference<>();
                try {
                    for (List<HandoffItem> part : d.loops().onEach((i, l) -> {
                        try {
                            return h.preCopyLoop(i, d.server()::taskRef, share);
                        } catch (Exception e) { // the other loops' duplicates are closed below, not lost
                            failed.compareAndSet(null, e);
                            return List.<HandoffItem>of();
                        }
                    }, LOOP_TIMEOUT_MS)) {
                        items.addAll(part);
                    }
                } catch (Exception e) {
                    failed.compareAndSet(null, e);
                }
                if (failed.get() != null) {
                    for (HandoffItem it : items) {
                        Fd.closeAll(it.fds());
                    }
                    throw failed.get();
                }
                return items;
            }

            @Override
            public void preCopyAborted() {
                try {
                    onLoop(d, () -> {
                        d.server().forgetCopiedCalls();
                        return null;
                    });
                } catch (Exception e) {
                    Log.error("upgrade: forgetting the pre-copied calls failed", e);
                }
                try {
                    d.loops().onEach((i, l) -> {
                        h.preCopyAbortedLoop(i);
                        return null;
                    }, LOOP_TIMEOUT_MS);
                } catch (Exception e) {
                    Log.error("upgrade: forgetting a given-up pre-copy failed", e);
                }
            }
        };
    }

    /** The pre-copy's first item: the control listener alone (ControlServer.exportListener). */
    static final String LISTENER_ITEM = "control.listener";
    /** The pre-copy's second item: every call with a task, no fds (ControlServer.preCopyCalls). */
    static final String CALLS_ITEM = "control.calls";

    /** After a failed handoff: loops 1..N-1 carry on, then loop 0 with the control server. */
    private static void resumeLoops(Daemon d, Handoffable h) {
        try {
            d.loops().onEach((i, l) -> {
                if (i > 0) {
                    h.resumeLoop(i);
                }
                return null;
            }, LOOP_TIMEOUT_MS);
        } catch (Exception e) {
            Log.error("upgrade: resuming the loops after a failed handoff failed", e);
        }
        try {
            onLoop(d, () -> {
                h.resumeLoop(0);
                d.server().resumeAfterHandoff();
                return null;
            });
        } catch (Exception e) {
            Log.error("upgrade: resuming after a failed handoff failed", e);
        }
    }

    private static SeqpacketSocket acceptChild(SeqpacketListener hl, Child child, long timeoutMs) throws Exception {
        long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
        int uid = Native.getuid();
        while (true) {
            SeqpacketSocket c = hl.accept();
            if (c != null) {
                if (c.peer().uid() != uid) {
                    Log.warn("upgrade: refused a handoff connection from " + c.peer() + " (not uid " + uid + ")");
                    c.close();
                    continue;
                }
                return c;
            }
            if (!child.isAlive()) {
                throw new HandoffException(HandoffException.Reason.CLOSED,
                        "the new process exited" + child.exitStatus() + " before it connected");
            }
            if (System.nanoTime() > deadline) {
                throw new HandoffException(HandoffException.Reason.TIMEOUT,
                        "the new process did not connect within " + timeoutMs + " ms");
            }
            Native.pollOne(hl.fd().get(), Native.POLLIN, 50);
        }
    }

    /** This JVM's command line without a previous {@code --handoff PATH}. */
    private static List<String> ownCommand() {
        ProcessHandle.Info info = ProcessHandle.current().info();
        List<String> cmd = new ArrayList<>();
        cmd.add(info.command().orElseThrow(() -> new IllegalStateException("own command line unknown")));
        String[] args = info.arguments().orElse(new String[0]);
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--handoff")) {
                i++;
            } else if (!args[i].startsWith("--handoff=")) {
                cmd.add(args[i]);
            }
        }
        return cmd;
    }

    private static final long LOOP_TIMEOUT_MS = 60_000;

    private static <T> T onLoop(Daemon d, java.util.concurrent.Callable<T> c) throws Exception {
        return d.loop().call(c, 60_000);
    }

    /**
     * One phase of the upgrade, as a non-final UpgradeProgress to the restarter (in order with
     * the final answer: both go through the loop), or a log line for a SIGHUP upgrade. Any thread.
     */
    private static void progress(Call call, long t0, String phase, String detail) {
        if (call == null) {
            Log.info("SIGHUP upgrade: " + phase + ": " + detail);
            return;
        }
        call.sendNonFinal(Response.newBuilder().setUpgradeProgress(UpgradeProgress.newBuilder().setPhase(phase)
                .setDetail(detail).setElapsedUs((System.nanoTime() - t0) / 1000)));
    }

    /** Answers the restarter, or only logs for a SIGHUP upgrade (no call). */
    private static void fail(Call call, Error.Code code, String why) {
        if (call != null) {
            call.fail(code, why);
        } else {
            Log.warn("SIGHUP: " + why);
        }
    }

    /**
     * The successor's side of the cleanup: the handoff socket's file and, once empty, its private
     * directory (named warren-handoff-*), whether or not the old process is still there to do it.
     */
    private static void forgetHandoffPath(Path sock) {
        try {
            Files.deleteIfExists(sock);
            Path dir = sock.getParent();
            if (dir != null && dir.getFileName().toString().startsWith("warren-handoff-")) {
                Files.deleteIfExists(dir);
            }
        } catch (java.io.IOException e) {
            // the old process removes what is left (its pid file) after accepting
        }
    }

    private static void deleteQuietly(Path dir) {
        if (dir == null) {
            return;
        }
        try {
            Files.deleteIfExists(dir.resolve("h.sock"));
            Files.deleteIfExists(dir.resolve("pid"));
            Files.deleteIfExists(dir);
        } catch (java.io.IOException e) {
            Log.warn("upgrade: cannot remove " + dir + ": " + e.getMessage());
        }
    }

    // ---- the new process

    /**
     * Builds and discards a daemon on a throwaway listener before saying hello: class loading, the
     * native bindings and the handler's construction then happen while the old process still
     * serves, not inside the pause (they were ~90 ms of a ~110 ms pause). Returns the items the
     * handler pre-adopts ({@link Handoffable#preCopyItems}, asked of the throwaway daemon's
     * handler: what a successor's hello lists), or null if the warm-up failed before it knew.
     */
    static List<String> warmUp(DaemonSpec spec, Config config) {
        long t0 = System.nanoTime();
        Path dir = null;
        List<String> preCopyItems = null;
        try {
            dir = Files.createTempDirectory("warren-warmup-");
            SeqpacketListener throwaway = SeqpacketListener.bind(dir.resolve("h.sock"), 0600, -1, -1, 1);
            deleteQuietly(dir); // nothing connects to it: no directory is left if the process exits mid-warm-up
            dir = null;
            Daemon d = Daemon.forWarmUp(spec, config, throwaway);
            try {
                preCopyItems = d.handler() instanceof Handoffable h ? h.preCopyItems() : List.of();
                rehearse(d, WARM_UP_TASKS);
            } finally {
                d.discard(); // also after a failed rehearsal: the throwaway's fds (its tables', its listener) go
            }
            selfHandoff(spec.name());
        } catch (Exception e) {
            Log.warn("warm-up for in-place upgrades failed (carrying on; an upgrade's pause will be longer): " + e);
            return preCopyItems;
        } finally {
            deleteQuietly(dir);
        }
        Log.debug(String.format("warm-up: a throwaway %s was built, given %d rehearsal tasks and discarded, and a"
                + " handoff ran between two threads of this process, in %.1f ms (not an upgrade; it loads and compiles"
                + " the code a later in-place upgrade runs)", spec.name(), WARM_UP_TASKS, (System.nanoTime() - t0) / 1e6));
        return preCopyItems;
    }

    /**
     * Adopts, pauses, exports and abandons {@code n} synthetic tasks on a throwaway daemon (one
     * control connection, n requests, the handler's rehearsal items over dup'd fds), so the
     * per-task code of both sides of a handoff runs compiled, not interpreted, when it counts.
     */
    private static void rehearse(Daemon d, int n) throws Exception {
        SeqpacketSocket[] pair = SeqpacketSocket.pair();
        pair[1].close();
        List<Fd> taskFds = new ArrayList<>(2 * n);
        List<HandoffItem> items = List.of();
        try {
            if (d.handler() instanceof Handoffable h) {
                // never more than a sixteenth of the fds left: the warm-up runs while the daemon
                // serves, and must not take the fds its first requests need (at a low RLIMIT_NOFILE
                // 2 x 2,000 dups took all of them and refused the first Splice)
                String[] open = new java.io.File("/proc/self/fd").list();
                long headroom = Native.getrlimit(Native.RLIMIT_NOFILE)[0] - (open == null ? 64 : open.length);
                n = (int) Math.max(0, Math.min(n, headroom / 16));
                WARM_UP_FDS.addAndGet(2L * n);
                for (int i = 0; i < 2 * n; i++) {
                    taskFds.add(Fd.adopt(Native.fcntl(pair[0].fd().get(), Native.F_DUPFD_CLOEXEC, 0)));
                }
                items = h.rehearsalItems(n, taskFds);
            }
            warren.handoff.v1.ControlConnection.Builder conn = warren.handoff.v1.ControlConnection.newBuilder()
                    .setNumber(1).setFd(1);
            for (int i = 0; i < (items.isEmpty() ? 0 : n); i++) {
                conn.addCalls(warren.handoff.v1.PendingCall.newBuilder().setRef(i + 1).setId(i + 1).setTask(i + 1)
                        .setKind("rehearsal").setStartUnixNanos(1).setAgeNanos(1));
            }
            // a handler that pre-copies rehearses that path: calls built from a copy and placed by a
            // delta, its tasks pre-adopted and given their calls (what a successor does in the pause)
            boolean pre = !items.isEmpty() && d.handler() instanceof Handoffable h0 && h0.preCopies();
            // a counter and a histogram, as every state after a first upgrade has: their adoption is compiled too
            ControlState.Builder full = ControlState.newBuilder().setFormat(1).setFdListener(0).setNextClient(2)
                    .setNextTask(n + 1).putCounters("rehearsal", 0).putAllHistograms(emptyHistograms(d));
            if (pre) {
                d.server().preAdoptCalls(ControlState.parseFrom(ControlState.newBuilder().setFormat(1)
                        .addConnections(conn.clone().setFd(0)).build().toByteArray()));
                full.setCallsDelta(true).addConnections(warren.handoff.v1.ControlConnection.newBuilder().setNumber(1)
                        .setFd(1));
            } else {
                full.addConnections(conn);
            }
            ControlState cs = ControlState.parseFrom(full.build().toByteArray());
            if (pre && d.handler() instanceof Handoffable h) { // as a successor's pre-copy does, before the pause
                h.preAdopt(STATE_VERSIONS.get(0), items);
                h.preAttach(d.server()::preCopiedCall, d.server()::preAdoptTask);
            }
            Map<Long, Call> calls = d.server().adoptConnections(cs, List.of(d.server().listenerFd(), pair[0].fd()));
            if (!items.isEmpty() && d.handler() instanceof Handoffable h) {
                if (pre) {
                    h.adopt(STATE_VERSIONS.get(0), List.of(), calls::get, d.server()::adoptTask);
                } else {
                    h.adopt(STATE_VERSIONS.get(0), items, calls::get, d.server()::adoptTask);
                }
                d.server().preCopyCalls(CALLS_ITEM); // the old side's delta path too (its copy of the calls, no fds)
                d.server().pauseForHandoff(null);
                d.server().export("control");
                h.pauseAndExport(d.server()::callRef);
                h.abandon();
            }
            d.server().abandonAfterHandoff();
        } finally {
            Fd.closeAll(taskFds); // what the handler did not take
            WARM_UP_FDS.set(0);
        }
    }

    /** The throwaway daemon's upgrade-pause histogram, empty: adopted back into it, it adds nothing. */
    private static Map<String, warren.handoff.v1.HistogramState> emptyHistograms(Daemon d) {
        d.counters().histogram(warren.daemon.metrics.Families.UPGRADE_PAUSE.key());
        return d.counters().histogramStates();
    }

    /**
     * A handoff of a dummy item with a few fds from one thread to another over a socket pair: the
     * protocol's code (both sides: this process will be the old one at the next upgrade) runs
     * once before it counts.
     */
    private static void selfHandoff(String name) throws Exception {
        SeqpacketSocket[] pair = SeqpacketSocket.pair();
        int[] pipe = Native.pipe2(Native.O_CLOEXEC);
        try (SeqpacketSocket a = pair[0]; SeqpacketSocket b = pair[1]; Fd r = Fd.adopt(pipe[0]); Fd w = Fd.adopt(pipe[1])) {
            java.util.concurrent.CompletableFuture<HandoffSender.Report> sent = java.util.concurrent.CompletableFuture
                    .supplyAsync(() -> {
                        try {
                            return HandoffSender.hand(a, name, new HandoffSender.Source() {
                                @Override
                                public int stateVersion() {
                                    return STATE_VERSIONS.get(0);
                                }

                                @Override
                                public List<HandoffItem> pause() {
                                    return List.of(new HandoffItem("warm-up", new byte[16], List.of(r, w)));
                                }

                                @Override
                                public void resume() {}
                            }, 5000);
                        } catch (HandoffException e) {
                            throw new IllegalStateException(e);
                        }
                    });
            HandoffReceiver.Taken t = HandoffReceiver.receive(b, name, STATE_VERSIONS, (v, items) -> {}, 5000);
            for (HandoffItem it : t.items()) {
                Fd.closeAll(it.fds());
            }
            sent.get(5, TimeUnit.SECONDS);
        }
    }

    /**
     * Rebuilds a daemon from handed-over items (an upgrade's, or a crash recovery's from systemd's
     * fd store) before its loop runs: the listener and connections from "control", the rest by
     * the handler. {@code made}/{@code handler} receive what was built, also on failure (to close).
     */
    static void adoptAll(DaemonSpec spec, Config config, int v, List<HandoffItem> items, Daemon[] made,
            Handoffable[] handler) throws Exception {
        HandoffItem ci = null;
        List<HandoffItem> rest = new ArrayList<>();
        for (HandoffItem it : items) {
            if (it.name().equals("control")) {
                ci = it;
            } else {
                rest.add(it);
            }
        }
        if (ci == null) {
            throw new IllegalArgumentException("no control item");
        }
        long tBuild = System.nanoTime();
        ControlState cs = ControlState.parseFrom(ci.payload());
        Fd listener = listenerFd(cs, ci);
        if (made[0] == null) {
            made[0] = Daemon.forSuccessor(spec, config, SeqpacketListener.adopt(listener.transfer()), cs.getSocketPath());
            handler[0] = handoffable(made[0], v);
        } else {
            listener.close(); // the daemon was built in the pre-copy, on its own copy of the listener
            handoffable(made[0], v);
        }
        adoptInto(made[0], handler[0], v, cs, ci.fds(), rest, tBuild);
    }

    private static Fd listenerFd(ControlState cs, HandoffItem ci) {
        long i = Integer.toUnsignedLong(cs.getFdListener());
        if (i >= ci.fds().size()) {
            throw new IllegalArgumentException("the listener: fd index " + i + " of " + ci.fds().size());
        }
        return ci.fds().get((int) i);
    }

    /**
     * A pre-copy chunk, in the successor while the old process serves: the control listener (the
     * first chunk) builds the daemon, the rest goes to the handler's {@link Handoffable#preAdopt}
     * (paused; their calls come at the pause).
     */
    static void preAdoptAll(DaemonSpec spec, Config config, int v, List<HandoffItem> items, Daemon[] made,
            Handoffable[] handler) throws Exception {
        List<HandoffItem> rest = new ArrayList<>();
        for (HandoffItem it : items) {
            if (it.name().equals(CALLS_ITEM)) {
                if (made[0] == null || !it.fds().isEmpty()) {
                    throw new IllegalArgumentException("pre-copied calls before the listener, or with fds");
                }
                int n = made[0].server().preAdoptCalls(ControlState.parseFrom(it.payload()));
                Log.info("upgrade: " + n + " calls pre-copied");
                continue;
            }
            if (!it.name().equals(LISTENER_ITEM)) {
                rest.add(it);
                continue;
            }
            if (made[0] != null) {
                throw new IllegalArgumentException("the listener was pre-copied twice");
            }
            long t0 = System.nanoTime();
            ControlState cs = ControlState.parseFrom(it.payload());
            made[0] = Daemon.forSuccessor(spec, config, SeqpacketListener.adopt(listenerFd(cs, it).transfer()),
                    cs.getSocketPath());
            handler[0] = handoffable(made[0], v);
            Log.info(String.format("upgrade: daemon built in %.1f ms during the pre-copy", (System.nanoTime() - t0) / 1e6));
        }
        if (!rest.isEmpty()) {
            if (made[0] == null) {
                throw new IllegalArgumentException("pre-copied tasks came before the listener");
            }
            handler[0].preAdopt(v, rest);
        }
        if (made[0] != null) { // tasks whose calls are pre-copied get them now, not in the pause
            handler[0].preAttach(made[0].server()::preCopiedCall, made[0].server()::preAdoptTask);
        }
    }

    /** {@code d}'s handler, if it can take a state of version {@code v}. */
    static Handoffable handoffable(Daemon d, int v) {
        if (!(d.handler() instanceof Handoffable h)) {
            throw new IllegalStateException(d.spec().name() + " of this build cannot take a handoff");
        }
        if (!h.acceptsStateVersions().contains(v)) {
            throw new IllegalArgumentException("state version " + v + " is not one of " + h.acceptsStateVersions());
        }
        return h;
    }

    /**
     * Into a daemon built for it (not running yet): the control server takes the connections and
     * calls of {@code cs} (fds {@code controlFds}), the handler the other items, and each call's
     * task. Requests no item claimed are answered INTERNAL. Also fd store recovery's last step.
     */
    static void adoptInto(Daemon d, Handoffable h, int v, ControlState cs, List<warren.fdpass.Fd> controlFds,
            List<HandoffItem> rest, long tBuild) throws Exception {
        long t0 = System.nanoTime();
        Map<Long, Call> calls = d.server().adoptConnections(cs, controlFds);
        long t1 = System.nanoTime();
        h.adopt(v, rest, calls::get, d.server()::adoptTask);
        Log.info(String.format("upgrade: daemon built in %.1f ms, %d calls adopted in %.1f ms, tasks in %.1f ms",
                (t0 - tBuild) / 1e6, calls.size(), (t1 - t0) / 1e6, (System.nanoTime() - t1) / 1e6));
        int lost = d.server().failUnclaimed();
        if (lost > 0) {
            Log.warn("upgrade: " + lost + " requests had no task in the handed-in state; answered INTERNAL");
        }
    }

    /**
     * What a successor's hello says it pre-adopts: the control listener and calls
     * ({@link #preAdoptAll}) and its handler's items; only the control server's if the handler's
     * are unknown (the warm-up failed: the old process then sends the handler's tasks whole).
     */
    static List<String> preCopies(List<String> handlerItems) {
        List<String> all = new ArrayList<>(List.of(LISTENER_ITEM, CALLS_ITEM));
        if (handlerItems != null) {
            all.addAll(handlerItems);
        }
        return all;
    }

    static int successorMain(DaemonSpec spec, DaemonOptions opts, Config config) {
        List<String> preCopies = preCopies(warmUp(spec, config));
        Daemon[] made = new Daemon[1];
        Handoffable[] handler = new Handoffable[1];
        SeqpacketSocket connected = null;
        Exception notConnected = null;
        try {
            connected = SeqpacketSocket.connect(opts.handoff());
        } catch (Exception e) {
            notConnected = e;
        } finally {
            forgetHandoffPath(opts.handoff()); // the old process may be gone (kill -9): leave nothing in /tmp
        }
        try (SeqpacketSocket s = connected) {
            if (notConnected != null) {
                throw notConnected;
            }
            // on failure this process exits: what the pre-copy built dies with it, the old process serves on
            HandoffReceiver.Taken taken = HandoffReceiver.receive(s, spec.name(), spec.version(), STATE_VERSIONS,
                    preCopies, new HandoffReceiver.Preparer() {
                        @Override
                        public void preCopy(int v, List<HandoffItem> items) throws Exception {
                            preAdoptAll(spec, config, v, items, made, handler);
                        }

                        @Override
                        public void prepare(int v, List<HandoffItem> items) throws Exception {
                            adoptAll(spec, config, v, items, made, handler);
                        }
                    }, DEFAULT_TIMEOUT_MS);
            Daemon d = made[0];
            long tStart = System.nanoTime();
            d.server().start();
            handler[0].startAdopted(); // held events delivered, adopted tasks armed: before the loops run
            long startNanos = System.nanoTime() - tStart;
            long pausedAt = d.server().handedInPausedAt();
            if (pausedAt != 0) {
                d.counters().histogram(warren.daemon.metrics.Families.UPGRADE_PAUSE.key())
                        .observeNanos(System.nanoTime() - pausedAt);
            }
            Log.info("upgrade: handoff " + taken.timings() + String.format(", started in %.1f ms after the commit",
                    startNanos / 1e6));
            Log.notice("took over from the previous process (" + (taken.committed() ? "committed" : "it died after ready")
                    + "); serving (pid " + Native.getpid() + ")");
            d.notifier().mainPid(Native.getpid(), "upgraded: serving"); // the old process said it first
        } catch (Exception e) {
            Log.fatal("upgrade: cannot take over: " + e.getMessage());
            return 1;
        }
        return made[0].serve("serving (upgraded in place)");
    }
}
