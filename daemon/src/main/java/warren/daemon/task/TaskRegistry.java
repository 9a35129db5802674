package warren.daemon.task;

import com.google.protobuf.ByteString;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import warren.daemon.audit.AuditLog;
import warren.daemon.audit.JsonLine;
import warren.fdpass.PeerCredentials;

/**
 * Every task in flight, by daemon-wide number, with who asked for it. It writes the audit start
 * line when a task registers and the end line when it ends, so each task has exactly one of
 * each. It is the root of a daemon's handoff state (DESIGN §4): a snapshot of records plus each
 * task's own fds and state.
 *
 * <pre>
 * states of a record:  registered --end()--> removed      (end is idempotent: the first wins)
 * </pre>
 */
public final class TaskRegistry {
    /** One task and its origin. */
    public record Record(long number, String kind, long requestId, ByteString metadata, PeerCredentials peer,
            long connection, long startUnixNanos, long startNanos, Task task) {}

    private final Map<Long, Record> tasks = new ConcurrentHashMap<>();
    private final AtomicLong next = new AtomicLong(1);
    private final AtomicLong total = new AtomicLong();
    private final AuditLog audit;
    private volatile EndListener endListener;

    /** Told of every task that ends here (not of those handed to a successor): for the metrics. */
    @FunctionalInterface
    public interface EndListener {
        void ended(String kind, String outcome, long durationNanos);
    }

    public TaskRegistry(AuditLog audit) {
        this.audit = audit;
    }

    public void onEnd(EndListener l) {
        this.endListener = l;
    }

    /** Registers a task and writes its audit start line (with {@code fields} added). */
    public Record register(String kind, long requestId, ByteString metadata, PeerCredentials peer, long connection,
            Task task, JsonLine fields) {
        java.time.Instant now = java.time.Instant.now();
        Record r = new Record(next.getAndIncrement(), kind, requestId, metadata, peer, connection,
                now.getEpochSecond() * 1_000_000_000L + now.getNano(), System.nanoTime(), task);
        tasks.put(r.number(), r);
        total.incrementAndGet();
        audit.write(audit.line("start", r.number()).put("kind", kind).put("request_id", requestId)
                .putBase64("metadata", metadata.toByteArray()).put("peer_pid", peer.pid())
                .put("peer_uid", peer.uid()).put("peer_gid", peer.gid()).put("connection", connection)
                .merge(fields));
        return r;
    }

    /** Ends a task: removes it and writes its audit end line. False if it had already ended. */
    public boolean end(Record r, String outcome, JsonLine fields) {
        if (tasks.remove(r.number()) == null) {
            return false;
        }
        long nanos = System.nanoTime() - r.startNanos();
        EndListener l = endListener;
        if (l != null) {
            l.ended(r.kind(), outcome, nanos);
        }
        audit.write(audit.line("end", r.number()).put("kind", r.kind()).put("request_id", r.requestId())
                .putBase64("metadata", r.metadata().toByteArray()).put("peer_pid", r.peer().pid())
                .put("peer_uid", r.peer().uid()).put("connection", r.connection()).put("outcome", outcome)
                .put("duration_ms", nanos / 1_000_000.0).merge(fields));
        return true;
    }

    /** The number the next task will get (for the handoff). */
    public long nextNumber() {
        return next.get();
    }

    /**
     * Takes over a task handed in by an upgrade: same number, origin and start time; no audit
     * start line (the old process wrote it; the end line comes from here).
     */
    public Record adopt(long number, String kind, long requestId, ByteString metadata, PeerCredentials peer,
            long connection, long startUnixNanos, long ageNanos, Task task) {
        Record r = new Record(number, kind, requestId, metadata, peer, connection, startUnixNanos,
                System.nanoTime() - ageNanos, task);
        if (tasks.putIfAbsent(number, r) != null) {
            throw new IllegalArgumentException("task " + number + " handed in twice");
        }
        next.accumulateAndGet(number + 1, Math::max);
        return r;
    }

    /** Continues the numbering and totals of a predecessor. */
    public void continueFrom(long nextNumber, long totalSoFar) {
        next.accumulateAndGet(nextNumber, Math::max);
        total.addAndGet(totalSoFar);
    }

    /** Drops every task without an end line: they were handed to a successor, which ends them. */
    public int forgetAll() {
        int n = tasks.size();
        tasks.clear();
        return n;
    }

    /**
     * Drops one task without an end line: a successor's task adopted during a pre-copy whose
     * call the state at the pause names gone (it ended in the old process, which wrote its end line).
     */
    public boolean forget(long number) {
        return tasks.remove(number) != null;
    }

    public Record byNumber(long number) {
        return tasks.get(number);
    }

    /** The task started by request {@code requestId} on connection {@code connection}, or null. */
    public Record byRequest(long connection, long requestId) {
        for (Record r : tasks.values()) {
            if (r.connection() == connection && r.requestId() == requestId) {
                return r;
            }
        }
        return null;
    }

    public List<Record> list() {
        List<Record> out = new ArrayList<>(tasks.values());
        out.sort((a, b) -> Long.compare(a.number(), b.number()));
        return out;
    }

    public int active() {
        return tasks.size();
    }

    public long total() {
        return total.get();
    }
}
