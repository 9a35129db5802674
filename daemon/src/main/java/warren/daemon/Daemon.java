package warren.daemon;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import warren.daemon.audit.AuditLog;
import warren.daemon.cli.DaemonOptions;
import warren.daemon.cli.UsageException;
import warren.daemon.config.Config;
import warren.daemon.config.ConfigException;
import warren.daemon.config.ConfigKey;
import warren.daemon.control.Authorizer;
import warren.daemon.control.ControlServer;
import warren.daemon.control.Principals;
import warren.daemon.control.RequestHandler;
import warren.daemon.loop.EventLoop;
import warren.daemon.metrics.Counters;
import warren.daemon.task.TaskRegistry;
import warren.daemon.trace.Tracer;
import warren.fdpass.SeqpacketListener;
import warren.systemd.ListenFds;
import warren.systemd.SdNotify;
import warren.fdpass.libc.Native;

/**
 * The lifecycle every daemon shares:
 * <pre>
 * parse options -> load config -> open audit -> bind control socket -> build handler -> SERVING
 * SERVING --SIGTERM/SIGINT/shutdown()--> DRAINING: listener closed, new work refused, tasks asked
 *          to stop (they answer with their fds handed back)
 * DRAINING --all tasks answered and answers sent, or shutdown.drain_timeout--> STOPPED (exit 0)
 * </pre>
 * A bad option or config is one line on stderr and exit status 2 (so is a control socket any local
 * user could connect to, unless control.allow_world_writable says so); a control socket that
 * cannot be bound is one line and exit status 1.
 */
public final class Daemon {
    public static final ConfigKey<Integer> CONTROL_MODE =
            ConfigKey.mode("control.mode", 0660, "file mode of the control socket (octal)");
    public static final ConfigKey<Long> CONTROL_UID =
            ConfigKey.count("control.uid", -1, -1, Integer.MAX_VALUE, "owner uid of the control socket (-1: unchanged)");
    public static final ConfigKey<Long> CONTROL_GID =
            ConfigKey.count("control.gid", -1, -1, Integer.MAX_VALUE, "group gid of the control socket (-1: unchanged)");
    public static final ConfigKey<Boolean> ALLOW_WORLD_WRITABLE = ConfigKey.flag("control.allow_world_writable", false,
            "start even though any local user may connect: control.mode has the o+w bit, or an inherited socket's"
                    + " file has it or the socket is abstract (false: such a daemon refuses to start; roles still apply)");
    public static final ConfigKey<Principals> CONTROL_ADMINS = principals("control.admins",
            "who may Restart (upgrade in place) and do all operators and clients may; comma-separated uid:N, gid:N,"
                    + " user:NAME, group:NAME (names resolved at start; a gid matches the peer's primary or"
                    + " supplementary groups, SO_PEERCRED and SO_PEERGROUPS at connect); uid 0 and the daemon's own"
                    + " uid are admins in any case (both can SIGHUP it, the same upgrade), so empty = just those");
    public static final ConfigKey<Principals> CONTROL_OPERATORS = principals("control.operators",
            "who may ask Status, Metrics and Trace, List every task with its metadata and Cancel any task, and do"
                    + " all clients may; same entries as control.admins; empty = admins only");
    public static final ConfigKey<Principals> CONTROL_CLIENTS = principals("control.clients",
            "who may submit work (Splice, Upgrade, Downgrade, Egress), Cancel their own uid's tasks and List them"
                    + " (others' tasks are left out); same entries as control.admins; empty = members of the control"
                    + " socket's group (the gid of its file after bind, or of an inherited socket's file; nobody for"
                    + " an abstract socket)");
    public static final ConfigKey<Long> MAX_IN_FLIGHT = ConfigKey.count("control.max_in_flight_per_client", 262_144,
            1, 1 << 24, "requests one connection may have without a final answer (a Splice is in flight for"
                    + " its pair's whole life, so this bounds the pairs one front proxy connection can hold)");
    public static final ConfigKey<Long> MAX_CLIENTS =
            ConfigKey.count("control.max_clients", 1024, 1, 1 << 20, "control connections at once");
    public static final ConfigKey<Long> MAX_CLIENTS_PER_UID = ConfigKey.count("control.max_clients_per_uid", 256, 1,
            1 << 20, "control connections at once from one uid (SO_PEERCRED), so one client cannot hold them all;"
                    + " more get RESOURCE_EXHAUSTED");
    public static final ConfigKey<Long> MAX_QUEUED = ConfigKey.count("control.max_queued_answers", 8192, 1, 1 << 24,
            "answers queued for a client that does not read before it is disconnected");
    public static final ConfigKey<Long> MAX_REQUEST_BYTES = ConfigKey.bytes("control.max_request_bytes", 1 << 20,
            "largest request envelope accepted, inline or spilled to a sealed memfd (judged by the memfd's size"
                    + " before it is read); larger: INVALID_ARGUMENT");
    public static final ConfigKey<Long> MAX_METADATA_BYTES = ConfigKey.bytes("control.max_metadata_bytes", 64 << 10,
            "largest request metadata accepted (it is echoed in every answer and kept with the task); larger:"
                    + " INVALID_ARGUMENT");
    public static final ConfigKey<String> AUDIT_PATH =
            ConfigKey.text("audit.path", "", "audit log file (JSON lines, appended; SIGUSR1 reopens it); empty = stderr");
    public static final ConfigKey<Long> AUDIT_QUEUE = ConfigKey.count("audit.queue", AuditLog.DEFAULT_QUEUE, 16, 1 << 24,
            "audit lines waiting for the writer thread before further ones are dropped (and counted in audit.dropped)");
    public static final ConfigKey<Long> DRAIN_TIMEOUT = ConfigKey.millis("shutdown.drain_timeout", 10_000,
            "how long SIGTERM waits for tasks to hand back before exiting anyway");

