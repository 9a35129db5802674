package warren.daemon.control;

import com.google.protobuf.ByteString;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import warren.control.v1.Accepted;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.daemon.audit.JsonLine;
import warren.daemon.task.Task;
import warren.daemon.task.TaskRegistry;
import warren.fdpass.Fd;
import warren.fdpass.PeerCredentials;
import warren.fdpass.codec.Decoded;

/**
 * One request in flight and the promise of exactly one final answer.
 *
 * <pre>
 * open --accept()--> accepted --reply()/fail()--> answered
 * open --------------reply()/fail()-------------> answered
 * </pre>
 * A second final answer is a bug: it throws and closes the fds it came with. The fds of the
 * request belong to the call until the handler {@link #takeFd takes} them, during
 * {@link RequestHandler#handle}; those not taken are closed when the handler returns (a task that
 * lasts keeps only the id and metadata, not the request). The fds of an answer move into the call and are closed once
 * sent (the client holds its own copies then) or dropped if the client has gone.
 */
public final class Call {
    private final ControlServer server;
    /** Null for a detached call; a successor's pre-copied call gets its client at the pause. */
    ControlServer.Client client;
    private final long id;
    private final ByteString metadata;
    private Decoded<Request> decoded; // released when the handler returns: a long task keeps no request
    private final AtomicBoolean answered = new AtomicBoolean();
    private volatile boolean acceptedSent;
    private volatile TaskRegistry.Record task;
    /**
     * Run on the control loop right after the final answer is queued, in the same step (no other
     * event between): {@link #afterFinalAnswer}. Null if none.
     */
    private volatile Runnable afterAnswer;
    /** Counted as a call with a task by its connection ({@code Client.tasked}); loop thread. */
    boolean countedTasked;
    /**
     * Pre-copy, old side: on the server's changed list, or not tracked (false only for a copied
     * call not listed yet). Loop thread.
     */
    boolean listed = true;
    /** Pre-copy, old side: the next call on the server's changed list (intrusive). */
    Call nextChanged;
    /** Pre-copy, old side: copied by the last pre-copy, with this accepted_sent, in flight or detached. */
    boolean copied;
    boolean copiedAccepted;
    boolean copiedDetached;
    /** Pre-copy, successor: what the pre-copy said of this call (null: not pre-copied). */
    ControlServer.PreCall pre;

    Call(ControlServer server, ControlServer.Client client, Decoded<Request> decoded) {
        this.server = server;
        this.client = client;
        this.decoded = decoded;
        this.id = decoded.message().getId();
        this.metadata = decoded.message().getMetadata();
    }

    /** A call handed in by an upgrade: only its id and metadata are left of the request. */
    Call(ControlServer server, ControlServer.Client client, long id, ByteString metadata, boolean acceptedSent) {
        this.server = server;
        this.client = client;
        this.decoded = null;
        this.id = id;
        this.metadata = metadata;
        this.acceptedSent = acceptedSent;
    }

    void adoptTask(TaskRegistry.Record r) {
        task = r;
    }

    /** A successor's pre-built call whose accepted_sent the state at the pause changed. */
    void acceptedSent(boolean sent) {
        acceptedSent = sent;
    }

    /** Marks a call handed to a successor as answered here, so this process never answers it. */
    void abandon() {
        answered.set(true);
    }

    /** The request; only while the handler runs ({@link RequestHandler#handle}). */
    public Request request() {
        return decoded().message();
    }

    private Decoded<Request> decoded() {
        Decoded<Request> d = decoded;
        if (d == null) {
            throw new IllegalStateException("request " + id + ": its message and fds are released once the handler"
                    + " has returned; take what you keep during handle()");
        }
        return d;
    }

    public long id() {
        return id;
    }

    public ByteString metadata() {
        return metadata;
    }

    public PeerCredentials peer() {
        if (client == null || client.socket == null) { // detached, or pre-copied before its connection came
            TaskRegistry.Record r = task;
            return r != null ? r.peer() : new PeerCredentials(0, 0, 0);
        }
        return client.socket.peer();
    }

    public long connection() {
        return client == null ? 0 : client.number;
    }

    /** Borrows the fd named by an fd field, to check it before taking it. */
    public Fd peekFd(int index) {
        return decoded().peek(index);
    }

    /** Takes ownership of the fd named by an fd field. */
    public Fd takeFd(int index) {
        return decoded().take(index);
    }

    public boolean isAnswered() {
        return answered.get();
    }

    /**
     * This call and its task in the handoff encoding (ref and age are the caller's: they depend
     * on where it goes). Needs a task.
     */
    public warren.handoff.v1.PendingCall.Builder describe() {
        TaskRegistry.Record r = task;
        return warren.handoff.v1.PendingCall.newBuilder().setId(id).setMetadata(metadata).setAcceptedSent(acceptedSent)
                .setTask(r.number()).setKind(r.kind()).setStartUnixNanos(r.startUnixNanos()).setPeerPid(r.peer().pid())
                .setPeerUid(r.peer().uid()).setPeerGid(r.peer().gid());
    }

    /** {@link ControlServer#fdStoreRefusal}: null if this call's task may go into systemd's fd store. */
    public String fdStoreRefusal(int fdsPerTask) {
        return server.fdStoreRefusal(fdsPerTask);
    }

