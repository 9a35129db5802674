package warren.daemon.control;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Cancel;
import warren.control.v1.EndReason;
import warren.control.v1.Error;
import warren.control.v1.Limits;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.control.v1.Status;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.fdpass.FdCount;
import warren.daemon.testing.HoldingSpliceHandler;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.Received;
import warren.fdpass.SeqpacketSocket;
import warren.fdpass.libc.Native;

@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ControlServerTest {
    @TempDir
    Path dir;
    private final List<AutoCloseable> cleanup = new ArrayList<>();

    @AfterEach
    void tearDown() throws Exception {
        for (int i = cleanup.size() - 1; i >= 0; i--) {
            cleanup.get(i).close();
        }
    }

    private RunningDaemon daemon(String config) throws Exception {
        RunningDaemon d = new RunningDaemon(HoldingSpliceHandler.spec(), dir.resolve("ctl.sock"),
                "audit.path = " + dir.resolve("audit.jsonl") + "\n" + config);
        cleanup.add(d);
        return d;
    }

    private ControlClient client(RunningDaemon d) throws Exception {
        ControlClient c = ControlClient.connect(d.control);
        cleanup.add(c);
        return c;
    }

    /** Two stream socket pairs: [0],[1] go to the daemon, [2],[3] are their peers. */
    private static Fd[] pairs() throws Exception {
        int[] x = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
        int[] y = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
        return new Fd[] {Fd.adopt(x[0]), Fd.adopt(y[0]), Fd.adopt(x[1]), Fd.adopt(y[1])};
    }

    private static Request.Builder splice(long id, long lifetimeMs) {
        return Request.newBuilder().setId(id).setMetadata(ByteString.copyFromUtf8("meta-" + id))
                .setSplice(Splice.newBuilder().setFdA(0).setFdB(1)
                        .setLimits(Limits.newBuilder().setLifetimeMs(lifetimeMs)));
    }

    private static Response status(ControlClient c) throws Exception {
        try (Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                .get(10, TimeUnit.SECONDS)) {
            return r.response();
        }
    }

    private static Response rawRoundTrip(SeqpacketSocket s, byte[] bytes, List<Fd> fds) throws Exception {
        s.sendBlocking(bytes, fds, 5000);
        try (Received r = s.receiveBlocking(10_000)) {
            assertEquals(0, r.fdCount(), "an error answer carries no fds");
            return Response.parseFrom(r.data());
        }
    }

    @Test
    void tenThousandRoundTripsWithTwoFdsEachLeaveTheFdCountUnchanged() throws Exception {
        RunningDaemon d = daemon("");
        ControlClient c = client(d);
        java.util.Set<String> before = null;
        for (int i = 0; i < 10_100; i++) {
            if (i == 100) {
                FdCount.stable();
                before = FdCount.snapshot(); // after warm-up: classes loaded, buffers allocated
            }
            Fd[] p = pairs();
            try (Reply r = c.call(splice(0, 0), List.of(p[0], p[1])).get(10, TimeUnit.SECONDS)) {
                assertEquals(Response.BodyCase.SPLICED, r.response().getBodyCase(), r.toString());
                assertEquals(2, r.fdCount());
                r.takeFd(0).close();
                r.takeFd(1).close();
            } finally {
                Fd.closeAll(List.of(p));
            }
        }
        java.util.Set<String> left = FdCount.openedSince(before); // by identity: an earlier test's late close cannot hide one
        System.out.println("10,000 round trips with 2 fds each: " + left.size() + " fds left open");
        assertEquals(java.util.Set.of(), left, FdCount::dump);
        assertEquals(10_100, status(c).getStatus().getCountersOrThrow("requests.splice"));
    }

    @Test
    void badInputGetsErrorsWhileASecondClientIsServedThroughout() throws Exception {
        RunningDaemon d = daemon("");
        ControlClient good = client(d);
        SeqpacketSocket bad = SeqpacketSocket.connect(d.control);
        cleanup.add(bad);
        status(good);
        int before = FdCount.stable();

        Response r = rawRoundTrip(bad, new byte[] {(byte) 0xff, (byte) 0xff, (byte) 0xff}, List.of());
        assertEquals(Error.Code.MALFORMED, r.getError().getCode(), r.toString());
        assertEquals(Response.BodyCase.STATUS, status(good).getBodyCase());

        byte[] whole = splice(5, 0).build().toByteArray();
        r = rawRoundTrip(bad, java.util.Arrays.copyOf(whole, whole.length - 3), List.of());
        assertEquals(Error.Code.MALFORMED, r.getError().getCode(), r.toString());
        assertEquals(Response.BodyCase.STATUS, status(good).getBodyCase());

        r = rawRoundTrip(bad, new byte[] {0x08, 0x07, (byte) 0x98, 0x06, 0x01}, List.of());
        assertEquals(Error.Code.UNKNOWN_REQUEST, r.getError().getCode(), r.toString());
        assertEquals(7, r.getId(), "the id is echoed when it could be read");

        Fd[] p = pairs();
        r = rawRoundTrip(bad, Request.newBuilder().setId(8).setMetadata(ByteString.copyFromUtf8("m8"))
                .setSplice(Splice.newBuilder().setFdA(0).setFdB(2)).build().toByteArray(), List.of(p[0], p[1]));
        assertEquals(Error.Code.BAD_FD_INDEX, r.getError().getCode(), r.toString());
        assertEquals(ByteString.copyFromUtf8("m8"), r.getMetadata(), "metadata echoed untouched");
        assertEquals(Response.BodyCase.STATUS, status(good).getBodyCase());

        r = rawRoundTrip(bad, Request.newBuilder().setId(9).setSplice(Splice.newBuilder().setFdA(1).setFdB(1))
                .build().toByteArray(), List.of(p[0], p[1]));
        assertEquals(Error.Code.DUPLICATE_FD, r.getError().getCode(), r.toString());

        r = rawRoundTrip(bad, Request.newBuilder().setId(10).setStatus(Status.getDefaultInstance())
                .build().toByteArray(), List.of(p[0]));
        assertEquals(Error.Code.UNREFERENCED_FD, r.getError().getCode(), r.toString());

        // a pipe where a stream socket is expected
        int[] pipe = Native.pipe2(Native.O_CLOEXEC);
        try (Fd pr = Fd.adopt(pipe[0]); Fd pw = Fd.adopt(pipe[1])) {
            r = rawRoundTrip(bad, splice(11, 0).build().toByteArray(), List.of(pr, p[1]));
            assertEquals(Error.Code.BAD_FD_TYPE, r.getError().getCode(), r.toString());
            assertTrue(r.getError().getMessage().contains("a pipe"), r.getError().getMessage());
        }

        // a message larger than the server's buffer: MSG_TRUNC
        SeqpacketSocket huge = SeqpacketSocket.connect(d.control);
        cleanup.add(huge);
        // the server reads at most 64 KiB; a sender wrapped with a larger limit can exceed it
        SeqpacketSocket wide = SeqpacketSocket.wrap(huge.fd().dup(), 200_000, 253);
        cleanup.add(wide);
        r = rawRoundTrip(wide, new byte[100_000], List.of(p[0]));
        assertEquals(Error.Code.TRUNCATED, r.getError().getCode(), r.toString());

        // an unknown body this daemon does not serve
        r = rawRoundTrip(bad, Request.newBuilder().setId(12).setEgress(warren.control.v1.Egress.newBuilder()
                .setFdPackets(0)).build().toByteArray(), List.of(p[0]));
        assertEquals(Error.Code.UNKNOWN_REQUEST, r.getError().getCode(), r.toString());

        Fd.closeAll(List.of(p));
        assertEquals(Response.BodyCase.STATUS, status(good).getBodyCase());
        // the extra connection: its fd, its dup, and the server side of it
        assertEquals(before + 3, FdCount.awaitCount(before + 3), () -> "nothing but the extra connection is open: " + FdCount.dump());
        d.daemon.audit().flush(5000); // lines are written by the audit's writer thread
        String audit = Files.readString(dir.resolve("audit.jsonl"));
        assertTrue(audit.contains("\"event\":\"rejected\"") && audit.contains("\"code\":\"BAD_FD_INDEX\""), audit);
    }

    @Test
    void inFlightCapDuplicateIdsAndCancel() throws Exception {
        RunningDaemon d = daemon("control.max_in_flight_per_client = 3\n");
        ControlClient c = client(d);
        List<Fd> mine = new ArrayList<>();
        List<CompletableFuture<Reply>> held = new ArrayList<>();
        CountDownLatch accepted = new CountDownLatch(3);
        for (int i = 1; i <= 3; i++) {
            Fd[] p = pairs();
            mine.addAll(List.of(p));
            held.add(c.call(splice(i, 600_000), List.of(p[0], p[1]), a -> accepted.countDown()));
        }
        assertTrue(accepted.await(10, TimeUnit.SECONDS), "early Accepted answers");
        Fd[] p = pairs();
        mine.addAll(List.of(p));
        try (Reply r = c.call(splice(4, 600_000), List.of(p[0], p[1])).get(10, TimeUnit.SECONDS)) {
            assertEquals(Error.Code.TOO_MANY_IN_FLIGHT, r.response().getError().getCode(), r.toString());
        }
        // Cancel, Status and List are answered at once and do not count against the cap
        ControlClient other = client(d);
        try (Reply r = c.call(Request.newBuilder().setCancel(Cancel.newBuilder().setTargetId(2)), List.of())
                .get(10, TimeUnit.SECONDS)) {
            assertEquals(Response.BodyCase.CANCELLED, r.response().getBodyCase(), r.toString());
        }
        try (Reply r = held.get(1).get(10, TimeUnit.SECONDS)) {
            assertEquals(EndReason.CANCELLED, r.response().getSpliced().getReason());
            assertEquals(ByteString.copyFromUtf8("meta-2"), r.response().getMetadata());
            assertEquals(2, r.fdCount(), "both sockets handed back");
            r.takeFd(0).close();
            r.takeFd(1).close();
        }
        try (Reply r = other.call(Request.newBuilder().setCancel(Cancel.newBuilder().setTargetId(3)), List.of())
                .get(10, TimeUnit.SECONDS)) {
            assertEquals(Error.Code.NOT_FOUND, r.response().getError().getCode(), "ids are per connection");
        }
        long task3 = d.daemon.tasks().byRequest(1, 3).number();
        try (Reply r = other.call(Request.newBuilder().setCancel(Cancel.newBuilder().setTask(task3)), List.of())
                .get(10, TimeUnit.SECONDS)) {
            assertEquals(Response.BodyCase.CANCELLED, r.response().getBodyCase(), "by task number, any connection");
        }
        try (Reply r = held.get(2).get(10, TimeUnit.SECONDS)) {
            assertEquals(EndReason.CANCELLED, r.response().getSpliced().getReason());
        }
        // an id already in flight on the connection (request 1 is still held)
        SeqpacketSocket raw = SeqpacketSocket.connect(d.control);
        cleanup.add(raw);
        raw.sendBlocking(splice(1, 600_000).build().toByteArray(), List.of(p[0], p[1]), 5000);
        try (Received first = raw.receiveBlocking(5000)) {
            assertEquals(Response.BodyCase.ACCEPTED, Response.parseFrom(first.data()).getBodyCase());
        }
        Fd[] q = pairs();
        mine.addAll(List.of(q));
        raw.sendBlocking(splice(1, 600_000).build().toByteArray(), List.of(q[0], q[1]), 5000);
        try (Received second = raw.receiveBlocking(5000)) {
            assertEquals(Error.Code.DUPLICATE_ID, Response.parseFrom(second.data()).getError().getCode());
        }
        Response listing = null;
        try (Reply r = other.call(Request.newBuilder().setList(warren.control.v1.List.getDefaultInstance()), List.of())
                .get(10, TimeUnit.SECONDS)) {
            listing = r.response();
        }
        assertTrue(listing.getListing().getTasksCount() >= 2, listing.toString());
        assertEquals("holding", listing.getListing().getTasks(0).getState());
        Fd.closeAll(mine);
    }

    @Test
    void aTaskOutlivesItsClientAndItsAnswerIsDroppedWithoutALeak() throws Exception {
        RunningDaemon d = daemon("");
        ControlClient watcher = client(d);
        status(watcher);
        int before = FdCount.stable();
        ControlClient c = ControlClient.connect(d.control);
        Fd[] p = pairs();
        CountDownLatch accepted = new CountDownLatch(1);
        c.call(splice(1, 300), List.of(p[0], p[1]), a -> accepted.countDown());
        assertTrue(accepted.await(10, TimeUnit.SECONDS));
        c.close();
        Fd.closeAll(List.of(p));
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (status(watcher).getStatus().getCountersOrDefault("answers.dropped", 0) == 0) {
            assertTrue(System.nanoTime() < deadline, "the held task ended and its answer was dropped");
            Thread.sleep(20);
        }
        assertEquals(before, FdCount.awaitCount(before), FdCount::dump);
    }

    @Test
    void shutdownHandsEveryTaskBackAndWritesOneStartAndOneEndLinePerTask() throws Exception {
        RunningDaemon d = new RunningDaemon(HoldingSpliceHandler.spec(), dir.resolve("s.sock"),
                "audit.path = " + dir.resolve("audit.jsonl"));
        ControlClient c = ControlClient.connect(d.control);
        List<CompletableFuture<Reply>> held = new ArrayList<>();
        List<Fd> mine = new ArrayList<>();
        CountDownLatch accepted = new CountDownLatch(5);
        for (int i = 1; i <= 5; i++) {
            Fd[] p = pairs();
            mine.addAll(List.of(p));
            held.add(c.call(splice(i, 600_000), List.of(p[0], p[1]), a -> accepted.countDown()));
        }
        assertTrue(accepted.await(10, TimeUnit.SECONDS));
        d.close();
        for (CompletableFuture<Reply> f : held) {
            try (Reply r = f.get(10, TimeUnit.SECONDS)) {
                assertEquals(EndReason.SHUTDOWN, r.response().getSpliced().getReason());
                assertEquals(2, r.fdCount());
            }
        }
        assertFalse(Files.exists(d.control), "control socket removed");
        c.close();
        Fd.closeAll(mine);
        List<String> lines = Files.readAllLines(dir.resolve("audit.jsonl"));
        assertEquals(5, lines.stream().filter(l -> l.contains("\"event\":\"start\"")).count(), String.join("\n", lines));
        assertEquals(5, lines.stream().filter(l -> l.contains("\"event\":\"end\"") && l.contains("\"reason\":\"SHUTDOWN\""))
                .count(), String.join("\n", lines));
        for (int t = 1; t <= 5; t++) {
            String key = "\"task\":" + t + ",";
            assertEquals(2, lines.stream().filter(l -> l.contains(key)).count(), "task " + t + ": one start, one end");
        }
    }
}
