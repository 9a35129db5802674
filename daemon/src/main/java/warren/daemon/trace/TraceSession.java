package warren.daemon.trace;

import com.google.protobuf.ByteString;
import java.nio.ByteBuffer;
import warren.control.v1.Response;
import warren.control.v1.TraceChunk;
import warren.control.v1.TraceEnded;
import warren.control.v1.TracedPacket;
import warren.daemon.audit.JsonLine;
import warren.daemon.control.Call;
import warren.daemon.loop.EventLoop;
import warren.daemon.task.Task;
import warren.daemon.task.TaskRegistry;

/**
 * One running trace: a task of kind "trace" (so List shows it, the audit log has its start and
 * end, and {@code Cancel} by its request id or task number ends it). On a timer on the loop it
 * drains its ring into {@code TraceChunk} answers (packets) or sends the traced pair's byte
 * counts, and it ends with one {@code TraceEnded}.
 *
 * <pre>
 * RUNNING --every DRAIN_MILLIS (packets) or COUNTS_MILLIS (byte counts): chunk--> RUNNING
 * RUNNING --max_packets sent | seconds over | traced task ended | Cancel | stop | upgrade
 *           | requester gone--> ENDED (tap removed, last chunk, TraceEnded, ring back to the pool)
 * </pre>
 * A requester that does not read its answers makes its connection's queue grow: past
 * {@link #MAX_QUEUED} answers the session stops draining and the ring fills, drops and counts,
 * instead of the control server disconnecting the client.
 */
final class TraceSession implements Task {
    static final long DRAIN_MILLIS = 50;
    static final long COUNTS_MILLIS = 500;
    /** Packet bytes per TraceChunk: a chunk stays an inline message (64 KiB), not a memfd. */
    static final int CHUNK_BYTES = 48 << 10;
    static final int MAX_QUEUED = 64;

    private final Tracer tracer;
    private final EventLoop loop;
    final Call call;
    private final TaskRegistry.Record target;
    private final Traceable traceable;
    private final TraceRing ring; // null: byte counts
    private final long maxPackets;
    private final long deadlineNanos;
    private final long unixMinusMonotonic;
    private final long[] counts = new long[2];
    private long sent;
    private long droppedReported;
    private EventLoop.Timer timer;
    private boolean ended;

    TraceSession(Tracer tracer, EventLoop loop, Call call, TaskRegistry.Record target, Traceable traceable,
            TraceRing ring, long maxPackets, long seconds) {
        this.tracer = tracer;
        this.loop = loop;
        this.call = call;
        this.target = target;
        this.traceable = traceable;
        this.ring = ring;
        this.maxPackets = maxPackets;
        long now = System.nanoTime();
        this.deadlineNanos = now + seconds * 1_000_000_000L;
        java.time.Instant wall = java.time.Instant.now();
        this.unixMinusMonotonic = wall.getEpochSecond() * 1_000_000_000L + wall.getNano() - now;
    }

    long tracedTask() {
        return target.number();
    }

    /** First tick: counts at once, packets after the first interval. */
    void begin() {
        if (ring == null) {
            sendCounts();
        }
        schedule();
    }

    private void schedule() {
        timer = loop.schedule(ring != null ? DRAIN_MILLIS : COUNTS_MILLIS, this::tick);
    }

    private void tick() {
        timer = null;
        if (ended) {
            return;
        }
        int queued = call.queuedAnswers();
        if (queued < 0) {
            end("client_gone");
            return;
        }
        if (ring != null && queued <= MAX_QUEUED) {
            drain();
        }
        String reason = ring != null && sent >= maxPackets ? "max_packets"
                : tracer.tasks().byNumber(target.number()) != target ? "task_ended"
                : System.nanoTime() - deadlineNanos >= 0 ? "seconds" : null;
        if (reason != null) {
            end(reason); // byte counts: the last count goes out there
            return;
        }
        if (ring == null) {
            sendCounts();
        }
        schedule();
    }

    /** Sends every record in the ring as chunks of up to {@link #CHUNK_BYTES}, then empties it. */
    private void drain() {
        ByteBuffer r = ring.region();
        int end = ring.used();
        long dropped = ring.dropped() - droppedReported;
        if (end == 0 && dropped == 0) {
            return;
        }
        TraceChunk.Builder chunk = TraceChunk.newBuilder();
        int bytes = 0;
        for (int at = 0; at < end; ) {
            int kept = r.getShort(at + TraceRing.AT_KEPT) & 0xFFFF;
            int point = r.get(at + TraceRing.AT_POINT);
            chunk.addPackets(TracedPacket.newBuilder()
                    .setUnixNanos(r.getLong(at + TraceRing.AT_NANOS) + unixMinusMonotonic)
                    .setSide(point == TraceRing.CLIENT_IN || point == TraceRing.CLIENT_OUT
                            ? TracedPacket.Side.CLIENT : TracedPacket.Side.TRANSLATED)
                    .setInbound(point == TraceRing.TRANSLATED_IN || point == TraceRing.CLIENT_OUT)
                    .setOriginalLength(r.getInt(at + TraceRing.AT_LENGTH))
                    .setData(ByteString.copyFrom(r.array(), r.arrayOffset() + at + TraceRing.HEADER, kept)));
            bytes += kept;
            at += TraceRing.HEADER + kept;
            if (bytes >= CHUNK_BYTES && at < end) {
                send(chunk);
                chunk = TraceChunk.newBuilder();
                bytes = 0;
            }
        }
        chunk.setDropped(dropped);
        droppedReported += dropped;
        send(chunk);
        ring.clear();
    }

    private void send(TraceChunk.Builder chunk) {
        sent += chunk.getPacketsCount();
        java.time.Instant now = java.time.Instant.now();
        chunk.setUnixNanos(now.getEpochSecond() * 1_000_000_000L + now.getNano());
        call.sendNonFinal(Response.newBuilder().setTraceChunk(chunk));
    }

    private void sendCounts() {
        traceable.byteCounts(counts);
        send(TraceChunk.newBuilder().setByteCounts(true).setBytesAToB(counts[0]).setBytesBToA(counts[1]));
    }

    /**
     * Ends the trace once: the tap is removed, what the ring holds is sent, then TraceEnded with
     * {@code reason}. Loop thread.
     */
    void end(String reason) {
        if (ended) {
            return;
        }
        ended = true;
        if (timer != null) {
            timer.cancel();
            timer = null;
        }
        traceable.stopTrace(ring);
        long dropped = 0;
        if (ring != null) {
            drain();
            dropped = ring.dropped();
        } else if (!reason.equals("client_gone")) {
            sendCounts();
        }
        tracer.ended(this, ring);
        if (!call.isAnswered()) {
            call.reply(Response.newBuilder().setTraceEnded(TraceEnded.newBuilder().setPackets(sent).setDropped(dropped)
                    .setReason(reason)), java.util.List.of(), reason, new JsonLine().put("traced_task", target.number())
                    .put("packets", sent).put("dropped", dropped).put("reason", reason));
        }
    }

    @Override
    public void cancel() {
        loop.execute(() -> end("cancelled"));
    }

    @Override
    public void stop() {
        loop.execute(() -> end("shutdown"));
    }

    @Override
    public String state() {
        return "tracing task " + target.number() + (ring != null ? ": " + sent + " packets sent" : "");
    }
}