    public static final ConfigKey<Boolean> UPGRADE_ALLOW_COMMAND = ConfigKey.flag("upgrade.allow_command", false,
            "honour Restart.command (an admin names the new process's command line, e.g. ./warren upgrade ... --"
                    + " COMMAND); false = such a Restart is refused with PERMISSION_DENIED and the new process is"
                    + " always this daemon's own executable and arguments");

    public static final ConfigKey<String> FD_STORE = ConfigKey.oneOf("systemd.fd_store", "auto",
            List.of("auto", "yes", "no"), "keep live connections and tasks in systemd's fd store so a crash loses"
                    + " none of them (auto: when run by systemd, i.e. NOTIFY_SOCKET is set; the unit needs"
                    + " FileDescriptorStoreMax=)");

    public static final ConfigKey<String> METRICS_LISTEN = ConfigKey.custom("metrics.listen", "", t -> {
        String why = warren.daemon.metrics.MetricsEndpoint.check(t);
        if (why != null) {
            throw new IllegalArgumentException(why);
        }
        return t;
    }, "Prometheus metrics over HTTP at /metrics: HOST:PORT (e.g. 127.0.0.1:9464) or an absolute path (a unix"
            + " stream socket, mode 0660); empty = off. Under the shipped units (PrivateNetwork=yes) a TCP address"
            + " is reachable only inside the unit: see the comments in the unit files");

    public static final ConfigKey<Long> THREADS = ConfigKey.count("threads", 0, 0, 1024, "event loops, each on its"
            + " own thread; loop 0 also serves the control socket; 0: one per CPU (availableProcessors), 1: everything"
            + " on one thread. Splicer places each new pair on the loop with the fewest pairs; Bumblebee gives each loop"
            + " a TUN queue and a share of its slots (docs/bumblebee.md); Fish each client on the loop of its port"
            + " range's class, a TUN queue per loop (docs/fish.md). An upgrade"
            + " in place may change it: the successor spreads what it adopts over its own loops");

    /** Fds the background upgrade warm-up holds right now (to leave out of an fd baseline). */
    public static long warmUpFds() {
        return Upgrade.warmUpFds();
    }

    /** The number of event loops {@link #THREADS} asks for (0: one per CPU). */
    public static int threads(Config config) {
        long v = config.get(THREADS);
        return v == 0 ? Runtime.getRuntime().availableProcessors() : (int) v;
    }