    public TaskRegistry.Record task() {
        return task;
    }

    /**
     * Registers this request as a task (audit start line with {@code fields}) and sends the early
     * {@code Accepted} answer. Loop thread.
     */
    public TaskRegistry.Record startTask(String kind, Task t, JsonLine fields, boolean sendAccepted) {
        TaskRegistry.Record r = server.tasks().register(kind, id(), metadata(), peer(), connection(), t, fields);
        task = r;
        server.tasked(this);
        if (sendAccepted) {
            acceptedSent = true;
            answerAccepted(r);
        }
        return r;
    }

    /**
     * As {@link #startTask} with {@code Accepted}, but the answer waits for {@link #sendAccepted}:
     * a task that must be safe before the requester is told it runs (a pair stored in systemd's fd
     * store: answered Accepted first, a crash before the store lost a pair its requester had been
     * told was running, and its final answer never came). The call counts as answered Accepted from
     * here (what an upgrade or the fd store carries). Loop thread.
     */
    public TaskRegistry.Record startTaskAcceptedLater(String kind, Task t, JsonLine fields) {
        TaskRegistry.Record r = startTask(kind, t, fields, false);
        acceptedSent = true;
        acceptedDue = true;
        return r;
    }

    /** Sends the {@code Accepted} {@link #startTaskAcceptedLater} held back, once. Any thread. */
    public void sendAccepted() {
        TaskRegistry.Record r = task;
        if (acceptedDue && r != null) {
            acceptedDue = false;
            answerAccepted(r);
        }
    }

    private void answerAccepted(TaskRegistry.Record r) {
        server.send(client, header().setAccepted(Accepted.newBuilder().setTask(r.number())).build(), List.of(), false);
    }

    private volatile boolean acceptedDue;

    /** The final answer with fds (ownership moves to the call); ends the task too. Any thread. */
    public void reply(Response.Builder body, List<Fd> fds, String outcome, JsonLine auditFields) {
        if (!answered.compareAndSet(false, true)) {
            Fd.closeAll(fds);
            throw new IllegalStateException("request " + id() + " already answered");
        }
        Response resp = body.setId(id()).setMetadata(metadata()).build();
        server.finish(this, resp, fds, outcome, auditFields, true);
    }

    /**
     * The final answer, while the task goes on (Bumblebee answers {@code Upgraded} and keeps
     * pumping the flow); {@link #endTask} later writes its audit end line. Any thread.
     */
    public void answerKeepingTask(Response.Builder body, List<Fd> fds) {
        if (!answered.compareAndSet(false, true)) {
            Fd.closeAll(fds);
            throw new IllegalStateException("request " + id() + " already answered");
        }
        server.finish(this, body.setId(id()).setMetadata(metadata()).build(), fds, null, null, false);
    }

    /** Ends a task kept past its answer (audit end line). Any thread; idempotent. */
    public void endTask(String outcome, JsonLine auditFields) {
        TaskRegistry.Record r = task;
        if (r != null) {
            server.endTask(this, r, outcome, auditFields);
        }
    }

    /**
     * {@code r} runs on the control loop right after this call's final answer is queued, in the
     * same step: nothing the answer makes a client do (a new request with the same sockets) is
     * handled before it. Returns false (and keeps nothing) if the call is answered already. Set it
     * before the answer is given; any thread.
     */
    public boolean afterFinalAnswer(Runnable r) {
        if (answered.get()) {
            return false;
        }
        afterAnswer = r;
        return true;
    }

    /** The hook of {@link #afterFinalAnswer}, once. Loop thread. */
    Runnable takeAfterAnswer() {
        Runnable r = afterAnswer;
        afterAnswer = null;
        return r;
    }

    public void reply(Response.Builder body) {
        reply(body, List.of(), "ok", null);
    }

    /**
     * A non-final answer (UpgradeProgress, TraceChunk) on the request's connection; dropped once the
     * final answer has been given or the client has gone. Any thread.
     */
    public void sendNonFinal(Response.Builder body) {
        if (answered.get() || client == null) {
            return;
        }
        server.send(client, body.setId(id()).setMetadata(metadata()).build(), List.of(), false);
    }

    /**
     * Answers queued on this call's connection and not yet sent (a requester that does not read
     * makes it grow), or -1 once the connection has gone. Loop thread.
     */
    public int queuedAnswers() {
        return client == null || client.gone ? -1 : client.queue.size();
    }

    /** The final answer is an error. Any thread. */
    public void fail(Error.Code code, String message, int errno) {
        reply(Response.newBuilder().setError(Error.newBuilder().setCode(code).setMessage(message).setErrno(errno)),
                List.of(), "error:" + code.name(), new JsonLine().put("error", message));
    }

    public void fail(Error.Code code, String message) {
        fail(code, message, 0);
    }

    Response.Builder header() {
        return Response.newBuilder().setId(id()).setMetadata(metadata());
    }

    public boolean acceptedSent() {
        return acceptedSent;
    }

    /** Closes request fds the handler did not take and drops the request. Loop thread; idempotent. */
    void release() {
        Decoded<Request> d = decoded;
        if (d != null) {
            decoded = null;
            d.close();
        }
    }
}
