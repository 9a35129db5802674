package warren.daemon.client;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import warren.control.v1.Cancel;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Trace;
import warren.control.v1.TraceChunk;
import warren.control.v1.TracedPacket;

/**
 * The client side of a {@code Trace}: sends it on a {@link ControlClient}, writes every packet of
 * its {@code TraceChunk} answers to a {@link PcapWriter} (in the order they came) and passes
 * byte-count chunks (Splicer) to a consumer, until the final answer. The packets are written on
 * the client's reader thread, so the pcap is complete when {@link #await} returns.
 */
public final class TraceRecorder {
    private final ControlClient control;
    private final PcapWriter pcap;
    private final Consumer<TraceChunk> onCounts;
    private final Consumer<TracedPacket> onPacket;
    private volatile long traceTask;
    private volatile long requestId;
    private volatile long droppedSeen;
    private volatile IOException writeFailure;
    private CompletableFuture<Reply> done;

    /** {@code pcap} may be null (byte-count traces); {@code onCounts} may be null. */
    public TraceRecorder(ControlClient control, PcapWriter pcap, Consumer<TraceChunk> onCounts) {
        this(control, pcap, onCounts, null);
    }

    /** As above, with {@code onPacket} (may be null) told of each packet too, on the reader thread. */
    public TraceRecorder(ControlClient control, PcapWriter pcap, Consumer<TraceChunk> onCounts,
            Consumer<TracedPacket> onPacket) {
        this.control = control;
        this.pcap = pcap;
        this.onCounts = onCounts;
        this.onPacket = onPacket;
    }

    /** Sends the request; answers are handled from now on. */
    public TraceRecorder start(Trace trace) throws IOException {
        Request.Builder req = Request.newBuilder().setTrace(trace);
        done = control.call(req, List.of(), this::onAnswer, this::onAnswer);
        requestId = req.getId();
        return this;
    }

    private void onAnswer(Response r) {
        switch (r.getBodyCase()) {
            case ACCEPTED:
                traceTask = r.getAccepted().getTask();
                break;
            case TRACE_CHUNK:
                TraceChunk c = r.getTraceChunk();
                droppedSeen += c.getDropped();
                if (c.getByteCounts()) {
                    if (onCounts != null) {
                        onCounts.accept(c);
                    }
                    break;
                }
                if (onPacket != null) {
                    c.getPacketsList().forEach(onPacket);
                }
                if (pcap != null && writeFailure == null) {
                    try {
                        for (TracedPacket p : c.getPacketsList()) {
                            byte[] d = p.getData().toByteArray();
                            pcap.write(p.getUnixNanos(), d, 0, d.length, p.getOriginalLength());
                        }
                    } catch (IOException e) {
                        writeFailure = e;
                    }
                }
                break;
            default:
                break;
        }
    }

    /** The trace's own task number (from its Accepted answer; 0 before it came). */
    public long traceTask() {
        return traceTask;
    }

    /** Packets the daemon reported dropped so far (its ring was full). */
    public long dropped() {
        return droppedSeen;
    }

    /** Asks the daemon to end the trace now (Cancel of this request); the final answer still comes. */
    public void cancel() throws IOException {
        control.call(Request.newBuilder().setCancel(Cancel.newBuilder().setTargetId(requestId)), List.of())
                .whenComplete((r, e) -> {
                    if (r != null) {
                        r.close();
                    }
                });
    }

    /**
     * Waits for the final answer (TraceEnded or an Error) and flushes the pcap. Throws the first
     * failure to write the file.
     */
    public Response await(long timeoutMs) throws Exception {
        Response resp;
        try (Reply r = done.get(timeoutMs, TimeUnit.MILLISECONDS)) {
            resp = r.response();
        }
        if (pcap != null) {
            pcap.flush();
        }
        if (writeFailure != null) {
            throw new UncheckedIOException("cannot write the pcap file", writeFailure);
        }
        return resp;
    }
}