    private static final List<ConfigKey<?>> COMMON = concat(List.of(THREADS, CONTROL_MODE, CONTROL_UID, CONTROL_GID,
            MAX_IN_FLIGHT, MAX_CLIENTS, MAX_CLIENTS_PER_UID, MAX_QUEUED, MAX_REQUEST_BYTES, MAX_METADATA_BYTES,
            AUDIT_PATH, AUDIT_QUEUE, DRAIN_TIMEOUT, FD_STORE, METRICS_LISTEN,
            CONTROL_ADMINS, CONTROL_OPERATORS, CONTROL_CLIENTS, ALLOW_WORLD_WRITABLE, UPGRADE_ALLOW_COMMAND), Log.KEYS);

    private static ConfigKey<Principals> principals(String name, String help) {
        return ConfigKey.of(name, Principals.NONE, Principals::parse, Principals::toString, help);
    }

    private static List<ConfigKey<?>> concat(List<ConfigKey<?>> a, List<ConfigKey<?>> b) {
        List<ConfigKey<?>> all = new ArrayList<>(a);
        all.addAll(b);
        return List.copyOf(all);
    }

    private static final Log.Limited LOOP_FAILURES = Log.every("loop.unexpected_failure");

    private final DaemonSpec spec;
    private final Config config;
    private final warren.daemon.loop.Loops loops;
    private final EventLoop loop;
    private final Counters counters = new Counters();
    private final warren.daemon.metrics.DaemonMetrics metrics;
    private volatile warren.daemon.metrics.MetricsEndpoint metricsEndpoint;
    private final AuditLog audit;
    private final TaskRegistry tasks;
    private final ControlServer server;
    private final RequestHandler handler;
    private final Tracer tracer;
    private final CountDownLatch stopped = new CountDownLatch(1);
    private final SdNotify notify = SdNotify.fromEnvironment();
    private volatile boolean stopRequested;

    /** A stop was asked for (TERM/INT, Stop): an upgrade under way gives up. Any thread. */
    boolean stopRequested() {
        return stopRequested;
    }
    private final boolean successor;

    /** What a daemon is built for: serving at once, taking over from a predecessor, or a warm-up copy. */
    private enum Kind { SERVING, SUCCESSOR, WARM_UP }

