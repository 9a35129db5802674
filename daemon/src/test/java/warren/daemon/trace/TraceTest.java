package warren.daemon.trace;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Cancel;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.control.v1.Trace;
import warren.control.v1.TraceChunk;
import warren.control.v1.TracedPacket;
import warren.daemon.Daemon;
import warren.daemon.DaemonSpec;
import warren.daemon.audit.JsonLine;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.control.Call;
import warren.daemon.control.RequestHandler;
import warren.daemon.task.Task;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;

/**
 * The Trace request end to end on a real daemon with a stand-in packet task: routing and refusals
 * (NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED), packets in order with their side and
 * direction, every way a trace ends, a full ring dropping and counting, and byte-count traces.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class TraceTest {
    @TempDir
    Path dir;
    private final List<AutoCloseable> cleanup = new ArrayList<>();
    /** The stand-in tasks by their request id, as the handler made them. */
    static final Map<Long, FakeFlow> FLOWS = new ConcurrentHashMap<>();

    @AfterEach
    void tearDown() throws Exception {
        for (int i = cleanup.size() - 1; i >= 0; i--) {
            cleanup.get(i).close();
        }
        FLOWS.clear();
    }

    /** A task that "sees" the packets a test hands it (on the loop) and copies them to its trace. */
    static final class FakeFlow implements Task, Traceable {
        final Call call;
        final Fd a;
        final Fd b;
        final boolean counts;
        TraceRing trace;
        boolean ended;

        FakeFlow(Call call, Fd a, Fd b, boolean counts) {
            this.call = call;
            this.a = a;
            this.b = b;
            this.counts = counts;
        }

        void end(String why) {
            if (!ended) {
                ended = true;
                trace = null;
                a.close();
                b.close();
                call.fail(Error.Code.PEER_GONE, why);
            }
        }

        @Override
        public boolean tracesPackets() {
            return !counts;
        }

        @Override
        public String startTrace(TraceRing ring) {
            if (trace != null) {
                return "it is traced already";
            }
            trace = ring;
            return null;
        }

        @Override
        public void stopTrace(TraceRing ring) {
            if (trace == ring) {
                trace = null;
            }
        }

        @Override
        public void byteCounts(long[] out) {
            out[0] = 1234;
            out[1] = 5678;
        }

        @Override
        public void cancel() {
            end("cancelled");
        }

        @Override
        public void stop() {
            end("stopped");
        }
    }

    /** Serves Splice by holding a FakeFlow (byte counts when the metadata says "counts"). */
    static DaemonSpec spec() {
        return new DaemonSpec("traced", "test", "a test daemon with traceable tasks", List.of(), d -> new RequestHandler() {
            @Override
            public Set<Request.BodyCase> serves() {
                return Set.of(Request.BodyCase.SPLICE);
            }

            @Override
            public void handle(Call call) {
                Splice s = call.request().getSplice();
                FakeFlow f = new FakeFlow(call, call.takeFd(s.getFdA()), call.takeFd(s.getFdB()),
                        call.metadata().toStringUtf8().equals("counts"));
                call.startTask("fake", f, new JsonLine(), true);
                FLOWS.put(call.id(), f);
            }
        });
    }

    private RunningDaemon daemon(String config) throws Exception {
        RunningDaemon d = new RunningDaemon(spec(), dir.resolve("ctl.sock"), "audit.path = /dev/null\n" + config);
        cleanup.add(d);
        return d;
    }

    private ControlClient client(RunningDaemon d) throws Exception {
        ControlClient c = ControlClient.connect(d.control);
        cleanup.add(c);
        return c;
    }

    /** Starts a stand-in task; returns its task number. */
    private long task(ControlClient c, long id, String metadata) throws Exception {
        int[] x = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
        CompletableFuture<Response> accepted = new CompletableFuture<>();
        try (Fd a = Fd.adopt(x[0]); Fd b = Fd.adopt(x[1])) {
            c.call(Request.newBuilder().setId(id).setMetadata(com.google.protobuf.ByteString.copyFromUtf8(metadata))
                    .setSplice(Splice.newBuilder().setFdA(0).setFdB(1)), List.of(a, b), accepted::complete)
                    .whenComplete((r, e) -> {
                        if (r != null) {
                            r.close();
                        }
                    });
        }
        return accepted.get(10, TimeUnit.SECONDS).getAccepted().getTask();
    }

    /** A trace in flight: its chunks as they come, its final answer. */
    static final class Traced {
        final List<TraceChunk> chunks = new CopyOnWriteArrayList<>();
        final CompletableFuture<Response> accepted = new CompletableFuture<>();
        CompletableFuture<Reply> done;

        Response end() throws Exception {
            try (Reply r = done.get(20, TimeUnit.SECONDS)) {
                return r.response();
            }
        }

        List<TracedPacket> packets() {
            List<TracedPacket> all = new ArrayList<>();
            chunks.forEach(c -> all.addAll(c.getPacketsList()));
            return all;
        }
    }

    private static Traced trace(ControlClient c, long id, Trace.Builder t) throws Exception {
        Traced tr = new Traced();
        tr.done = c.call(Request.newBuilder().setId(id).setTrace(t), List.of(), tr.accepted::complete,
                r -> tr.chunks.add(r.getTraceChunk()));
        return tr;
    }

    /** Hands {@code n} packets of {@code size} bytes to the task on the loop, at the four points in turn. */
    private static void packets(RunningDaemon d, long requestId, int n, int size) throws Exception {
        d.daemon.loop().call(() -> {
            FakeFlow f = FLOWS.get(requestId);
            ByteBuffer b = ByteBuffer.allocateDirect(size + 8);
            for (int i = 0; i < n; i++) {
                b.putInt(4, i); // offset 4: the copy starts there
                if (f.trace != null) {
                    f.trace.copy(b, 4, size, i % 4);
                }
            }
            return null;
        }, 5000);
    }

    private static Error.Code code(Response r) {
        return r.getError().getCode();
    }

    @Test
    void refusalsNameTheirReason() throws Exception {
        RunningDaemon d = daemon("trace.max_active = 1\n");
        ControlClient c = client(d);
        Traced none = trace(c, 1, Trace.newBuilder().setTask(99));
        assertEquals(Error.Code.NOT_FOUND, code(none.end()), none.end().toString());
        long t = task(c, 2, "");
        Traced first = trace(c, 3, Trace.newBuilder().setTask(t).setSeconds(30));
        long traceTask = first.accepted.get(5, TimeUnit.SECONDS).getAccepted().getTask();
        Traced ofTrace = trace(c, 4, Trace.newBuilder().setTask(traceTask));
        assertEquals(Error.Code.INVALID_ARGUMENT, code(ofTrace.end()), "a trace cannot be traced");
        assertTrue(ofTrace.end().getError().getMessage().contains("(trace)"), ofTrace.end().toString());
        Traced tooMany = trace(c, 5, Trace.newBuilder().setTask(t));
        assertEquals(Error.Code.RESOURCE_EXHAUSTED, code(tooMany.end()), tooMany.end().toString());
        try (Reply r = c.call(Request.newBuilder().setList(warren.control.v1.List.getDefaultInstance()), List.of())
                .get(5, TimeUnit.SECONDS)) {
            assertTrue(r.response().getListing().getTasksList().stream()
                    .anyMatch(i -> i.getKind().equals("trace") && i.getState().equals("tracing task " + t + ": 0 packets sent")),
                    r.toString());
        }
        cancel(c, 3);
        assertEquals("cancelled", first.end().getTraceEnded().getReason());
    }

    @Test
    void alreadyTracedIsRefused() throws Exception {
        RunningDaemon d = daemon("");
        ControlClient c = client(d);
        long t = task(c, 1, "");
        Traced first = trace(c, 2, Trace.newBuilder().setTask(t));
        first.accepted.get(5, TimeUnit.SECONDS);
        Traced second = trace(c, 3, Trace.newBuilder().setTask(t));
        assertEquals(Error.Code.INVALID_ARGUMENT, code(second.end()));
        assertTrue(second.end().getError().getMessage().contains("traced already"), second.end().toString());
        cancel(c, 2);
        first.end();
    }

    private static void cancel(ControlClient c, long targetId) throws Exception {
        try (Reply r = c.call(Request.newBuilder().setCancel(Cancel.newBuilder().setTargetId(targetId)), List.of())
                .get(5, TimeUnit.SECONDS)) {
            assertEquals(Response.BodyCase.CANCELLED, r.response().getBodyCase(), r.toString());
        }
    }

    @Test
    void packetsArriveInOrderWithSideAndDirectionAndMaxPacketsEndsIt() throws Exception {
        RunningDaemon d = daemon("");
        ControlClient c = client(d);
        long t = task(c, 1, "");
        long before = System.currentTimeMillis() * 1_000_000L;
        Traced tr = trace(c, 2, Trace.newBuilder().setTask(t).setMaxPackets(10).setSnaplen(6));
        tr.accepted.get(5, TimeUnit.SECONDS);
        packets(d, 1, 25, 100);
        Response end = tr.end();
        assertEquals("max_packets", end.getTraceEnded().getReason(), end.toString());
        assertEquals(10, end.getTraceEnded().getPackets());
        assertEquals(0, end.getTraceEnded().getDropped());
        List<TracedPacket> ps = tr.packets();
        assertEquals(10, ps.size());
        for (int i = 0; i < ps.size(); i++) {
            TracedPacket p = ps.get(i);
            assertEquals(100, p.getOriginalLength());
            assertEquals(6, p.getData().size(), "cut to snaplen");
            assertEquals(i, p.getData().asReadOnlyByteBuffer().getInt(0), "in order");
            int point = i % 4;
            assertEquals(point == TraceRing.CLIENT_IN || point == TraceRing.CLIENT_OUT ? TracedPacket.Side.CLIENT
                    : TracedPacket.Side.TRANSLATED, p.getSide());
            assertEquals(point >= TraceRing.TRANSLATED_IN, p.getInbound());
            assertTrue(p.getUnixNanos() >= before && p.getUnixNanos() <= System.currentTimeMillis() * 1_000_000L + 1_000_000,
                    "a wall-clock time: " + p.getUnixNanos());
        }
        assertNull(d.daemon.loop().call(() -> FLOWS.get(1L).trace, 5000), "the tap is removed at the end");
    }

    @Test
    void theTaskEndingEndsTheTraceAfterItsLastPackets() throws Exception {
        RunningDaemon d = daemon("");
        ControlClient c = client(d);
        long t = task(c, 1, "");
        Traced tr = trace(c, 2, Trace.newBuilder().setTask(t).setSeconds(60));
        tr.accepted.get(5, TimeUnit.SECONDS);
        d.daemon.loop().call(() -> {
            FakeFlow f = FLOWS.get(1L);
            f.trace.copy(ByteBuffer.allocate(40), 0, 40, TraceRing.CLIENT_IN);
            f.end("gone"); // the same cycle: the packet is still in the ring
            return null;
        }, 5000);
        Response end = tr.end();
        assertEquals("task_ended", end.getTraceEnded().getReason());
        assertEquals(1, end.getTraceEnded().getPackets());
        assertEquals(1, tr.packets().size());
    }

    @Test
    void secondsEndIt() throws Exception {
        RunningDaemon d = daemon("");
        ControlClient c = client(d);
        long t = task(c, 1, "");
        long t0 = System.nanoTime();
        Traced tr = trace(c, 2, Trace.newBuilder().setTask(t).setSeconds(1));
        assertEquals("seconds", tr.end().getTraceEnded().getReason());
        assertTrue(System.nanoTime() - t0 >= 900_000_000L, "not before its second was over");
    }

    @Test
    void aFullRingDropsAndCounts() throws Exception {
        RunningDaemon d = daemon("trace.ring_bytes = 65551\n"); // one largest record
        ControlClient c = client(d);
        long t = task(c, 1, "");
        Traced tr = trace(c, 2, Trace.newBuilder().setTask(t).setMaxPackets(1000));
        tr.accepted.get(5, TimeUnit.SECONDS);
        packets(d, 1, 200, 1000); // 65551 / (16 + 1000) = 64 fit
        cancel(c, 2);
        Response end = tr.end();
        assertEquals("cancelled", end.getTraceEnded().getReason());
        assertEquals(64, end.getTraceEnded().getPackets());
        assertEquals(136, end.getTraceEnded().getDropped());
        assertEquals(136, tr.chunks.stream().mapToLong(TraceChunk::getDropped).sum(), "drops reported in chunks");
        assertEquals(64, tr.packets().size());
    }

    @Test
    void aByteCountTraceStreamsCounts() throws Exception {
        RunningDaemon d = daemon("");
        ControlClient c = client(d);
        long t = task(c, 1, "counts");
        Traced tr = trace(c, 2, Trace.newBuilder().setTask(t).setSeconds(1));
        Response end = tr.end();
        assertEquals("seconds", end.getTraceEnded().getReason());
        assertTrue(tr.chunks.size() >= 2, "one at once and more every 500 ms: " + tr.chunks.size());
        for (TraceChunk ch : tr.chunks) {
            assertTrue(ch.getByteCounts());
            assertEquals(1234, ch.getBytesAToB());
            assertEquals(5678, ch.getBytesBToA());
            assertTrue(ch.getUnixNanos() > 0);
        }
    }

    @Test
    void aRequesterThatGoesAwayEndsItsTrace() throws Exception {
        RunningDaemon d = daemon("");
        ControlClient c = client(d);
        long t = task(c, 1, "");
        ControlClient other = ControlClient.connect(d.control);
        Traced tr = trace(other, 1, Trace.newBuilder().setTask(t).setSeconds(60));
        tr.accepted.get(5, TimeUnit.SECONDS);
        other.close();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (d.daemon.loop().call(() -> d.daemon.tracer().active(), 5000) > 0 && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        assertEquals(0, (int) d.daemon.loop().call(() -> d.daemon.tracer().active(), 5000));
        assertNull(d.daemon.loop().call(() -> FLOWS.get(1L).trace, 5000));
        assertFalse(d.daemon.tasks().list().stream().anyMatch(r -> r.kind().equals("trace")));
    }

    @Test
    void stoppingTheDaemonEndsTraces() throws Exception {
        RunningDaemon d = daemon("");
        ControlClient c = client(d);
        long t = task(c, 1, "");
        Traced tr = trace(c, 2, Trace.newBuilder().setTask(t).setSeconds(60));
        tr.accepted.get(5, TimeUnit.SECONDS);
        d.daemon.shutdown();
        assertEquals("shutdown", tr.end().getTraceEnded().getReason());
    }
}
