package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Response;
import warren.control.v1.Trace;
import warren.control.v1.TraceChunk;
import warren.daemon.client.ControlClient;
import warren.daemon.client.TraceRecorder;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;
import warren.splicer.client.SplicerClient;

/** A trace of a Splicer pair streams its live byte counts and ends with the pair. */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class SplicerTraceTest {
    @TempDir
    Path dir;

    @Test
    void aPairsTraceShowsItsByteCountsAsTheyGrowAndEndsWithThePair() throws Exception {
        Fd[] listeners = Relayed.listeners();
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("s.sock"), "audit.path = /dev/null\n");
                SplicerClient client = SplicerClient.connect(d.control);
                ControlClient operator = ControlClient.connect(d.control);
                Relayed r = Relayed.open(listeners)) {
            CompletableFuture<Long> task = new CompletableFuture<>();
            CompletableFuture<SplicerClient.Result> spliced = client.splice(r.a, r.b, null, null, task::complete);
            List<TraceChunk> counts = new CopyOnWriteArrayList<>();
            TraceRecorder rec = new TraceRecorder(operator, null, counts::add)
                    .start(Trace.newBuilder().setTask(task.get(10, TimeUnit.SECONDS)).setSeconds(60).build());
            long started = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
            while (rec.traceTask() == 0 && System.nanoTime() < started) {
                Thread.sleep(5); // Accepted: the first count (0, 0) was taken before it was sent
            }
            Pointer p = Native.allocate(4096);
            TcpSockets.writeFully(r.c, p, new byte[1000], 0, 1000);
            byte[] got = new byte[1000];
            for (int off = 0; off < got.length; ) {
                off += TcpSockets.read(r.u, p, got, off, got.length - off);
            }
            TcpSockets.writeFully(r.u, p, new byte[300], 0, 300);
            for (int off = 0; off < 300; ) {
                off += TcpSockets.read(r.c, p, got, off, 300 - off);
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
            while ((counts.isEmpty() || counts.get(counts.size() - 1).getBytesBToA() < 300) && System.nanoTime() < deadline) {
                Thread.sleep(20); // a count every 500 ms
            }
            TraceChunk last = counts.get(counts.size() - 1);
            assertTrue(last.getByteCounts(), last.toString());
            assertEquals(1000, last.getBytesAToB());
            assertEquals(300, last.getBytesBToA());
            assertEquals(0, counts.get(0).getBytesAToB(), "the first count comes at once");
            TcpSockets.shutdownOutput(r.c);
            TcpSockets.shutdownOutput(r.u);
            try (SplicerClient.Result res = spliced.get(10, TimeUnit.SECONDS)) {
                assertEquals(1000, res.spliced().getBytesAToB());
            }
            Response end = rec.await(5_000);
            assertEquals("task_ended", end.getTraceEnded().getReason(), end.toString());
            assertEquals(0, end.getTraceEnded().getPackets());
        } finally {
            Fd.closeAll(List.of(listeners));
        }
    }

    /**
     * An upgrade in place while a pair is traced: the trace ends with reason "upgrade" (traces do
     * not move), the upgrade goes through, the pair lives on in the new process and can be traced
     * there.
     */
    @Test
    void anUpgradeEndsATraceAndTakesThePairOver() throws Exception {
        Fd[] listeners = Relayed.listeners();
        Path ctl = dir.resolve("u.sock");
        try (warren.daemon.testing.DaemonProcess d = new warren.daemon.testing.DaemonProcess("splicer", Main.class, ctl,
                java.nio.file.Files.writeString(dir.resolve("u.conf"), "audit.path = /dev/null\n"), dir.resolve("u.log"));
                SplicerClient client = SplicerClient.connect(ctl);
                Relayed r = Relayed.open(listeners)) {
            CompletableFuture<Long> task = new CompletableFuture<>();
            CompletableFuture<SplicerClient.Result> spliced = client.splice(r.a, r.b, null, null, task::complete);
            long pid = d.pid();
            TraceRecorder rec;
            try (ControlClient operator = ControlClient.connect(ctl)) {
                rec = new TraceRecorder(operator, null, null).start(Trace.newBuilder()
                        .setTask(task.get(10, TimeUnit.SECONDS)).setSeconds(60).build());
                long started = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
                while (rec.traceTask() == 0 && System.nanoTime() < started) {
                    Thread.sleep(5);
                }
                assertEquals(0, d.upgrade(), "the upgrade went through with a trace running");
                Response end = rec.await(10_000);
                assertEquals("upgrade", end.getTraceEnded().getReason(), end.toString());
            }
            assertTrue(d.pid() != pid, "a new process serves");
            try (ControlClient operator = ControlClient.connect(ctl)) {
                List<TraceChunk> counts = new CopyOnWriteArrayList<>();
                TraceRecorder again = new TraceRecorder(operator, null, counts::add).start(Trace.newBuilder()
                        .setTask(task.get()).setSeconds(1).build());
                assertEquals("seconds", again.await(10_000).getTraceEnded().getReason(), "the new process traces it");
                assertTrue(!counts.isEmpty());
            }
            Pointer p = Native.allocate(64);
            TcpSockets.writeFully(r.c, p, new byte[10], 0, 10);
            byte[] got = new byte[10];
            for (int off = 0; off < 10; ) {
                off += TcpSockets.read(r.u, p, got, off, 10 - off);
            }
            TcpSockets.shutdownOutput(r.c);
            TcpSockets.shutdownOutput(r.u);
            try (SplicerClient.Result res = spliced.get(10, TimeUnit.SECONDS)) {
                assertEquals(10, res.spliced().getBytesAToB());
            }
        } finally {
            Fd.closeAll(List.of(listeners));
        }
    }
}
