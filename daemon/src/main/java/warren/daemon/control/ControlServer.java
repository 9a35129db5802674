package warren.daemon.control;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import warren.control.v1.Cancelled;
import warren.control.v1.Error;
import warren.control.v1.Listing;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.StatusReport;
import warren.control.v1.TaskInfo;
import warren.daemon.Log;
import warren.daemon.audit.AuditLog;
import warren.daemon.audit.JsonLine;
import warren.daemon.loop.EventLoop;
import warren.daemon.metrics.Counters;
import warren.daemon.task.TaskRegistry;
import warren.fdpass.Fd;
import warren.fdpass.FdPassException;
import warren.fdpass.Received;
import warren.fdpass.SeqpacketListener;
import warren.fdpass.SeqpacketSocket;
import warren.fdpass.codec.ControlCodec;
import warren.fdpass.codec.Decoded;
import warren.fdpass.codec.Encoded;
import warren.fdpass.codec.ProtocolException;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * The control-socket server every daemon runs on its {@link EventLoop}.
 *
 * <ul>
 *   <li>Accepts clients on a SEQPACKET listener (SO_PEERCRED read on accept), up to
 *       {@code maxClients}.</li>
 *   <li>Each message is decoded by {@link ControlCodec}; a message that breaks the contract gets
 *       an {@code Error} with its code (echoing id and metadata when they could be read), an
 *       audit "rejected" line and a counter; every fd it carried is closed; the connection and
 *       everyone else go on.</li>
 *   <li>Many requests may be in flight per client, up to {@code maxInFlightPerClient} (then
 *       TOO_MANY_IN_FLIGHT); an id already in flight on the connection gets DUPLICATE_ID.</li>
 *   <li>Every request is first checked against the peer's role ({@link Authorizer}: SO_PEERCRED
 *       and SO_PEERGROUPS, read once per connection); a refusal is PERMISSION_DENIED and nothing
 *       of the request runs.</li>
 *   <li>Status, List and Cancel are answered here; Restart, Metrics and Trace go to the hooks the
 *       daemon set ({@link #onRestart}, {@link #onMetrics}, {@link #onTrace}); the daemon's own bodies go to its
 *       {@link RequestHandler}. Every request gets exactly one final answer ({@link Call}).</li>
 *   <li>Answers are queued per client when its socket is full and sent on EPOLLOUT; a client that
 *       lets more than {@code maxQueuedAnswers} pile up is disconnected (its answers' fds closed).
 *   </li>
 *   <li>A client that goes away leaves its tasks running; their answers are dropped when they
 *       come (fds closed, counted, logged).</li>
 *   <li>{@link #beginShutdown()}: stop accepting, refuse new work with SHUTTING_DOWN, ask every
 *       task to stop; {@link #drained()} when all have answered and the answers are sent.</li>
 * </ul>
 * All state is touched on the loop thread only; {@link Call#reply} from other threads is posted.
 */
public final class ControlServer {
    /** Limits of the server; each has a config key in {@code DaemonConfig}. */
    public record Settings(int maxInFlightPerClient, int maxClients, int maxQueuedAnswers,
            ControlCodec.Limits requestLimits, int maxClientsPerUid) {
        public Settings(int maxInFlightPerClient, int maxClients, int maxQueuedAnswers) {
            this(maxInFlightPerClient, maxClients, maxQueuedAnswers, ControlCodec.Limits.DEFAULT, 256);
        }

        public static Settings defaults() {
            return new Settings(262_144, 1024, 8192);
        }
    }

    private record Outgoing(Encoded encoded, List<Fd> owned) {
        void close() {
            encoded.close();
            Fd.closeAll(owned);
        }
    }

    /** One control connection. Loop thread only. */
    static final class Client {
        final long number;
        /** Null only for a successor's connection known from the pre-copy, until the pause hands it over. */
        SeqpacketSocket socket;
        final Map<Long, Call> inFlight = new HashMap<>();
        /** Calls in {@link #inFlight} with a task ({@link Call#countedTasked}) and without: the pause's checks, O(1). */
        int tasked;
        int untasked;
        final ArrayDeque<Outgoing> queue = new ArrayDeque<>();
        int slot = -1;
        boolean gone;
        boolean wantWrite;
        Authorizer.Role role; // of the peer, decided at its first request

        Client(long number, SeqpacketSocket socket) {
            this.number = number;
            this.socket = socket;
        }
    }

    private static final int MESSAGES_PER_WAKEUP = 64;
    private static final int ACCEPTS_PER_WAKEUP = 64;
    /** Back-off of a listener paused because accept4() ran out of fds or memory: doubles up to the max. */
    private static final long ACCEPT_BACKOFF_MIN_MS = 10;
    private static final long ACCEPT_BACKOFF_MAX_MS = 1000;

    // lines a client can make repeat (issue 12: every repeating log line is rate-limited with a count)
    private static final Log.Limited CLIENT_REFUSED = Log.every("control.client_refused");
    private static final Log.Limited ACCEPT_FAILED = Log.every("control.accept_failed");
    private static final Log.Limited REQUEST_REJECTED = Log.every("control.request_rejected");
    private static final Log.Limited REQUEST_REFUSED = Log.every("control.request_refused");
    private static final Log.Limited ANSWER_DROPPED = Log.every("control.answer_dropped");
    private static final Log.Limited GONE_IN_FLIGHT = Log.every("control.gone_with_requests_in_flight");

    private final String daemon;
    private final String version;
    private final EventLoop loop;
    private final SeqpacketListener listener;
    private final RequestHandler handler;
    private final TaskRegistry tasks;
    private final AuditLog audit;
    private final Counters counters;
    private final Settings settings;
    private final Map<Long, Client> clients = new LinkedHashMap<>();
    private final long startNanos = System.nanoTime();
    private java.util.function.Consumer<Call> restartHook;
    private java.util.function.Consumer<Call> metricsHook;
    private Authorizer authorizer = Authorizer.ownerOnly();
    private int listenerSlot = -1;
    /** The listener's and connections' registrations and the accept back-off: paused for a handoff. */
    private final EventLoop.Group group;
    private long nextClient = 1;
    private boolean shuttingDown;

    public ControlServer(String daemon, String version, EventLoop loop, SeqpacketListener listener,
            RequestHandler handler, TaskRegistry tasks, AuditLog audit, Counters counters, Settings settings) {
        this.daemon = daemon;
        this.version = version;
        this.loop = loop;
        this.group = loop.group("control");
        this.listener = listener;
        this.handler = handler;
        this.tasks = tasks;
        this.audit = audit;
        this.counters = counters;
        this.settings = settings;
    }

    /** Starts accepting, and serving any connections adopted or paused (slot -1). Loop thread. */
    public void start() throws NativeIoException {
        listenerSlot = loop.register(listener.fd().get(), Native.EPOLLIN, events -> acceptAll(), group);
        for (Client c : new ArrayList<>(clients.values())) {
            if (c.slot < 0 && !c.gone) {
                c.slot = loop.register(c.socket.fd().get(), Native.EPOLLIN | Native.EPOLLRDHUP,
                        events -> onClientEvents(c, events), group);
                readClient(c); // requests that arrived while nobody was reading
                if (!c.gone && !c.queue.isEmpty()) {
                    flush(c);
                }
            }
        }
    }

    /**
     * Why one more task of up to {@code fdsPerTask} fds must not go into systemd's fd store
     * ({@link warren.daemon.FdStoreBudget}, from the live tasks and connections as now), or null.
     * Any thread: the counts are read without a lock, which a bound of that size does not mind.
     */
    public String fdStoreRefusal(int fdsPerTask) {
        long slotted;
        long slotNames;
        synchronized (book) {
            slotted = book.inUse();
            slotNames = book.nameBytes();
        }
        return warren.daemon.FdStoreBudget.refusal(tasks.active(), tasks.nextNumber(), fdsPerTask, slotted, slotNames,
                clients.size(), nextClient);
    }

    private warren.daemon.PairBook book = new warren.daemon.PairBook();

    /** The fd store's pair book (warren.daemon.PairBook): handed to a successor with the control item. */
    public warren.daemon.PairBook pairBook() {
        return book;
    }

    /** The daemon's pair book, which its handler's journals write into (before the loop runs). */
    public void pairBook(warren.daemon.PairBook b) {
        this.book = b;
    }

    TaskRegistry tasks() {
        return tasks;
    }

    /** Who serves {@code Restart} (the daemon's upgrade); without one it is UNKNOWN_REQUEST. */
    public void onRestart(java.util.function.Consumer<Call> hook) {
        this.restartHook = hook;
    }

    /** Who answers {@code Metrics} (on the loop thread, before returning); without one it is UNKNOWN_REQUEST. */
    public void onMetrics(java.util.function.Consumer<Call> hook) {
        this.metricsHook = hook;
    }

    private java.util.function.Consumer<Call> traceHook;

    /** Who serves {@code Trace} (the daemon's tracer); without one it is UNKNOWN_REQUEST. */
    public void onTrace(java.util.function.Consumer<Call> hook) {
        this.traceHook = hook;
    }

    public Counters counters() {
        return counters;
    }

    /**
     * Who may ask what (the daemon's control.* roles). Until this is called only uid 0 and the
     * daemon's own uid are served. Loop thread, or before {@link #start}.
     */
    public void authorize(Authorizer a) {
        this.authorizer = a;
        for (Client c : clients.values()) {
            c.role = null;
        }
    }

    public Authorizer authorizer() {
        return authorizer;
    }

    public int clientCount() {
        return clients.size();
    }

    public boolean isShuttingDown() {
        return shuttingDown;
    }

    /** Told of every accepted connection and its close (systemd's fd store keeps them over a crash). Loop thread. */
    public interface ConnectionJournal {
        void opened(long number, Fd socket);

        void closed(long number);
    }

    private ConnectionJournal connectionJournal;

    public void connectionJournal(ConnectionJournal j) {
        this.connectionJournal = j;
    }

    // ---- accepting

    private long acceptBackoffMs;
    private boolean acceptPaused;
    /** fds attached to answers queued for clients that have not read them yet (they count against fd limits). */
    private long queuedFds;

    /** fds held by answers waiting in the clients' queues. Loop thread. */
    public long queuedFds() {
        return queuedFds;
    }

    /**
     * Accepts up to {@link #ACCEPTS_PER_WAKEUP} connections (the listener is level-triggered: the
     * rest come in the next cycle). When accept4() fails for lack of fds or memory (EMFILE,
     * ENFILE, ENOBUFS, ENOMEM) the connection stays in the backlog, so retrying at once would spin:
     * the listener is paused (epoll events 0) and retried after a back-off of 10 ms doubling to
     * 1 s, one log line per 10 s saying how often it happened.
     */
    private void acceptAll() throws NativeIoException {
        for (int i = 0; i < ACCEPTS_PER_WAKEUP && listenerSlot >= 0 && !acceptPaused; i++) {
            SeqpacketSocket s;
            try {
                s = listener.accept();
            } catch (NativeIoException e) {
                int errno = e.errno();
                if (errno == warren.fdpass.libc.Errno.ECONNABORTED) {
                    continue; // the client gave up before we took it
                }
                if (errno != warren.fdpass.libc.Errno.EMFILE && errno != warren.fdpass.libc.Errno.ENFILE
                        && errno != warren.fdpass.libc.Errno.ENOBUFS && errno != warren.fdpass.libc.Errno.ENOMEM) {
                    throw e;
                }
                pauseAccepting(e);
                return;
            }
            if (s == null) {
                acceptBackoffMs = 0;
                return;
            }
            acceptBackoffMs = 0;
            Client c = new Client(nextClient++, s);
            counters.increment("clients.accepted");
            String refusal = null;
            if (clients.size() >= settings.maxClients()) {
                refusal = "too many control connections (" + settings.maxClients() + ", control.max_clients)";
            } else if (clientsOfUid(s.peer().uid()) >= settings.maxClientsPerUid()) {
                counters.increment("clients.refused_per_uid");
                refusal = "too many control connections of uid " + s.peer().uid() + " (" + settings.maxClientsPerUid()
                        + ", control.max_clients_per_uid)";
            }
            if (refusal != null) {
                counters.increment("clients.refused");
                CLIENT_REFUSED.warn("connection " + c.number + " (" + s.peer() + ") refused: " + refusal);
                sendDirect(s, error(0, com.google.protobuf.ByteString.EMPTY, Error.Code.RESOURCE_EXHAUSTED, refusal));
                s.close();
                continue;
            }
            try {
                c.slot = loop.register(s.fd().get(), Native.EPOLLIN | Native.EPOLLRDHUP, events -> onClientEvents(c, events),
                        group);
            } catch (NativeIoException e) {
                s.close();
                throw e;
            }
            clients.put(c.number, c);
            if (connectionJournal != null) {
                connectionJournal.opened(c.number, s.fd());
            }
            Log.debug("connection " + c.number + " from " + s.peer());
        }
    }

    private int clientsOfUid(int uid) {
        int n = 0;
        for (Client c : clients.values()) {
            n += c.socket.peer().uid() == uid ? 1 : 0;
        }
        return n;
    }

    private void pauseAccepting(NativeIoException e) {
        counters.increment("accept.exhausted");
        acceptBackoffMs = acceptBackoffMs == 0 ? ACCEPT_BACKOFF_MIN_MS : Math.min(ACCEPT_BACKOFF_MAX_MS, 2 * acceptBackoffMs);
        ACCEPT_FAILED.warn("cannot accept control connections: " + e.getMessage() + "; listener paused, retried in "
                + acceptBackoffMs + " ms (up to " + ACCEPT_BACKOFF_MAX_MS + " ms) while it lasts");
        try {
            loop.modify(listenerSlot, 0);
        } catch (NativeIoException m) {
            Log.error("cannot pause the control listener", m);
        }
        acceptPaused = true;
        pausedListenerSlot = listenerSlot;
        loop.schedule(acceptBackoffMs, resumeAccepting, group); // held while paused for a handoff
    }

    private int pausedListenerSlot = -1;
    private final Runnable resumeAccepting = this::resumeAccepting;

    private void resumeAccepting() {
        acceptPaused = false;
        if (listenerSlot < 0 || listenerSlot != pausedListenerSlot) {
            return; // shut down meanwhile
        }
        try {
            loop.modify(listenerSlot, Native.EPOLLIN);
            acceptAll();
        } catch (NativeIoException x) {
            Log.error("cannot resume the control listener", x);
        }
    }

    private void onClientEvents(Client c, int events) {
        if (c.gone) {
            return;
        }
        if ((events & Native.EPOLLOUT) != 0) {
            flush(c);
        }
        if (!c.gone && (events & (Native.EPOLLIN | Native.EPOLLHUP | Native.EPOLLRDHUP | Native.EPOLLERR)) != 0) {
            readClient(c);
        }
    }

    private void readClient(Client c) {
        for (int i = 0; i < MESSAGES_PER_WAKEUP && !c.gone; i++) {
            Received r;
            try {
                r = c.socket.receive();
            } catch (FdPassException e) {
                if (e.reason() == FdPassException.Reason.FDS_NOT_INSTALLED) { // out of fds: "not now", by id
                    Request head = parseQuietly(e.payload());
                    reject(c, new ProtocolException(Error.Code.RESOURCE_EXHAUSTED, e.getMessage() + "; send it again"
                            + " when answers have been read or tasks have ended", head == null ? 0 : head.getId(),
                            head == null ? null : head.getMetadata()));
                    continue;
                }
                Error.Code code = e.reason() == FdPassException.Reason.TRUNCATED ? Error.Code.TRUNCATED
                        : e.reason() == FdPassException.Reason.TOO_MANY_FDS ? Error.Code.TOO_MANY_FDS
                        : Error.Code.MALFORMED;
                reject(c, new ProtocolException(code, e.getMessage(), 0, null));
                continue;
            } catch (NativeIoException e) {
                closeClient(c, "receive failed: " + e.getMessage());
                return;
            }
            if (r == null) {
                return;
            }
            if (r.isEof()) {
                closeClient(c, "closed by peer");
                return;
            }
            Decoded<Request> d;
            try {
                d = ControlCodec.decodeRequest(r, settings.requestLimits()); // a spill over the limit is never read
            } catch (ProtocolException e) {
                reject(c, e);
                continue;
            }
            dispatch(c, d);
        }
    }

    /** The id and metadata of a message whose fds were lost, if its bytes parse (metadata within the limit). */
    private Request parseQuietly(byte[] bytes) {
        try {
            Request r = Request.parseFrom(bytes);
            return r.getMetadata().size() > settings.requestLimits().maxMetadataBytes() ? r.toBuilder().clearMetadata()
                    .build() : r;
        } catch (com.google.protobuf.InvalidProtocolBufferException | RuntimeException x) {
            return null;
        }
    }

    private void dispatch(Client c, Decoded<Request> d) {
        Request req = d.message();
        Request.BodyCase body = req.getBodyCase();
        requestCounter(body).increment();
        if (c.role == null) {
            c.role = authorizer.roleOf(c.socket.peer());
        }
        boolean ownTarget = body != Request.BodyCase.CANCEL || ownTarget(c, req);
        String denied = authorizer.refusal(c.role, req, ownTarget);
        if (denied != null) {
            d.close();
            reject(c, new ProtocolException(Error.Code.PERMISSION_DENIED, denied, req.getId(), req.getMetadata()),
                    new JsonLine().put("request", body.name().toLowerCase(java.util.Locale.ROOT))
                            .put("role", Authorizer.needed(body, ownTarget).word()));
            return;
        }
        ProtocolException refusal = null;
        if (c.inFlight.containsKey(req.getId())) {
            refusal = new ProtocolException(Error.Code.DUPLICATE_ID, "request id " + req.getId()
                    + " is already in flight on this connection", req.getId(), req.getMetadata());
        } else if (isTaskBody(body) && c.inFlight.size() >= settings.maxInFlightPerClient()) {
            refusal = new ProtocolException(Error.Code.TOO_MANY_IN_FLIGHT, c.inFlight.size()
                    + " requests of this connection await their answer (control.max_in_flight_per_client = "
                    + settings.maxInFlightPerClient() + "); wait for answers first", req.getId(), req.getMetadata());
        } else if (shuttingDown && isTaskBody(body)) {
            refusal = new ProtocolException(Error.Code.SHUTTING_DOWN, daemon + " is shutting down and takes no new work",
                    req.getId(), req.getMetadata());
        } else if (isTaskBody(body) && body != Request.BodyCase.TRACE && !handler.serves().contains(body)) {
            refusal = new ProtocolException(Error.Code.UNKNOWN_REQUEST, daemon + " does not serve "
                    + body.name().toLowerCase(java.util.Locale.ROOT) + " requests", req.getId(), req.getMetadata());
        }
        if (refusal != null) {
            d.close();
            reject(c, refusal);
            return;
        }
        Call call = new Call(this, c, d);
        c.inFlight.put(req.getId(), call);
        c.untasked++;
        if (tracking) {
            link(call); // begun during a pre-copy: sent at the pause if it has a task by then
        }
        try {
            switch (body) {
                case STATUS: call.reply(Response.newBuilder().setStatus(status())); break;
                case LIST: listing(call, c); break;
                case CANCEL: cancel(call); break;
                case METRICS:
                    if (metricsHook == null) {
                        call.fail(Error.Code.UNKNOWN_REQUEST, daemon + " has no metrics");
                    } else {
                        metricsHook.accept(call);
                    }
                    break;
                case TRACE:
                    if (traceHook == null) {
                        call.fail(Error.Code.UNKNOWN_REQUEST, daemon + " cannot trace its tasks");
                    } else {
                        traceHook.accept(call); // NOT_FOUND, INVALID_ARGUMENT, or a task of kind "trace"
                    }
                    break;
                case RESTART:
                    if (restartHook == null) {
                        call.fail(Error.Code.UNKNOWN_REQUEST, daemon + " cannot be upgraded in place");
                    } else {
                        restartHook.accept(call);
                    }
                    break;
                default: handler.handle(call);
            }
        } catch (Exception | LinkageError | AssertionError e) {
            Log.error("request " + req.getId() + " on connection " + c.number + " failed", e);
            if (!call.isAnswered()) {
                call.fail(Error.Code.INTERNAL, "internal error: " + e);
            }
        } finally {
            call.release();
        }
    }

    /** requests.BODY by body, each made at its first request (loop thread): no name built per request. */
    private final java.util.concurrent.atomic.LongAdder[] requestCounters =
            new java.util.concurrent.atomic.LongAdder[Request.BodyCase.values().length];

    private java.util.concurrent.atomic.LongAdder requestCounter(Request.BodyCase body) {
        java.util.concurrent.atomic.LongAdder a = requestCounters[body.ordinal()];
        if (a == null) {
            a = counters.counter("requests." + body.name().toLowerCase(java.util.Locale.ROOT));
            requestCounters[body.ordinal()] = a;
        }
        return a;
    }

    /** Bodies that go to the daemon's handler (and may become long tasks); the rest are answered at once. */
    private static boolean isTaskBody(Request.BodyCase body) {
        return body != Request.BodyCase.STATUS && body != Request.BodyCase.LIST && body != Request.BodyCase.CANCEL
                && body != Request.BodyCase.RESTART && body != Request.BodyCase.METRICS;
    }

    /** Whether a Cancel's target task belongs to the requester's uid (true when there is no such task). */
    private boolean ownTarget(Client c, Request req) {
        var cancel = req.getCancel();
        TaskRegistry.Record r = cancel.getTask() != 0 ? tasks.byNumber(cancel.getTask())
                : tasks.byRequest(c.number, cancel.getTargetId());
        return r == null || r.peer().uid() == c.socket.peer().uid();
    }

    private void cancel(Call call) {
        var cancel = call.request().getCancel();
        TaskRegistry.Record r = cancel.getTask() != 0 ? tasks.byNumber(cancel.getTask())
                : tasks.byRequest(call.connection(), cancel.getTargetId());
        if (r == null) {
            call.fail(Error.Code.NOT_FOUND, cancel.getTask() != 0 ? "no task " + cancel.getTask()
                    : "no task for request " + cancel.getTargetId() + " on this connection");
            return;
        }
        r.task().cancel();
        Response.Builder answer = Response.newBuilder().setCancelled(Cancelled.newBuilder().setTask(r.number()));
        EventLoop on = r.task().loop();
        if (on == null || on == loop) {
            call.reply(answer);
        } else {
            // through the task's loop, behind its cancel: the task's own answer (posted here by that loop
            // first) and its end in the registry come before Cancelled, as they do on one loop by the next request
            on.execute(() -> call.reply(answer));
        }
    }

    private StatusReport status() {
        StatusReport.Builder b = StatusReport.newBuilder().setDaemon(daemon).setVersion(version)
                .setPid(Native.getpid()).setUptimeMs((System.nanoTime() - startNanos) / 1_000_000)
                .setTasksActive(tasks.active()).setTasksTotal(tasks.total()).setClients(clients.size())
                .setShuttingDown(shuttingDown);
        counters.snapshot().forEach(b::putCounters);
        return b.build();
    }

    /**
     * Every task for operators and admins; only the requester's own uid's tasks below that. A
     * task's state and traffic are read on the loop it lives on ({@link warren.daemon.task.Task#loop}):
     * those of other loops are posted there and come back here, then the call is answered.
     */
    private void listing(Call call, Client c) {
        long now = System.nanoTime();
        boolean all = Authorizer.seesAllTasks(c.role);
        List<TaskInfo.Builder> infos = new ArrayList<>();
        Map<EventLoop, List<Object[]>> elsewhere = new java.util.IdentityHashMap<>();
        for (TaskRegistry.Record r : tasks.list()) {
            if (!all && r.peer().uid() != c.socket.peer().uid()) {
                continue;
            }
            TaskInfo.Builder t = TaskInfo.newBuilder().setTask(r.number()).setRequestId(r.requestId()).setKind(r.kind())
                    .setMetadata(r.metadata()).setPeerPid(r.peer().pid()).setPeerUid(r.peer().uid())
                    .setStartUnixNanos(r.startUnixNanos()).setConnection(r.connection())
                    .setPeerGid(r.peer().gid()).setAgeMs(Math.max(0, now - r.startNanos()) / 1_000_000);
            infos.add(t);
            EventLoop on = r.task().loop();
            if (on == null || on == loop) {
                fill(r, t);
            } else {
                elsewhere.computeIfAbsent(on, k -> new ArrayList<>()).add(new Object[] {r, t});
            }
        }
        Runnable answer = () -> {
            Listing.Builder b = Listing.newBuilder();
            infos.forEach(b::addTasks);
            call.reply(Response.newBuilder().setListing(b));
        };
        if (elsewhere.isEmpty()) {
            answer.run();
            return;
        }
        int[] pending = {elsewhere.size()}; // this loop's
        elsewhere.forEach((on, part) -> on.execute(() -> {
            for (Object[] rt : part) {
                fill((TaskRegistry.Record) rt[0], (TaskInfo.Builder) rt[1]);
            }
            loop.execute(() -> {
                if (--pending[0] == 0) {
                    answer.run();
                }
            });
        }));
    }

    /** A task's state and traffic, on the loop it lives on. */
    private static void fill(TaskRegistry.Record r, TaskInfo.Builder t) {
        try {
            t.setState(r.task().state());
            r.task().traffic(t);
        } catch (RuntimeException e) {
            t.setState("?");
        }
    }

    private void reject(Client c, ProtocolException e) {
        reject(c, e, null);
    }

    /** An Error answer, its counter, an audit "rejected" line (with {@code fields}, if any) and a log line. */
    private void reject(Client c, ProtocolException e, JsonLine fields) {
        counters.increment("errors." + e.code().name());
        audit.write(audit.line("rejected", 0).put("connection", c.number).put("peer_pid", c.socket.peer().pid())
                .put("peer_uid", c.socket.peer().uid()).put("peer_gid", c.socket.peer().gid())
                .put("request_id", e.id()).put("code", e.code().name()).put("error", e.getMessage()).merge(fields));
        REQUEST_REJECTED.info("connection " + c.number + " (" + c.socket.peer() + "): request " + e.id() + " rejected: "
                + e.code() + ": " + e.getMessage());
        send(c, Response.newBuilder().setId(e.id()).setMetadata(e.metadata()).setError(e.toError()).build(),
                List.of(), false);
    }

    private static Response error(long id, com.google.protobuf.ByteString metadata, Error.Code code, String msg) {
        return Response.newBuilder().setId(id).setMetadata(metadata)
                .setError(Error.newBuilder().setCode(code).setMessage(msg)).build();
    }

    // ---- answering

    /** Final answer of a call (from {@link Call#reply}); any thread. */
    void finish(Call call, Response resp, List<Fd> fds, String outcome, JsonLine fields, boolean endTask) {
        if (!loop.inLoop()) {
            loop.execute(() -> finish(call, resp, fds, outcome, fields, endTask));
            return;
        }
        call.release();
        if (call.client.inFlight.remove(call.id()) == call) {
            if (call.countedTasked) {
                call.client.tasked--;
            } else {
                call.client.untasked--;
            }
        }
        changed(call);
        TaskRegistry.Record r = call.task();
        if (r != null && endTask) {
            tasks.end(r, outcome, fields);
        } else if (r != null) {
            kept.add(call); // answered, its task lives on
        }
        if (resp.getBodyCase() == Response.BodyCase.ERROR) {
            counters.increment("errors." + resp.getError().getCode().name());
            if (r == null) { // refused by the handler before it became a task: one audit line
                Client c = call.client;
                audit.write(audit.line("rejected", 0).put("connection", c.number)
                        .put("peer_pid", c.socket.peer().pid()).put("peer_uid", c.socket.peer().uid())
                        .put("request_id", call.id()).putBase64("metadata", call.metadata().toByteArray())
                        .put("code", resp.getError().getCode().name()).put("error", resp.getError().getMessage()));
                REQUEST_REFUSED.info("connection " + c.number + " (" + c.socket.peer() + "): request " + call.id() + " refused: "
                        + resp.getError().getCode() + ": " + resp.getError().getMessage());
            }
        }
        send(call.client, resp, fds, true);
        Runnable after = call.takeAfterAnswer();
        if (after != null) {
            after.run();
        }
    }

    /** Ends a task that outlived its answer. Any thread. */
    void endTask(Call call, TaskRegistry.Record r, String outcome, JsonLine fields) {
        if (!loop.inLoop()) {
            loop.execute(() -> endTask(call, r, outcome, fields));
            return;
        }
        kept.remove(call);
        changed(call);
        tasks.end(r, outcome, fields);
    }

    /** A call in flight got its task (Call.startTask, an adoption): counted by its connection. Any thread. */
    void tasked(Call call) {
        if (!loop.inLoop()) {
            loop.execute(() -> tasked(call));
            return;
        }
        Client c = call.client;
        if (c != null && !call.countedTasked && c.inFlight.get(call.id()) == call) {
            call.countedTasked = true;
            c.untasked--;
            c.tasked++;
        }
        changed(call);
    }

    /** Queues an answer; {@code owned} fds are attached and closed once sent. Any thread. */
    void send(Client c, Response resp, List<Fd> owned, boolean isFinal) {
        if (!loop.inLoop()) {
            loop.execute(() -> send(c, resp, owned, isFinal));
            return;
        }
        if (c.gone) {
            counters.increment("answers.dropped");
            if (isFinal) {
                ANSWER_DROPPED.info("connection " + c.number + " gone: answer to request " + resp.getId() + " ("
                        + resp.getBodyCase().name().toLowerCase(java.util.Locale.ROOT) + ") dropped, "
                        + owned.size() + " fds closed");
            }
            Fd.closeAll(owned);
            return;
        }
        Encoded enc;
        try {
            enc = ControlCodec.encodeResponse(resp, owned);
        } catch (NativeIoException | FdPassException | IllegalArgumentException e) {
            Log.error("cannot encode the answer to request " + resp.getId(), e);
            Fd.closeAll(owned);
            if (resp.getBodyCase() != Response.BodyCase.ERROR) {
                send(c, error(resp.getId(), resp.getMetadata(), Error.Code.INTERNAL,
                        "answer could not be encoded: " + e.getMessage()), List.of(), isFinal);
            }
            return;
        }
        if (c.queue.size() >= settings.maxQueuedAnswers()) {
            new Outgoing(enc, owned).close();
            closeClient(c, settings.maxQueuedAnswers() + " answers unread (control.max_queued_answers)");
            return;
        }
        c.queue.add(new Outgoing(enc, owned));
        queuedFds += enc.fds().size();
        if (c.queue.size() == 1) {
            flush(c);
        }
    }

    private void flush(Client c) {
        while (!c.gone && !c.queue.isEmpty()) {
            Outgoing o = c.queue.peek();
            boolean sent;
            try {
                sent = c.socket.send(o.encoded().bytes(), o.encoded().fds());
            } catch (NativeIoException | FdPassException e) {
                closeClient(c, "send failed: " + e.getMessage());
                return;
            }
            if (!sent) {
                setWantWrite(c, true);
                return;
            }
            c.queue.poll();
            queuedFds -= o.encoded().fds().size();
            o.close();
        }
        if (!c.gone) {
            setWantWrite(c, false);
        }
    }

    private void setWantWrite(Client c, boolean on) {
        if (c.wantWrite == on) {
            return;
        }
        if (c.slot < 0) {
            return; // adopted, not registered yet: start() registers it and flushes what is queued
        }
        c.wantWrite = on;
        try {
            loop.modify(c.slot, Native.EPOLLIN | Native.EPOLLRDHUP | (on ? Native.EPOLLOUT : 0));
        } catch (NativeIoException e) {
            closeClient(c, "epoll_ctl failed: " + e.getMessage());
        }
    }

    private static void sendDirect(SeqpacketSocket s, Response resp) {
        try {
            s.send(resp.toByteArray(), List.of());
        } catch (NativeIoException | FdPassException e) {
            // best effort on a connection we are closing
        }
    }

    private void closeClient(Client c, String why) {
        if (c.gone) {
            return;
        }
        c.gone = true;
        loop.unregister(c.slot);
        for (Outgoing o : c.queue) {
            queuedFds -= o.encoded().fds().size();
            o.close();
        }
        c.queue.clear();
        if (connectionJournal != null) {
            connectionJournal.closed(c.number);
        }
        c.socket.close();
        clients.remove(c.number);
        if (tracking) {
            for (Call call : c.inFlight.values()) {
                changed(call); // not handed over: a copied one is gone
            }
        }
        if (!c.inFlight.isEmpty()) {
            GONE_IN_FLIGHT.info("connection " + c.number + " (" + c.socket.peer() + ") " + why + " with " + c.inFlight.size()
                    + " requests in flight; their tasks go on, their answers will be dropped");
        } else {
            Log.debug("connection " + c.number + " " + why);
        }
    }

    // ---- upgrade handoff

    private Call except;
    /** Calls answered with their task kept (answerKeepingTask) until the task ends. Loop thread. */
    private final java.util.Set<Call> kept = java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>());
    /** Adopted calls waiting for their task object ({@link #adoptTask}). */
    private final java.util.IdentityHashMap<Call, Pending> pendingTasks = new java.util.IdentityHashMap<>();

    /** An adopted call's description, whose age was right at {@code ageAt} (System.nanoTime). */
    private record Pending(warren.handoff.v1.PendingCall pc, long ageAt) {}

    /**
     * Pre-copy, old side: tracking since {@link #preCopyCalls} (until the pre-copy is given up, a
     * failed handoff resumes, or the commit): calls are listed as they begin, get their task,
     * are answered or lose their connection, so the pause and {@link #export} walk only those.
     */
    private boolean tracking;
    /** Pre-copy, old side: head of the changed list (intrusive through {@link Call#nextChanged}). */
    private Call changedHead;
    /** Calls the last pause + export visited, and the successor's last adoption (for tests and logs). */
    private long pauseVisits;
    private long adoptVisits;

    /** Pre-copy, successor: a call built from the copy and what the copy said of it. Loop thread. */
    static final class PreCall {
        final Call call;
        /** Its connection's number; -1: detached (answered, its task lives on). */
        long connection;
        warren.handoff.v1.PendingCall pc;
        long at;
        /** Its task attached in the pre-copy ({@link #preAdoptTask}). */
        boolean attached;

        PreCall(Call call, long connection, warren.handoff.v1.PendingCall pc, long at) {
            this.call = call;
            this.connection = connection;
            this.pc = pc;
            this.at = at;
        }
    }

    /** Pre-copy, successor: the pre-built calls by ref, until the pause's state places them. */
    private Map<Long, PreCall> preCalls = new HashMap<>();
    /** Pre-copy, successor: those without their task yet. */
    private java.util.Set<PreCall> preUnattached = java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>());
    /**
     * Pre-copy, successor: the connections the pre-copied calls are on, built without their socket
     * (which comes at the pause) and holding those calls already, so the pause places nothing.
     */
    private final Map<Long, Client> shells = new HashMap<>();
    private boolean handoffPaused;

    /** {@code call} changed (answered, its task came or ended, its connection went): listed if tracked. Loop thread. */
    private void changed(Call call) {
        if (tracking && !call.listed) {
            link(call);
        }
    }

    private void link(Call call) {
        call.listed = true;
        call.nextChanged = changedHead;
        changedHead = call;
    }

    /** Calls visited by the last pause and export (old side), O(changed) after a pre-copy. */
    public long pauseVisits() {
        return pauseVisits;
    }

    /** Calls and connections visited by the last adoption (successor), O(changed) after a pre-copy. */
    public long adoptVisits() {
        return adoptVisits;
    }

    /**
     * Stops reading requests and accepting connections, at a clean point for the handoff: every
     * queued answer must have been sent (else IllegalStateException naming the connection, and
     * nothing is paused) and every request in flight must be a task (a request still being
     * served cannot move). Loop thread.
     */
    public void pauseForHandoff() {
        pauseForHandoff(null);
    }

    /**
     * As {@link #pauseForHandoff()}, leaving out {@code except} (the Restart call itself). O(connections):
     * each connection counts its calls with and without a task.
     */
    public void pauseForHandoff(Call except) {
        if (!handoffPaused) {
            pauseVisits = 0;
        }
        this.except = except;
        int withTasks = kept.size();
        for (Client c : clients.values()) {
            if (!c.queue.isEmpty()) {
                flush(c);
            }
            if (!c.queue.isEmpty()) {
                throw new IllegalStateException("connection " + c.number + " (" + c.socket.peer() + ") has "
                        + c.queue.size() + " answers it has not read yet");
            }
            boolean exceptHere = except != null && except.client == c && c.inFlight.get(except.id()) == except;
            int untasked = c.untasked - (exceptHere && !except.countedTasked ? 1 : 0);
            if (untasked > 0) {
                for (Call call : c.inFlight.values()) { // the refusal names one: a scan, never on success
                    if (!call.countedTasked && call != except) {
                        throw new IllegalStateException("request " + call.id() + " on connection " + c.number
                                + " is still being served");
                    }
                }
            }
            withTasks += c.tasked - (exceptHere && except.countedTasked ? 1 : 0);
        }
        if (tasks.active() != withTasks) {
            throw new IllegalStateException((tasks.active() - withTasks)
                    + " tasks outlived their answers; their daemon cannot hand them over yet");
        }
        group.pause(); // O(1): the listener's and connections' events are held, not read
        handoffPaused = true;
    }

    /** Undoes {@link #pauseForHandoff} (the handoff did not happen). Loop thread. */
    public void resumeAfterHandoff() throws NativeIoException {
        forgetCopiedCalls(); // a failed handoff's pre-copy
        except = null;
        if (!handoffPaused) {
            return;
        }
        handoffPaused = false;
        group.resume(); // what arrived meanwhile (requests, connections, hang-ups) is served now
        for (Client c : new ArrayList<>(clients.values())) {
            if (!c.gone && !c.queue.isEmpty()) {
                flush(c); // answers queued while paused
            }
        }
    }

    /** True while paused for a handoff (for tests). */
    public boolean pausedForHandoff() {
        return group.paused();
    }

    /**
     * The paused server as a handoff item: listener, connections and their pending calls with
     * their tasks (fds borrowed), each call named by its task number ({@link #taskRef}; also
     * {@link #callRef} for other items). After a pre-copy only the calls begun or changed since
     * (the changed list) and the refs of copied calls gone ({@code calls_delta}): O(connections +
     * changed). Loop thread.
     */
    public warren.daemon.handoff.HandoffItem export(String name) {
        if (!handoffPaused) {
            throw new IllegalStateException("export needs pauseForHandoff first");
        }
        List<Fd> fds = new ArrayList<>();
        fds.add(Fd.adopt(listener.fd().get())); // views for sending: never closed
        warren.handoff.v1.ControlState.Builder st = ControlStateCodec.head(nextClient, tasks.nextNumber(), tasks.total(),
                counters.snapshot(), counters.histogramStates(),
                authorizer.socket().kind() == Authorizer.SocketKind.FILE ? authorizer.socket().name() : "",
                System.nanoTime());
        long now = System.nanoTime();
        long visits = 0;
        if (!tracking) { // no pre-copy: every call
            for (Client c : clients.values()) {
                warren.handoff.v1.ControlConnection.Builder cb = ControlStateCodec.connection(c.number, fds.size());
                fds.add(Fd.adopt(c.socket.fd().get()));
                for (Call call : c.inFlight.values()) {
                    visits++;
                    if (call != except) {
                        cb.addCalls(ControlStateCodec.call(call, taskRef(call), now - call.task().startNanos()));
                    }
                }
                st.addConnections(cb);
            }
            for (Call call : kept) {
                visits++;
                st.addDetached(ControlStateCodec.call(call, taskRef(call), now - call.task().startNanos()));
            }
        } else {
            java.util.IdentityHashMap<Client, List<warren.handoff.v1.PendingCall.Builder>> sent =
                    new java.util.IdentityHashMap<>();
            for (Call call = changedHead; call != null; call = call.nextChanged) {
                visits++;
                if (inFlightHere(call)) {
                    if (!call.copied || call.copiedDetached || call.copiedAccepted != call.acceptedSent()) {
                        sent.computeIfAbsent(call.client, k -> new ArrayList<>())
                                .add(ControlStateCodec.call(call, taskRef(call), now - call.task().startNanos()));
                    } // else: the successor has it as it is
                } else if (call.task() != null && kept.contains(call)) {
                    if (!call.copied || !call.copiedDetached) { // one copied in flight is sent again: answered since
                        st.addDetached(ControlStateCodec.call(call, taskRef(call), now - call.task().startNanos()));
                    }
                } else if (call.copied) {
                    st.addGoneCalls(call.task().number());
                }
            }
            if (except != null && except.copied && !except.listed) {
                st.addGoneCalls(except.task().number()); // copied, and never changed since: the Restart call stays
            }
            for (Client c : clients.values()) {
                warren.handoff.v1.ControlConnection.Builder cb = ControlStateCodec.connection(c.number, fds.size());
                fds.add(Fd.adopt(c.socket.fd().get()));
                List<warren.handoff.v1.PendingCall.Builder> calls = sent.get(c);
                if (calls != null) {
                    for (warren.handoff.v1.PendingCall.Builder b : calls) {
                        cb.addCalls(b);
                    }
                }
                st.addConnections(cb);
            }
            st.setCallsDelta(true);
        }
        Fd bookFd = book.storedFd(); // a view, as the connections
        if (bookFd != null) {
            st.setFdPairBook(fds.size() + 1);
            fds.add(bookFd);
        }
        pauseVisits += visits;
        return new warren.daemon.handoff.HandoffItem(name, st.build().toByteArray(), fds);
    }

    /** In flight on a connection that is handed over, with a task, and not the Restart call. Loop thread. */
    private boolean inFlightHere(Call call) {
        Client c = call.client;
        return c != null && !c.gone && call != except && call.task() != null && c.inFlight.get(call.id()) == call;
    }

    /**
     * Pre-copy (old side, while serving): every call with a task now, as an item without fds (a
     * ControlState whose connections are named by number), each marked copied with its
     * accepted_sent; from now on calls are listed as they change (tracking), so that
     * {@link #export} at the pause sends only calls begun or changed since and the refs of those
     * gone. Loop thread.
     */
    public warren.daemon.handoff.HandoffItem preCopyCalls(String name) {
        tracking = true;
        changedHead = null;
        warren.handoff.v1.ControlState.Builder st = warren.handoff.v1.ControlState.newBuilder()
                .setFormat(ControlStateCodec.FORMAT);
        long now = System.nanoTime();
        for (Client c : clients.values()) {
            warren.handoff.v1.ControlConnection.Builder cb = ControlStateCodec.connection(c.number, 0);
            for (Call call : c.inFlight.values()) {
                call.nextChanged = null;
                if (call.task() == null) {
                    call.copied = false;
                    link(call); // still being served: it goes at the pause, if it has a task by then
                    continue;
                }
                call.copied = true;
                call.copiedAccepted = call.acceptedSent();
                call.copiedDetached = false;
                call.listed = false;
                cb.addCalls(ControlStateCodec.call(call, taskRef(call), now - call.task().startNanos()));
            }
            if (cb.getCallsCount() > 0) {
                st.addConnections(cb);
            }
        }
        for (Call call : kept) {
            call.copied = true;
            call.copiedAccepted = true;
            call.copiedDetached = true;
            call.listed = false;
            call.nextChanged = null;
            st.addDetached(ControlStateCodec.call(call, taskRef(call), now - call.task().startNanos()));
        }
        return new warren.daemon.handoff.HandoffItem(name, st.build().toByteArray(), List.of());
    }

    /** The pre-copy was given up: nothing is tracked, export sends every call again. Loop thread. */
    public void forgetCopiedCalls() {
        tracking = false;
        changedHead = null; // calls keep stale marks: the next preCopyCalls sets every live call's afresh
    }

    /**
     * Pre-copy, in the successor before it serves: builds the calls of a {@link #preCopyCalls}
     * item, each on its connection as known so far (a connection without its socket: the control
     * item at the pause brings it, or names the calls gone). Refuses a ref given twice. Returns
     * the calls built.
     */
    public int preAdoptCalls(warren.handoff.v1.ControlState st) {
        long now = System.nanoTime();
        for (warren.handoff.v1.ControlConnection cc : st.getConnectionsList()) {
            for (warren.handoff.v1.PendingCall pc : cc.getCallsList()) {
                preCall(pc, cc.getNumber(), now);
            }
        }
        for (warren.handoff.v1.PendingCall pc : st.getDetachedList()) {
            preCall(pc, -1, now);
        }
        return preCalls.size();
    }

    private void preCall(warren.handoff.v1.PendingCall pc, long connection, long now) {
        if (preCalls.containsKey(pc.getRef())) {
            throw new IllegalArgumentException("call ref " + pc.getRef() + " pre-copied twice");
        }
        Client shell = null;
        if (connection >= 0) {
            shell = shells.computeIfAbsent(connection, n -> new Client(n, null));
            if (shell.inFlight.containsKey(pc.getId())) {
                throw new IllegalArgumentException("request id " + pc.getId() + " pre-copied twice on connection "
                        + connection);
            }
        }
        Call call = new Call(this, shell, pc.getId(), pc.getMetadata(), connection < 0 || pc.getAcceptedSent());
        if (connection < 0) {
            call.abandon(); // answered by a predecessor: never again
            kept.add(call);
        } else {
            shell.inFlight.put(pc.getId(), call);
            shell.untasked++;
        }
        PreCall p = new PreCall(call, connection, pc, now);
        call.pre = p;
        preCalls.put(pc.getRef(), p);
        preUnattached.add(p);
    }

    /** Pre-copy, successor: the pre-built call of {@code ref} still without its task, or null ({@link #preAdoptTask}). */
    public Call preCopiedCall(long ref) {
        PreCall p = preCalls.get(ref);
        return p == null || p.attached ? null : p.call;
    }

    /**
     * Pre-copy, successor: attaches the task a handler pre-adopted to its pre-built call, as
     * {@link #adoptTask} does at the pause (same number, no start line), so the pause does not.
     */
    public void preAdoptTask(Call call, warren.daemon.task.Task task) {
        PreCall p = call.pre;
        if (p == null || p.attached || preCalls.get(p.pc.getRef()) != p) {
            throw new IllegalArgumentException("not a pre-copied call, or its task is attached already");
        }
        attach(call, p.pc, p.at, task);
        p.attached = true;
        preUnattached.remove(p);
    }

    private void attach(Call call, warren.handoff.v1.PendingCall pc, long ageAt, warren.daemon.task.Task task) {
        call.adoptTask(tasks.adopt(pc.getTask(), pc.getKind(), pc.getId(), pc.getMetadata(),
                new warren.fdpass.PeerCredentials(pc.getPeerPid(), pc.getPeerUid(), pc.getPeerGid()), call.connection(),
                pc.getStartUnixNanos(), pc.getAgeNanos() + (System.nanoTime() - ageAt), task));
        Client c = call.client;
        if (c != null && !call.countedTasked && c.inFlight.get(call.id()) == call) {
            call.countedTasked = true;
            c.untasked--;
            c.tasked++;
        }
    }

    /**
     * Pre-copy: the listener as an item of its own (a ControlState with only the listener, a
     * duplicate owned by the item, and the socket's path), so that a successor builds its daemon
     * before the pause. Loop thread.
     */
    public warren.daemon.handoff.HandoffItem exportListener(String name) throws NativeIoException {
        Fd dup = Fd.adopt(Native.fcntl(listener.fd().get(), Native.F_DUPFD_CLOEXEC, 0));
        warren.handoff.v1.ControlState st = ControlStateCodec.head(nextClient, tasks.nextNumber(), tasks.total(),
                Map.of(), Map.of(),
                authorizer.socket().kind() == Authorizer.SocketKind.FILE ? authorizer.socket().name() : "", 0).build();
        return new warren.daemon.handoff.HandoffItem(name, st.toByteArray(), List.of(dup));
    }

    /** A view of the listener's fd (not to be closed), e.g. to fill a ControlState's fd_listener slot. */
    public Fd listenerFd() {
        return listener.fd();
    }

    /**
     * The ref a call with a task has in an export: its task number, unique in the daemon and known
     * from the task's start, so a pre-copy names a task's call before the pause exports it (the fd
     * store's recovery names stored calls the same way). 0 for a call without a task. Any thread
     * that sees the call's task (a relay's loop: the pair was posted to it after its task started).
     */
    public long taskRef(Call call) {
        return call == null || call.task() == null ? 0 : call.task().number();
    }

    /**
     * The ref {@link #export} gives a call (its task number), 0 if the export leaves it out (no
     * export yet, no task, the Restart call, its connection gone). O(1): nothing is recorded per call.
     */
    public long callRef(Call call) {
        if (!handoffPaused || call == null || call.task() == null) {
            return 0;
        }
        return inFlightHere(call) || kept.contains(call) ? call.task().number() : 0;
    }

    /**
     * After a committed handoff: forgets every connection, call and task without answering or
     * auditing (the successor does), closing only this process's copies. Loop thread.
     */
    public void abandonAfterHandoff() {
        for (Client c : clients.values()) {
            for (Call call : c.inFlight.values()) {
                call.abandon();
            }
            c.inFlight.clear();
            c.tasked = 0;
            c.untasked = 0;
            c.gone = true;
            loop.unregister(c.slot); // before the close: the successor's copy keeps the file (and its epoll item) alive
            c.slot = -1;
            c.socket.close();
        }
        clients.clear();
        kept.clear();
        tasks.forgetAll();
        if (listenerSlot >= 0) {
            loop.unregister(listenerSlot);
            listenerSlot = -1;
        }
        listener.closeKeepingPath(); // the successor serves the same path
        tracking = false;
        changedHead = null;
    }

    /**
     * Takes over a predecessor's connections and pending calls (call {@link #start} after the
     * commit to serve them). The fds used are taken from {@code fds}; the listener is this server's
     * own (the caller built it from {@link #listenerIndex}). After a pre-copy the state is the
     * delta: the pre-built calls are on their connections already (they get their socket here),
     * those named gone are dropped, those sent again take the new accepted_sent. Returns the calls
     * whose tasks are still to be attached, by ref ({@link #adoptTask}): the delta's, and the
     * pre-built ones no {@link #preAdoptTask} claimed. O(connections + changed). Loop thread.
     */
    public Map<Long, Call> adoptConnections(warren.handoff.v1.ControlState st, List<Fd> fds)
            throws NativeIoException, FdPassException {
        ControlStateCodec.check(st, fds);
        if (!st.getCallsDelta() && !preCalls.isEmpty()) {
            throw new IllegalArgumentException(preCalls.size() + " calls were pre-copied, but the state at the pause"
                    + " is not a delta");
        }
        for (long ref : st.getGoneCallsList()) {
            if (!preCalls.containsKey(ref)) {
                throw new IllegalArgumentException("call ref " + ref + " is gone, but was never pre-copied");
            }
        }
        for (warren.handoff.v1.ControlConnection cc : st.getConnectionsList()) {
            for (warren.handoff.v1.PendingCall pc : cc.getCallsList()) {
                PreCall p = preCalls.get(pc.getRef());
                if (p != null && (p.connection != cc.getNumber() || p.call.id() != pc.getId())) {
                    throw new IllegalArgumentException("call ref " + pc.getRef() + " was pre-copied as request "
                            + p.call.id() + " on connection " + p.connection + ", and is now request " + pc.getId()
                            + " on connection " + cc.getNumber());
                }
            }
        }
        if (st.getFdPairBook() != 0) { // checked: in range, open, used once
            book.adopt(fds.get(st.getFdPairBook() - 1).transfer());
        }
        long visits = st.getGoneCallsCount();
        long now = System.nanoTime();
        Map<Long, Call> calls = new HashMap<>();
        List<Client> adopted = new ArrayList<>();
        for (warren.handoff.v1.ControlConnection cc : st.getConnectionsList()) {
            visits++;
            Client c = shells.remove(cc.getNumber()); // holding its pre-copied calls
            if (c == null) {
                c = new Client(cc.getNumber(), null);
            }
            c.socket = SeqpacketSocket.wrap(fds.get(cc.getFd()).transfer());
            clients.put(c.number, c);
            adopted.add(c);
        }
        for (long ref : st.getGoneCallsList()) {
            dropPreCall(preCalls.remove(ref));
        }
        for (int i = 0; i < adopted.size(); i++) {
            Client c = adopted.get(i);
            for (warren.handoff.v1.PendingCall pc : st.getConnections(i).getCallsList()) {
                visits++;
                PreCall p = preCalls.get(pc.getRef());
                if (p != null) { // pre-copied, sent again: changed since
                    p.call.acceptedSent(pc.getAcceptedSent());
                    p.pc = pc;
                    p.at = now;
                    continue; // placed already; attached, or among the unattached below
                }
                if (c.inFlight.containsKey(pc.getId())) {
                    throw new IllegalArgumentException("request id " + pc.getId() + " is twice on connection " + c.number);
                }
                Call call = new Call(this, c, pc.getId(), pc.getMetadata(), pc.getAcceptedSent());
                c.inFlight.put(pc.getId(), call);
                c.untasked++;
                calls.put(pc.getRef(), call);
                pendingTasks.put(call, new Pending(pc, now));
            }
        }
        for (warren.handoff.v1.PendingCall pc : st.getDetachedList()) {
            visits++;
            PreCall p = preCalls.get(pc.getRef());
            if (p != null && p.connection < 0) {
                continue; // detached then, detached now
            }
            if (p != null) { // in flight when copied, answered since with its task kept
                Client shell = p.call.client;
                if (shell.inFlight.remove(p.call.id()) == p.call) {
                    if (p.call.countedTasked) {
                        shell.tasked--;
                    } else {
                        shell.untasked--;
                    }
                }
                p.call.client = null;
                p.call.abandon();
                p.connection = -1;
                p.pc = pc;
                p.at = now;
                kept.add(p.call);
                continue;
            }
            Call call = new Call(this, null, pc.getId(), pc.getMetadata(), true);
            call.abandon(); // answered by a predecessor: never again
            calls.put(pc.getRef(), call);
            pendingTasks.put(call, new Pending(pc, now));
            kept.add(call);
        }
        for (Client shell : shells.values()) { // pre-copied calls on a connection not handed over
            visits++;
            if (!shell.inFlight.isEmpty()) {
                Call call = shell.inFlight.values().iterator().next();
                throw new IllegalArgumentException("pre-copied call ref " + call.pre.pc.getRef() + " is on connection "
                        + shell.number + ", which was not handed over, and it was not named gone");
            }
        }
        shells.clear();
        for (PreCall p : preUnattached) { // pre-built, their task not attached in the pre-copy: now
            visits++;
            calls.put(p.pc.getRef(), p.call);
            pendingTasks.put(p.call, new Pending(p.pc, p.at));
        }
        preUnattached = java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>());
        preCalls = new HashMap<>(); // dropped whole: no pass over the calls
        adoptVisits = visits;
        nextClient = Math.max(nextClient, st.getNextClient());
        tasks.continueFrom(st.getNextTask(), st.getTasksTotal());
        for (Map.Entry<String, Long> e : st.getCountersMap().entrySet()) {
            counters.counter(e.getKey()).add(e.getValue());
        }
        if (counters.adoptHistograms(st.getHistogramsMap()) > 0) {
            Log.info("upgrade: some histograms changed their buckets in this version; they restart");
        }
        handedInPausedAt = st.getPausedMonotonicNanos();
        return calls;
    }

    /** A pre-copied call the state at the pause names gone: off its connection, its task forgotten, never answered. */
    private void dropPreCall(PreCall p) {
        Call call = p.call;
        if (p.connection >= 0) {
            Client shell = call.client;
            if (shell.inFlight.remove(call.id()) == call) {
                if (call.countedTasked) {
                    shell.tasked--;
                } else {
                    shell.untasked--;
                }
            }
        } else {
            kept.remove(call);
        }
        if (p.attached) {
            tasks.forget(p.pc.getTask());
        }
        preUnattached.remove(p);
        call.abandon(); // a pre-attached task that ended is checked against this (Relay: its pair must have ended)
    }

    private long handedInPausedAt;

    /** When the predecessor paused (System.nanoTime), from the adopted state; 0 if none said. */
    public long handedInPausedAt() {
        return handedInPausedAt;
    }

    /** Attaches the task object another item rebuilt for an adopted call (same number, no start line). */
    public void adoptTask(Call call, warren.daemon.task.Task task) {
        Pending p = pendingTasks.remove(call);
        if (p == null) {
            throw new IllegalArgumentException("not an adopted call, or its task is attached already");
        }
        attach(call, p.pc(), p.ageAt(), task);
    }

    /** Adopted calls whose task no item claimed: answered INTERNAL so no request waits forever. */
    public int failUnclaimed() {
        int n = 0;
        for (Call call : new ArrayList<>(pendingTasks.keySet())) {
            pendingTasks.remove(call);
            if (kept.remove(call)) {
                Log.warn("request " + call.id() + ": its task (answered before the upgrade) was lost in the handoff");
            } else {
                call.fail(Error.Code.INTERNAL, "the task of this request was lost in an upgrade");
            }
            n++;
        }
        return n;
    }

    // ---- shutdown

    /** Stops accepting, refuses new work and asks every task to stop. Loop thread. */
    public void beginShutdown() {
        if (shuttingDown) {
            return;
        }
        shuttingDown = true;
        if (listenerSlot >= 0) {
            loop.unregister(listenerSlot);
            listenerSlot = -1;
        }
        listener.close();
        List<TaskRegistry.Record> running = new ArrayList<>(tasks.list());
        Log.info("shutting down: stopped accepting; asking " + running.size() + " tasks to stop");
        for (TaskRegistry.Record r : running) {
            try {
                r.task().stop();
            } catch (RuntimeException e) {
                Log.error("task " + r.number() + ": stop failed", e);
            }
        }
    }

    /** True when no task is left and every queued answer has been sent. Loop thread. */
    public boolean drained() {
        if (tasks.active() > 0) {
            return false;
        }
        for (Client c : clients.values()) {
            if (!c.queue.isEmpty()) {
                return false;
            }
        }
        return true;
    }

    /** Closes every client connection (after drain, at exit). Loop thread. */
    public void closeAll() {
        for (Client c : new ArrayList<>(clients.values())) {
            closeClient(c, "closed at shutdown");
        }
        if (listenerSlot >= 0) {
            loop.unregister(listenerSlot);
            listenerSlot = -1;
        }
        listener.close();
        book.close(); // systemd's copy stays while the unit runs
    }
}
