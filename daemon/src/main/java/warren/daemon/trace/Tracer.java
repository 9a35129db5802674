package warren.daemon.trace;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import warren.control.v1.Error;
import warren.control.v1.Trace;
import warren.daemon.audit.JsonLine;
import warren.daemon.config.ConfigKey;
import warren.daemon.control.Call;
import warren.daemon.loop.EventLoop;
import warren.daemon.task.TaskRegistry;

/**
 * Serves {@code Trace} requests for a daemon: finds the task (NOT_FOUND), checks that it can be
 * traced (INVALID_ARGUMENT), bounds the traces at once ({@code trace.max_active},
 * RESOURCE_EXHAUSTED), lends each packet trace a ring of {@code trace.ring_bytes} (allocated at
 * the first trace that needs it, kept for the next) and starts its {@link TraceSession}. Loop
 * thread only.
 */
public final class Tracer {
    public static final ConfigKey<Long> RING_BYTES = ConfigKey.count("trace.ring_bytes", 1 << 20,
            TraceRing.HEADER + TraceRing.MAX_PACKET, 1L << 28, "bytes of the ring each packet trace copies into between"
                    + " two sends (every " + TraceSession.DRAIN_MILLIS + " ms); a full ring drops and counts");
    public static final ConfigKey<Long> MAX_ACTIVE = ConfigKey.count("trace.max_active", 4, 0, 64,
            "traces running at once (each packet trace holds one ring); 0 turns Trace off");

    static final long DEFAULT_PACKETS = 1000;
    static final long DEFAULT_SECONDS = 10;

    /** Limits of the tracer (config keys above). */
    public record Settings(int ringBytes, int maxActive) {
        public static Settings defaults() {
            return new Settings(1 << 20, 4);
        }
    }

    private final EventLoop loop;
    private final TaskRegistry tasks;
    private final Settings settings;
    private final List<TraceSession> active = new ArrayList<>();
    private final ArrayDeque<TraceRing> rings = new ArrayDeque<>();

    public Tracer(EventLoop loop, TaskRegistry tasks, Settings settings) {
        this.loop = loop;
        this.tasks = tasks;
        this.settings = settings;
    }

    TaskRegistry tasks() {
        return tasks;
    }

    /** Serves a Trace request: exactly one final answer, now (refusal) or when the trace ends. */
    public void start(Call call) {
        Trace t = call.request().getTrace();
        TaskRegistry.Record r = tasks.byNumber(t.getTask());
        if (r == null) {
            call.fail(Error.Code.NOT_FOUND, "no task " + t.getTask());
            return;
        }
        if (!(r.task() instanceof Traceable traceable)) {
            call.fail(Error.Code.INVALID_ARGUMENT, "task " + r.number() + " (" + r.kind() + ") cannot be traced");
            return;
        }
        if (active.size() >= settings.maxActive()) {
            call.fail(Error.Code.RESOURCE_EXHAUSTED, active.size() + " traces are running (trace.max_active = "
                    + settings.maxActive() + ")");
            return;
        }
        long maxPackets = t.getMaxPackets() == 0 ? DEFAULT_PACKETS : Integer.toUnsignedLong(t.getMaxPackets());
        long seconds = t.getSeconds() == 0 ? DEFAULT_SECONDS : Integer.toUnsignedLong(t.getSeconds());
        int snaplen = t.getSnaplen() == 0 ? TraceRing.MAX_PACKET : (int) Math.min(TraceRing.MAX_PACKET,
                Integer.toUnsignedLong(t.getSnaplen()));
        TraceRing ring = null;
        if (traceable.tracesPackets()) {
            ring = rings.isEmpty() ? new TraceRing(settings.ringBytes()) : rings.pop();
            ring.reset(snaplen, maxPackets);
        }
        String refused = traceable.startTrace(ring);
        if (refused != null) {
            if (ring != null) {
                rings.push(ring);
            }
            call.fail(Error.Code.INVALID_ARGUMENT, "task " + r.number() + " (" + r.kind() + ") cannot be traced: " + refused);
            return;
        }
        TraceSession s = new TraceSession(this, loop, call, r, traceable, ring, maxPackets, seconds);
        active.add(s);
        call.startTask("trace", s, new JsonLine().put("traced_task", r.number()).put("traced_kind", r.kind())
                .put("max_packets", maxPackets).put("seconds", seconds).put("snaplen", snaplen), true);
        s.begin();
    }

    /** A session has ended: its ring goes back to the pool. */
    void ended(TraceSession s, TraceRing ring) {
        active.remove(s);
        if (ring != null) {
            rings.push(ring);
        }
    }

    /** Ends every trace with {@code reason} (e.g. "upgrade": a trace does not move to a successor). */
    public void endAll(String reason) {
        for (TraceSession s : new ArrayList<>(active)) {
            s.end(reason);
        }
    }

    /** Traces running now. */
    public int active() {
        return active.size();
    }
}