    private Daemon(DaemonSpec spec, Config config, Path control, SeqpacketListener inherited, String socketPath,
            AuditLog audit, Kind kind) throws Exception {
        this.spec = spec;
        this.config = config;
        this.audit = audit;
        this.successor = kind != Kind.SERVING;
        this.warmUp = kind == Kind.WARM_UP;
        boolean startServing = kind == Kind.SERVING;
        this.tasks = new TaskRegistry(audit);
        counters.attach("audit.dropped", audit.dropped());
        counters.attach("audit.write_errors", audit.writeErrors());
        counters.attach("log.dropped", Log.droppedCounter());
        counters.attach("log.write_errors", Log.writeErrorCounter());
        counters.attach("log.suppressed", Log.suppressedCounter());
        this.loops = new warren.daemon.loop.Loops(threads(config), 1024, t -> {
            counters.increment("loop.errors");
            LOOP_FAILURES.error("unexpected failure in the event loop", t);
        });
        this.loop = loops.control();
        this.metrics = new warren.daemon.metrics.DaemonMetrics(spec.name(), spec.version(), loop, counters, tasks);
        tasks.onEnd(metrics.taskEnds());
        SeqpacketListener listener = null;
        try {
            if (inherited == null && (config.get(CONTROL_MODE) & 0002) != 0 && !config.get(ALLOW_WORLD_WRITABLE)) {
                throw new ConfigException("control.mode = " + CONTROL_MODE.format(config.get(CONTROL_MODE))
                        + " lets any local user connect; refusing (set control.allow_world_writable = true to mean it)");
            }
            listener = inherited != null ? inherited : SeqpacketListener.bind(control, config.get(CONTROL_MODE),
                    config.get(CONTROL_UID).intValue(), config.get(CONTROL_GID).intValue(), 512);
            Authorizer.SocketFile file = Authorizer.SocketFile.of(listener, socketPath);
            if (file.othersMayConnect() && !config.get(ALLOW_WORLD_WRITABLE)) {
                throw new ConfigException("the control socket " + file.describe() + " lets any local user connect;"
                        + " refusing (set control.allow_world_writable = true to mean it)");
            }
            Authorizer authorizer = Authorizer.of(config.get(CONTROL_CLIENTS), config.get(CONTROL_OPERATORS),
                    config.get(CONTROL_ADMINS), config.get(UPGRADE_ALLOW_COMMAND), file);
            if (kind != Kind.WARM_UP) {
                Log.info(authorizer.describe());
            }
            this.handler = spec.handlerFactory().create(this);
            this.server = new ControlServer(spec.name(), spec.version(), loop, listener, handler, tasks, audit,
                    counters, new ControlServer.Settings(config.get(MAX_IN_FLIGHT).intValue(),
                            config.get(MAX_CLIENTS).intValue(), config.get(MAX_QUEUED).intValue(),
                            new warren.fdpass.codec.ControlCodec.Limits(config.get(MAX_REQUEST_BYTES),
                                    config.get(MAX_METADATA_BYTES)), config.get(MAX_CLIENTS_PER_UID).intValue()));
            server.authorize(authorizer);
            server.pairBook(pairBook);
            server.onRestart(this::restart);
            server.onMetrics(this::answerMetrics);
            metrics.probe(s -> s.gauge(warren.daemon.metrics.Families.CLIENTS, server.clientCount()));
            this.tracer = new Tracer(loop, tasks, new Tracer.Settings(config.get(Tracer.RING_BYTES).intValue(),
                    config.get(Tracer.MAX_ACTIVE).intValue()));
            server.onTrace(tracer::start);
            if (fdStore() && handler instanceof warren.daemon.handoff.Handoffable h && h.survivesCrashes()) {
                server.connectionJournal(new warren.daemon.control.ControlServer.ConnectionJournal() {
                    @Override
                    public void opened(long number, warren.fdpass.Fd socket) {
                        if (!notify.fdStore(FdStoreNames.connection(number), List.of(socket))) {
                            Log.warn("fd store: connection " + number + " not stored; a crash would drop it");
                        }
                    }

                    @Override
                    public void closed(long number) {
                        notify.fdStoreRemove(FdStoreNames.connection(number));
                    }
                });
            }
            if (startServing) {
                server.start();
            }
        } catch (Exception | Error e) {
            if (listener != null) {
                listener.close();
            }
            loops.close();
            throw e;
        }
    }

    /**
     * True in a process started to take over from a running one (upgrade in place): the handler
     * must not build what it will be handed (a namespace, a TUN) and gets it in
     * {@code Handoffable.adopt} instead.
     */
    public boolean successor() {
        return successor;
    }

    /** A throwaway copy for the upgrade warm-up: never touches systemd's fd store. */
    static Daemon forWarmUp(DaemonSpec spec, Config config, SeqpacketListener listener) throws Exception {
        return create(spec, config, null, listener, null, Kind.WARM_UP);
    }

    private final boolean warmUp;

    /**
     * True in the warm-up's throwaway daemon ({@link Upgrade#warmUp}; {@link #successor} is true
     * there too): a handler may build throwaway tables to rehearse on, touching nothing of the
     * host's (no namespace, no device), never the fd store.
     */
    public boolean warmUp() {
        return warmUp;
    }

    /** True when live connections and tasks go into systemd's fd store (systemd.fd_store). */
    public boolean fdStore() {
        if (warmUp) {
            return false;
        }
        String v = config.get(FD_STORE);
        return v.equals("yes") || (v.equals("auto") && notify.enabled());
    }

    /** All config keys of a daemon: the shared ones and its own. */
    public static List<ConfigKey<?>> configKeys(DaemonSpec spec) {
        List<ConfigKey<?>> all = new ArrayList<>(COMMON);
        all.addAll(List.of(Tracer.RING_BYTES, Tracer.MAX_ACTIVE));
        all.addAll(spec.configKeys());
        return all;
    }

    /** Starts a daemon (bound and serving once this returns); run it with {@link #run()}. */
    public static Daemon start(DaemonSpec spec, Path control, Config config) throws Exception {
        return start(spec, control, null, config);
    }

