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
        final SeqpacketSocket socket;
        final Map<Long, Call> inFlight = new HashMap<>();
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
        call.client.inFlight.remove(call.id());
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
    }

    /** Ends a task that outlived its answer. Any thread. */
    void endTask(Call call, TaskRegistry.Record r, String outcome, JsonLine fields) {
        if (!loop.inLoop()) {
            loop.execute(() -> endTask(call, r, outcome, fields));
            return;
        }
        kept.remove(call);
        tasks.end(r, outcome, fields);
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
        if (!c.inFlight.isEmpty()) {
            GONE_IN_FLIGHT.info("connection " + c.number + " (" + c.socket.peer() + ") " + why + " with " + c.inFlight.size()
                    + " requests in flight; their tasks go on, their answers will be dropped");
        } else {
            Log.debug("connection " + c.number + " " + why);
        }
    }

    // ---- upgrade handoff

    private final java.util.IdentityHashMap<Call, Long> exportedRefs = new java.util.IdentityHashMap<>();
    private Call except;
    /** Adopted calls waiting for their task object ({@link #adoptTask}). */
    /** Calls answered with their task kept (answerKeepingTask) until the task ends. Loop thread. */
    private final java.util.Set<Call> kept = java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>());
    private final java.util.IdentityHashMap<Call, Pending> pendingTasks = new java.util.IdentityHashMap<>();

    /** An adopted call's description, whose age was right at {@code ageAt} (System.nanoTime). */
    private record Pending(warren.handoff.v1.PendingCall pc, long ageAt) {}

    /** Pre-copy, old side: a copied call's ref and its accepted_sent then. */
    private record Copied(long ref, boolean acceptedSent, boolean detached) {}

    /** Pre-copy, old side: the calls copied while serving (empty: no pre-copy ran). Loop thread. */
    private final java.util.IdentityHashMap<Call, Copied> copiedCalls = new java.util.IdentityHashMap<>();

    /** Pre-copy, successor: a call built from the copy, its connection's number (-1: detached). */
    private record PreCall(Call call, long connection, warren.handoff.v1.PendingCall pc, long at) {}

    /** Pre-copy, successor: the pre-built calls by ref, until the pause's state places them. */
    private final Map<Long, PreCall> preCalls = new HashMap<>();
    private boolean handoffPaused;

    /**
     * Stops reading requests and accepting connections, at a clean point for the handoff: every
     * queued answer must have been sent (else IllegalStateException naming the connection, and
     * nothing is paused) and every request in flight must be a task (a request still being
     * served cannot move). Loop thread.
     */
    public void pauseForHandoff() {
        pauseForHandoff(null);
    }

    /** As {@link #pauseForHandoff()}, leaving out {@code except} (the Restart call itself). */
    public void pauseForHandoff(Call except) {
        this.except = except;
        for (Client c : clients.values()) {
            flush(c);
            if (!c.queue.isEmpty()) {
                throw new IllegalStateException("connection " + c.number + " (" + c.socket.peer() + ") has "
                        + c.queue.size() + " answers it has not read yet");
            }
            for (Call call : c.inFlight.values()) {
                if (call.task() == null && call != except) {
                    throw new IllegalStateException("request " + call.id() + " on connection " + c.number
                            + " is still being served");
                }
            }
        }
        if (tasks.active() != countCallsWithTasks()) {
            throw new IllegalStateException((tasks.active() - countCallsWithTasks())
                    + " tasks outlived their answers; their daemon cannot hand them over yet");
        }
        group.pause(); // O(1): the listener's and connections' events are held, not read
        handoffPaused = true;
    }

    private int countCallsWithTasks() {
        int n = kept.size();
        for (Client c : clients.values()) {
            for (Call call : c.inFlight.values()) {
                n += call.task() != null && call != except ? 1 : 0;
            }
        }
        return n;
    }

    /** Undoes {@link #pauseForHandoff} (the handoff did not happen). Loop thread. */
    public void resumeAfterHandoff() throws NativeIoException {
        if (!handoffPaused) {
            except = null;
            copiedCalls.clear();
            return;
        }
        handoffPaused = false;
        exportedRefs.clear();
        copiedCalls.clear(); // a failed handoff's pre-copy
        except = null;
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
     * {@link #callRef} for other items). Loop thread.
     */
    public warren.daemon.handoff.HandoffItem export(String name) {
        if (!handoffPaused) {
            throw new IllegalStateException("export needs pauseForHandoff first");
        }
        exportedRefs.clear();
        List<Fd> fds = new ArrayList<>();
        fds.add(Fd.adopt(listener.fd().get())); // views for sending: never closed
        warren.handoff.v1.ControlState.Builder st = ControlStateCodec.head(nextClient, tasks.nextNumber(), tasks.total(),
                counters.snapshot(), counters.histogramStates(),
                authorizer.socket().kind() == Authorizer.SocketKind.FILE ? authorizer.socket().name() : "",
                System.nanoTime());
        long now = System.nanoTime();
        boolean delta = !copiedCalls.isEmpty(); // pre-copied: only what began or changed since
        int copiedSeen = 0;
        for (Client c : clients.values()) {
            warren.handoff.v1.ControlConnection.Builder cb = ControlStateCodec.connection(c.number, fds.size());
            fds.add(Fd.adopt(c.socket.fd().get()));
            for (Call call : c.inFlight.values()) {
                if (call == except) {
                    continue;
                }
                long ref = taskRef(call);
                exportedRefs.put(call, ref);
                Copied cp = delta ? copiedCalls.get(call) : null;
                if (cp != null) {
                    copiedSeen++;
                    if (cp.acceptedSent() == call.acceptedSent()) {
                        continue; // the successor has it as it is
                    }
                }
                cb.addCalls(ControlStateCodec.call(call, ref, now - call.task().startNanos()));
            }
            st.addConnections(cb);
        }
        for (Call call : kept) {
            long ref = taskRef(call);
            exportedRefs.put(call, ref);
            Copied cp = delta ? copiedCalls.get(call) : null;
            if (cp != null) {
                copiedSeen++;
                if (cp.detached()) {
                    continue; // copied as it is; one copied in flight is sent again: answered since
                }
            }
            st.addDetached(ControlStateCodec.call(call, ref, now - call.task().startNanos()));
        }
        if (delta) {
            st.setCallsDelta(true);
            if (copiedSeen < copiedCalls.size()) {
                for (Map.Entry<Call, Copied> e : copiedCalls.entrySet()) {
                    if (!exportedRefs.containsKey(e.getKey())) {
                        st.addGoneCalls(e.getValue().ref());
                    }
                }
            }
        }
        return new warren.daemon.handoff.HandoffItem(name, st.build().toByteArray(), fds);
    }

    /**
     * Pre-copy (old side, while serving): every call with a task now, as an item without fds (a
     * ControlState whose connections are named by number), remembered with its accepted_sent, so
     * that {@link #export} at the pause sends only calls begun or changed since and the refs of
     * those gone. Loop thread.
     */
    public warren.daemon.handoff.HandoffItem preCopyCalls(String name) {
        copiedCalls.clear();
        warren.handoff.v1.ControlState.Builder st = warren.handoff.v1.ControlState.newBuilder()
                .setFormat(ControlStateCodec.FORMAT);
        long now = System.nanoTime();
        for (Client c : clients.values()) {
            warren.handoff.v1.ControlConnection.Builder cb = ControlStateCodec.connection(c.number, 0);
            for (Call call : c.inFlight.values()) {
                if (call.task() == null) {
                    continue; // still being served: it goes at the pause, if it has a task by then
                }
                long ref = taskRef(call);
                copiedCalls.put(call, new Copied(ref, call.acceptedSent(), false));
                cb.addCalls(ControlStateCodec.call(call, ref, now - call.task().startNanos()));
            }
            if (cb.getCallsCount() > 0) {
                st.addConnections(cb);
            }
        }
        for (Call call : kept) {
            long ref = taskRef(call);
            copiedCalls.put(call, new Copied(ref, true, true));
            st.addDetached(ControlStateCodec.call(call, ref, now - call.task().startNanos()));
        }
        return new warren.daemon.handoff.HandoffItem(name, st.build().toByteArray(), List.of());
    }

    /** The pre-copy was given up: export sends every call again. Loop thread. */
    public void forgetCopiedCalls() {
        copiedCalls.clear();
    }

    /**
     * Pre-copy, in the successor before it serves: builds the calls of a {@link #preCopyCalls}
     * item (no connection yet: the control item at the pause places them, or names them gone).
     * Refuses a ref given twice. Returns the calls built.
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
        Call call = new Call(this, null, pc.getId(), pc.getMetadata(), connection < 0 || pc.getAcceptedSent());
        if (connection < 0) {
            call.abandon(); // answered by a predecessor: never again
        }
        preCalls.put(pc.getRef(), new PreCall(call, connection, pc, now));
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

    /** The ref {@link #export} gave a call (0 if none). */
    public long callRef(Call call) {
        Long r = exportedRefs.get(call);
        return r == null ? 0 : r;
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
        exportedRefs.clear();
        copiedCalls.clear();
    }

    /**
     * Takes over a predecessor's connections and pending calls (call {@link #start} after the
     * commit to serve them). The fds used are taken from {@code fds}; the listener is this server's
     * own (the caller built it from {@link #listenerIndex}). Returns the calls by ref; their tasks
     * are attached with {@link #adoptTask}. Loop thread.
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
        long now = System.nanoTime();
        Map<Long, Call> calls = new HashMap<>();
        List<Client> adopted = new ArrayList<>();
        for (warren.handoff.v1.ControlConnection cc : st.getConnectionsList()) {
            Client c = new Client(cc.getNumber(), SeqpacketSocket.wrap(fds.get(cc.getFd()).transfer()));
            clients.put(c.number, c);
            adopted.add(c);
        }
        for (long ref : st.getGoneCallsList()) {
            preCalls.remove(ref);
        }
        for (int i = 0; i < adopted.size(); i++) {
            Client c = adopted.get(i);
            for (warren.handoff.v1.PendingCall pc : st.getConnections(i).getCallsList()) {
                preCalls.remove(pc.getRef()); // begun since the copy, or changed: this one counts
                Call call = new Call(this, c, pc.getId(), pc.getMetadata(), pc.getAcceptedSent());
                c.inFlight.put(pc.getId(), call);
                calls.put(pc.getRef(), call);
                pendingTasks.put(call, new Pending(pc, now));
            }
        }
        for (warren.handoff.v1.PendingCall pc : st.getDetachedList()) {
            preCalls.remove(pc.getRef());
            Call call = new Call(this, null, pc.getId(), pc.getMetadata(), true);
            call.abandon(); // answered by a predecessor: never again
            calls.put(pc.getRef(), call);
            pendingTasks.put(call, new Pending(pc, now));
            kept.add(call);
        }
        for (Map.Entry<Long, PreCall> e : preCalls.entrySet()) { // pre-copied, unchanged: placed now
            PreCall p = e.getValue();
            if (p.connection() >= 0) {
                Client c = clients.get(p.connection());
                if (c == null) {
                    throw new IllegalArgumentException("pre-copied call ref " + e.getKey() + " is on connection "
                            + p.connection() + ", which was not handed over, and it was not named gone");
                }
                p.call().client = c;
                c.inFlight.put(p.pc().getId(), p.call());
            } else {
                kept.add(p.call());
            }
            calls.put(e.getKey(), p.call());
            pendingTasks.put(p.call(), new Pending(p.pc(), p.at()));
        }
        preCalls.clear();
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
        warren.handoff.v1.PendingCall pc = p.pc();
        call.adoptTask(tasks.adopt(pc.getTask(), pc.getKind(), pc.getId(), pc.getMetadata(),
                new warren.fdpass.PeerCredentials(pc.getPeerPid(), pc.getPeerUid(), pc.getPeerGid()), call.connection(),
                pc.getStartUnixNanos(), pc.getAgeNanos() + (System.nanoTime() - p.ageAt()), task));
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
    }
}