    /** As {@link #start(DaemonSpec, Path, Config)}, on an inherited listener when it is not null. */
    public static Daemon start(DaemonSpec spec, Path control, SeqpacketListener inherited, Config config)
            throws Exception {
        return create(spec, config, control, inherited, null, Kind.SERVING);
    }

    /**
     * For the successor: a daemon on a handed-in listener whose server is not serving yet;
     * {@code socketPath} is the listener's file as the predecessor knew it ("" or null: unknown).
     */
    static Daemon forSuccessor(DaemonSpec spec, Config config, SeqpacketListener listener, String socketPath)
            throws Exception {
        return create(spec, config, null, listener, socketPath, Kind.SUCCESSOR);
    }

    private static Daemon create(DaemonSpec spec, Config config, Path control, SeqpacketListener listener,
            String socketPath, Kind kind) throws Exception {
        Log.setName(spec.name());
        Log.configure(config);
        AuditLog audit = AuditLog.open(spec.name(), config.get(AUDIT_PATH), config.get(AUDIT_QUEUE).intValue());
        try {
            return new Daemon(spec, config, control, listener, socketPath, audit, kind);
        } catch (Exception | Error e) {
            audit.close();
            throw e;
        }
    }

    /**
     * The command-line entry of every daemon: returns the exit status (0 after a clean stop, 1 if
     * it could not start, 2 for a bad option or config).
     */
    public static int main(DaemonSpec spec, String[] args) {
        long tMain = System.nanoTime();
        Log.setName(spec.name());
        DaemonOptions opts;
        Config config;
        try {
            opts = DaemonOptions.parse(args);
            if (opts.help()) {
                System.out.print(DaemonOptions.usage(spec.name(), spec.summary()));
                return 0;
            }
            if (opts.version()) {
                System.out.println(spec.name() + " " + spec.version());
                return 0;
            }
            config = Config.load(opts.config(), configKeys(spec));
            if (opts.printConfig()) {
                System.out.print(config.describe());
                return 0;
            }
        } catch (UsageException | ConfigException e) {
            Log.fatal(e.getMessage());
            return 2;
        }
        Log.configure(config);
        if (opts.handoff() != null) {
            return Upgrade.successorMain(spec, opts, config);
        }
        SeqpacketListener inherited = null;
        String where = String.valueOf(opts.control());
        try {
            long tConfigured = System.nanoTime();
            List<ListenFds.Named> fds = ListenFds.fromEnvironment();
            ListenFds.Named pick = FdStoreRecovery.listener(fds);
            if (pick != null) {
                inherited = SeqpacketListener.adopt(pick.fd());
                where = "the socket-activated fd " + pick.fd().number() + " (" + pick.name() + ")";
                if (FdStoreRecovery.present(fds, pick)) {
                    Daemon d;
                    try {
                        d = FdStoreRecovery.recover(spec, config, inherited, fds,
                                new FdStoreRecovery.Started(tMain, tConfigured));
                    } catch (Exception e) {
                        Log.fatal("cannot recover from systemd's fd store: " + e.getMessage());
                        return 1;
                    }
                    return d.serve("serving on " + where + " (recovered after a crash)");
                }
                for (ListenFds.Named n : fds) {
                    if (n != pick) {
                        n.fd().close();
                    }
                }
            }
        } catch (Exception e) {
            Log.fatal("unusable LISTEN_FDS: " + e.getMessage());
            return 2;
        }
        if (inherited == null && opts.control() == null) {
            Log.fatal("--control PATH is required (try --help)");
            return 2;
        }
        Daemon d;
        try {
            d = start(spec, opts.control(), inherited, config);
        } catch (ConfigException e) {
            System.err.println(spec.name() + ": cannot start on " + where + ": " + e.getMessage());
            return 2;
        } catch (Exception e) {
            Log.fatal("cannot start on " + where + ": " + e.getMessage());
            return 1;
        }
        Log.notice("serving on " + where + " (pid " + Native.getpid() + ", config " + config.source() + ")");
        if (d.handler() instanceof warren.daemon.handoff.Handoffable) {
            // so that the first upgrade's old side runs compiled code too (a successor warms up itself)
            Thread w = new Thread(() -> Upgrade.warmUp(spec, config), "upgrade-warm-up");
            w.setDaemon(true);
            w.setPriority(Thread.MIN_PRIORITY);
            w.start();
        }
        return d.serve("serving on " + where);
    }

    /**
     * The foreground life of a started daemon (also a successor's): signals (TERM/INT stop, HUP
     * upgrades), READY=1 and the watchdog under systemd, the loop until it stops. Returns the
     * exit status.
     */
    int serve(String readyStatus) {
        String listen = config.get(METRICS_LISTEN);
        if (!listen.isEmpty()) {
            try {
                metricsEndpoint = warren.daemon.metrics.MetricsEndpoint.open(listen, metrics, successor);
                Log.info("metrics at " + metricsEndpoint.where());
            } catch (java.io.IOException | RuntimeException e) {
                if (!successor) {
                    System.err.println(spec.name() + ": metrics.listen " + listen + ": cannot listen: " + e.getMessage());
                    discard();
                    return 1;
                }
                // a successor has taken over already: it serves on without
                Log.warn("metrics.listen " + listen + ": cannot listen: " + e.getMessage() + "; no metrics endpoint");
            }
        }
        Signals.handle("TERM", this::shutdown);
        Signals.handle("INT", this::shutdown);
        Signals.handle("HUP", this::upgradeOnSignal);
        Signals.handle("USR1", this::reopenAudit);
        notify.ready(readyStatus);
        startWatchdog();
        try {
            run();
        } catch (Exception e) {
            Log.error("event loop failed", e);
            return 1;
        }
        Log.notice(handedOver ? "handed over to a successor; exiting" : "stopped");
        return 0;
    }

    /** SIGUSR1 (logrotate's postrotate): the audit file is opened again at its path. Any thread. */
    void reopenAudit() {
        if (!audit.reopen()) {
            Log.info("SIGUSR1: the audit log goes to " + audit.destination() + "; nothing to reopen");
        }
    }

    // ---- upgrade in place (the logic lives in Upgrade)

    volatile boolean handedOver;
    private final java.util.concurrent.atomic.AtomicBoolean restarting = new java.util.concurrent.atomic.AtomicBoolean();

    /** SIGHUP: the same upgrade as a Restart request, reported in the log only. Any thread. */
    void upgradeOnSignal() {
        loop.execute(() -> restart(null));
    }

    private void restart(warren.daemon.control.Call call) {
        if (!restarting.compareAndSet(false, true)) {
            if (call != null) {
                call.fail(warren.control.v1.Error.Code.UPGRADE_IN_PROGRESS, "an upgrade is already under way");
            } else {
                Log.warn("SIGHUP: an upgrade is already under way");
            }
            return;
        }
        if (stopRequested) {
            restarting.set(false);
            if (call != null) {
                call.fail(warren.control.v1.Error.Code.SHUTTING_DOWN, "shutting down; no upgrade");
            }
            return;
        }
        Upgrade.start(this, call, () -> restarting.set(false));
    }

    RequestHandler handler() {
        return handler;
    }

    /** Answers {@code Metrics} on the loop thread: the same text as the HTTP endpoint's, OpenMetrics. */
    /**
     * Metrics over the control socket, answered before returning (so the request is never in flight
     * without a task when an upgrade pauses: an answer posted back later made a concurrent Restart
     * fail); the control loop waits up to 2 s for the other loops' parts.
     */
    private void answerMetrics(warren.daemon.control.Call call) {
        try {
            call.reply(warren.control.v1.Response.newBuilder().setMetrics(warren.control.v1.MetricsText.newBuilder()
                    .setContentType(warren.daemon.metrics.DaemonMetrics.OPENMETRICS)
                    .setText(new String(metrics.text(true), java.nio.charset.StandardCharsets.UTF_8))));
        } catch (java.io.IOException e) {
            call.fail(warren.control.v1.Error.Code.INTERNAL, "metrics: " + e.getMessage());
        }
    }

    /**
     * At an upgrade's commit (loop thread): the numbers are the successor's now, scrapes get 503;
     * the listener closes with the process (discard), not here: closing waits for a scrape that
     * may itself wait for this loop.
     */
    void metricsHandedOver() {
        metrics.handedOver();
    }

    DaemonSpec spec() {
        return spec;
    }

    public SdNotify notifier() {
        return notify;
    }

    /** Closes everything: after the loop has stopped, or for a daemon that never ran (the warm-up copy). */
    void discard() {
        if (metricsEndpoint != null) {
            metricsEndpoint.close(!handedOver);
        }
        server.closeAll();
        try {
            handler.close();
        } catch (RuntimeException e) {
            Log.error("closing the request handler failed", e);
        }
        loops.close();
        audit.close();
        notify.close();
    }

    /**
     * Runs the event loops until the daemon has stopped: loop 0 on the calling thread, the others
     * on threads of their own.
     */
    public void run() throws Exception {
        try {
            loops.run(spec.name(), t -> {
                counters.increment("loop.errors");
                Log.error("an event loop thread died; stopping", t);
                shutdown();
            });
        } finally {
            discard();
            stopped.countDown();
        }
    }

    /** Pings systemd's watchdog at half of WATCHDOG_USEC, when it asks for one (WATCHDOG_PID us). */
    private void startWatchdog() {
        String usec = System.getenv("WATCHDOG_USEC");
        String pid = System.getenv("WATCHDOG_PID");
        // a successor inherited its predecessor's WATCHDOG_PID; after MAINPID= systemd expects the pings from it
        if (usec == null || !notify.enabled()
                || (!successor && pid != null && !pid.equals(String.valueOf(Native.getpid())))) {
            return;
        }
        long halfMillis = Math.max(1, Long.parseLong(usec) / 2000);
        loop.execute(() -> watchdogTick(halfMillis));
    }

    private void watchdogTick(long everyMillis) {
        notify.watchdog();
        loop.schedule(everyMillis, () -> watchdogTick(everyMillis));
    }

    /** Begins the graceful stop (SIGTERM). Any thread; idempotent. */
    public void shutdown() {
        if (stopRequested) {
            return;
        }
        stopRequested = true;
        notify.stopping("stopping: handing tasks back");
        loop.execute(() -> {
            server.beginShutdown();
            long deadline = System.nanoTime() + config.get(DRAIN_TIMEOUT) * 1_000_000L;
            awaitDrain(deadline);
        });
    }

    private void awaitDrain(long deadline) {
        if (server.drained()) {
            loops.stop();
            return;
        }
        if (System.nanoTime() >= deadline) {
            Log.warn(tasks.active() + " tasks did not hand back within shutdown.drain_timeout ("
                    + config.get(DRAIN_TIMEOUT) + " ms); exiting anyway, their fds close with the process");
            loops.stop();
            return;
        }
        loop.schedule(5, () -> awaitDrain(deadline));
    }

    /** Waits until {@link #run()} has returned. */
    public void awaitStopped() throws InterruptedException {
        stopped.await();
    }

    public String name() {
        return spec.name();
    }

    public Config config() {
        return config;
    }

    /** The control loop (loop 0): control server, task registry, audit; single-loop engines run here. */
    public EventLoop loop() {
        return loop;
    }

    /** Every event loop of this daemon (config key {@code threads}); {@code loops().get(0) == loop()}. */
    public warren.daemon.loop.Loops loops() {
        return loops;
    }

    public Counters counters() {
        return counters;
    }

    /** Where an engine registers its metric probe (gauges, live counts of its tasks). */
    public warren.daemon.metrics.DaemonMetrics metrics() {
        return metrics;
    }

    public AuditLog audit() {
        return audit;
    }

    public TaskRegistry tasks() {
        return tasks;
    }

    public ControlServer server() {
        return server;
    }

    /** The fd store's pair book (PairBook): made before the handler, so that its relays' journals can write into it. */
    private final PairBook pairBook = new PairBook();

    public PairBook pairBook() {
        return pairBook;
    }

    /** Serves Trace requests; its traces end before an upgrade hands the daemon over. */
    public Tracer tracer() {
        return tracer;
    }
}
