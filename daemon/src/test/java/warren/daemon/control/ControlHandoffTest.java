package warren.daemon.control;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.EndReason;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.control.v1.Status;
import warren.daemon.audit.AuditLog;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.handoff.HandoffItem;
import warren.daemon.handoff.HandoffReceiver;
import warren.daemon.handoff.HandoffSender;
import warren.daemon.loop.EventLoop;
import warren.daemon.metrics.Counters;
import warren.daemon.relay.Pair;
import warren.daemon.relay.Relay;
import warren.daemon.task.TaskRegistry;
import warren.daemon.testing.LoopThread;
import warren.daemon.testing.Streams;
import warren.fdpass.Fd;
import warren.fdpass.SeqpacketListener;
import warren.fdpass.SeqpacketSocket;
import warren.fdpass.libc.Native;
import warren.handoff.v1.ControlState;
import warren.handoff.v1.RelayState;

/**
 * A whole Splicer-like daemon (control server + relay on an event loop) hands its listener, its
 * client connection with 20 Splice requests in flight, their tasks and their streaming pairs to a
 * successor (another server, relay and loop), mid-stream. The client, which never reconnects,
 * gets every final {@code Spliced} answer from the successor on the same connection with the
 * original sockets and exact counts; the far ends get identical bytes; task numbers carry over
 * (start line by the old, end line by the new); the control path keeps serving new clients.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ControlHandoffTest {
    private static final int PAIRS = 20;
    private static final int BYTES = 2 << 20;

    @TempDir
    Path dir;

    private static final class Side implements AutoCloseable {
        final LoopThread lt;
        final EventLoop loop;
        final Relay relay;
        final TaskRegistry tasks;
        final AuditLog audit;
        final ConcurrentLinkedQueue<Throwable> errors;
        ControlServer server;

        Side(Path auditPath) throws Exception {
            lt = new LoopThread("handoff-loop", 512);
            loop = lt.loop;
            errors = lt.errors;
            relay = new Relay(loop, new Counters(), new Relay.Settings(64 * 1024, 4, 256));
            audit = AuditLog.open("testd", auditPath.toString());
            tasks = new TaskRegistry(audit);
        }

        ControlServer server(SeqpacketListener l) {
            server = new ControlServer("testd", "1", loop, l, warren.daemon.testing.RelayingHandler.of(relay), tasks, audit, new Counters(), ControlServer.Settings.defaults());
            return server;
        }

        <T> T on(java.util.concurrent.Callable<T> c) throws Exception {
            return lt.on(c);
        }

        @Override
        public void close() throws Exception {
            lt.stop();
            if (server != null) {
                server.closeAll();
            }
            relay.close();
            loop.close();
            audit.close();
        }
    }

    /**
     * With {@code preCopy} (handoff protocol 2) the listener, every call with its task and every
     * pair are copied while the old side serves; meanwhile one more copied pair ends (its answer
     * comes from the old side) and one more Splice begins (sent whole at the pause); the pause
     * then carries only that delta: the gone call and ended pair by ref and key, the new call and
     * pair, the updated pairs' pipes.
     */
    @org.junit.jupiter.params.ParameterizedTest(name = "pre-copy = {0}")
    @org.junit.jupiter.params.provider.ValueSource(booleans = {false, true})
    void connectionsCallsTasksAndPairsMoveToASuccessorMidStream(boolean preCopy) throws Exception {
        Path ctl = dir.resolve("ctl.sock");
        byte[] expect = new byte[BYTES];
        new java.util.Random(3).nextBytes(expect);
        byte[] want = Streams.sha256(expect);
        List<Fd> ends = new ArrayList<>();
        java.util.concurrent.ExecutorService io = java.util.concurrent.Executors.newCachedThreadPool();
        try (Side old = new Side(dir.resolve("old.jsonl")); Side next = new Side(dir.resolve("new.jsonl"))) {
            SeqpacketListener listener = SeqpacketListener.bind(ctl);
            old.on(() -> {
                old.server(listener).start();
                return null;
            });
            ControlClient client = ControlClient.connect(ctl);
            List<CompletableFuture<Reply>> answers = new ArrayList<>();
            List<CompletableFuture<Void>> writers = new ArrayList<>();
            for (int i = 0; i < PAIRS; i++) {
                int[] x = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                int[] y = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                Fd a = Fd.adopt(x[1]);
                Fd b = Fd.adopt(y[0]);
                ends.add(Fd.adopt(x[0]));
                ends.add(Fd.adopt(y[1]));
                CompletableFuture<Response> accepted = new CompletableFuture<>();
                answers.add(client.call(Request.newBuilder().setId(100 + i).setMetadata(ByteString.copyFromUtf8("m" + i))
                        .setSplice(Splice.newBuilder().setFdA(0).setFdB(1)), List.of(a, b), accepted::complete));
                accepted.get(10, TimeUnit.SECONDS);
                a.close();
                b.close();
                int c1 = ends.get(2 * i).get();
                writers.add(CompletableFuture.runAsync(() -> Streams.writeAll(c1, expect), io));
            }
            Thread.sleep(100); // nobody reads yet: bytes wait in the pipes
            // pre-copy only: an idle pair that ends during the copy, and one that begins after it
            List<Fd> extra = new ArrayList<>();
            List<CompletableFuture<Reply>> extraAnswers = new ArrayList<>();
            java.util.concurrent.Callable<Void> splice = () -> {
                int[] x = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                int[] y = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                extra.add(Fd.adopt(x[0]));
                extra.add(Fd.adopt(y[1]));
                try (Fd a = Fd.adopt(x[1]); Fd b = Fd.adopt(y[0])) {
                    CompletableFuture<Response> accepted = new CompletableFuture<>();
                    extraAnswers.add(client.call(Request.newBuilder().setId(900 + extraAnswers.size())
                            .setSplice(Splice.newBuilder().setFdA(0).setFdB(1)), List.of(a, b), accepted::complete));
                    accepted.get(10, TimeUnit.SECONDS);
                }
                return null;
            };
            if (preCopy) {
                splice.call(); // extra pair 0: copied, then ends
            }
            ControlState[] delta = new ControlState[1];
            RelayState[] relayDelta = new RelayState[1];

            SeqpacketSocket[] link = SeqpacketSocket.pair();
            AtomicReference<SeqpacketListener> nextListener = new AtomicReference<>();
            try (SeqpacketSocket oldSide = link[0]; SeqpacketSocket newSide = link[1]) {
                HandoffReceiver.Preparer preparer = new HandoffReceiver.Preparer() {
                    @Override
                    public void preCopy(int v, List<HandoffItem> items) throws Exception {
                        next.on(() -> {
                            for (HandoffItem it : items) {
                                switch (it.name()) {
                                    case "control.listener" -> {
                                        SeqpacketListener l = SeqpacketListener.adopt(it.fds().get(0).transfer());
                                        nextListener.set(l);
                                        next.server(l);
                                        next.relay.pause();
                                    }
                                    case "control.calls" -> assertEquals(PAIRS + 1,
                                            next.server.preAdoptCalls(ControlState.parseFrom(it.payload())));
                                    default -> next.relay.preAdopt(RelayState.parseFrom(it.payload()), it.fds());
                                }
                            }
                            return null;
                        });
                    }

                    @Override
                    public void prepare(int v, List<HandoffItem> items) throws Exception {
                        next.on(() -> {
                            HandoffItem ci = items.get(0);
                            HandoffItem ri = items.get(1);
                            ControlState cs = ControlState.parseFrom(ci.payload());
                            delta[0] = cs;
                            relayDelta[0] = RelayState.parseFrom(ri.payload());
                            Fd copy = ci.fds().get(cs.getFdListener());
                            if (next.server == null) {
                                SeqpacketListener l = SeqpacketListener.adopt(copy.transfer());
                                nextListener.set(l);
                                next.server(l);
                                next.relay.pause();
                            } else {
                                copy.close(); // the server was built on the pre-copied listener
                            }
                            ControlServer s = next.server;
                            Map<Long, Call> calls = s.adoptConnections(cs, ci.fds());
                            for (Pair p : next.relay.adopt(relayDelta[0], ri.fds(), calls::get, Relay.HAND_BACK)) {
                                s.adoptTask(p.call(), p);
                            }
                            for (Pair p : next.relay.adoptCopies(calls::get, Relay.HAND_BACK)) {
                                s.adoptTask(p.call(), p);
                            }
                            assertEquals(0, s.failUnclaimed());
                            return null;
                        });
                    }
                };
                CompletableFuture<HandoffReceiver.Taken> successor = CompletableFuture.supplyAsync(() -> {
                    try {
                        return HandoffReceiver.receive(newSide, "testd", List.of(1), preparer, 20_000);
                    } catch (Exception e) {
                        throw new java.util.concurrent.CompletionException(e);
                    }
                });
                int[] copies = new int[1];
                HandoffSender.Report r = HandoffSender.hand(oldSide, "testd", new HandoffSender.Source() {
                    @Override
                    public int stateVersion() {
                        return 1;
                    }

                    @Override
                    public List<HandoffItem> preCopy(int maxFds) throws Exception {
                        if (!preCopy || copies[0]++ > 0) {
                            return List.of();
                        }
                        List<HandoffItem> chunk = old.on(() -> List.of(old.server.exportListener("control.listener"),
                                old.server.preCopyCalls("control.calls"), old.relay.preCopy("relay",
                                        old.server::taskRef, maxFds)));
                        // during the copy: extra pair 0 ends (answered by the old side), extra pair 1 begins
                        Native.shutdown(extra.get(0).get(), Native.SHUT_WR);
                        Native.shutdown(extra.get(1).get(), Native.SHUT_WR);
                        try (Reply rep = extraAnswers.get(0).get(10, TimeUnit.SECONDS)) {
                            assertEquals(EndReason.BOTH_EOF, rep.response().getSpliced().getReason());
                            rep.takeFd(0).close();
                            rep.takeFd(1).close();
                        }
                        splice.call();
                        return chunk;
                    }

                    @Override
                    public List<HandoffItem> pause() throws Exception {
                        return old.on(() -> {
                            old.server.pauseForHandoff();
                            old.relay.pause();
                            return List.of(old.server.export("control"), old.relay.export("relay", old.server::callRef));
                        });
                    }

                    @Override
                    public void resume() {
                        throw new AssertionError("must not resume");
                    }
                }, 20_000);
                old.on(() -> {
                    old.relay.abandon();
                    old.server.abandonAfterHandoff();
                    return null;
                });
                successor.get(30, TimeUnit.SECONDS);
                next.on(() -> {
                    next.relay.resume();
                    next.server.start();
                    return null;
                });
                System.out.printf("handed a control server with %d calls and their pairs: %d fds in %.1f ms"
                        + " (%d pre-copied)%n", PAIRS, r.fds(), r.pausedNanos() / 1e6, r.preCopiedFds());
                if (preCopy) {
                    assertTrue(delta[0].getCallsDelta());
                    assertEquals(1, delta[0].getGoneCallsCount(), "the call whose pair ended during the copy");
                    int sent = 0;
                    for (warren.handoff.v1.ControlConnection cc : delta[0].getConnectionsList()) {
                        sent += cc.getCallsCount();
                    }
                    assertEquals(1, sent, "only the call begun after the copy is sent at the pause");
                    assertEquals(1, relayDelta[0].getEndedCount());
                    assertEquals(1, relayDelta[0].getPairsList().stream().filter(rp -> !rp.getUpdate()).count());
                    assertEquals(2 * (PAIRS + 1) + 1, r.preCopiedFds(), "the listener and every pair's sockets");
                }
            }
            assertTrue(Files.exists(ctl), "the control path survives the old server");
            try (ControlClient late = ControlClient.connect(ctl);
                    Reply st = late.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                            .get(10, TimeUnit.SECONDS)) {
                assertEquals(PAIRS + (preCopy ? 1 : 0), st.response().getStatus().getTasksActive(),
                        "the successor serves new clients");
            }
            List<CompletableFuture<byte[]>> readers = new ArrayList<>();
            for (int i = 0; i < PAIRS; i++) {
                int c2 = ends.get(2 * i + 1).get();
                readers.add(CompletableFuture.supplyAsync(() -> Streams.readAllSha256(c2), io));
            }
            for (CompletableFuture<Void> w : writers) {
                w.get(60, TimeUnit.SECONDS);
            }
            for (int i = 0; i < PAIRS; i++) {
                Native.shutdown(ends.get(2 * i).get(), Native.SHUT_WR);
                Native.shutdown(ends.get(2 * i + 1).get(), Native.SHUT_WR);
            }
            for (CompletableFuture<byte[]> rd : readers) {
                assertArrayEquals(want, rd.get(60, TimeUnit.SECONDS));
            }
            for (int i = 0; i < PAIRS; i++) {
                try (Reply rep = answers.get(i).get(30, TimeUnit.SECONDS)) {
                    Response resp = rep.response();
                    assertEquals(100 + i, resp.getId());
                    assertEquals("m" + i, resp.getMetadata().toStringUtf8());
                    assertEquals(EndReason.BOTH_EOF, resp.getSpliced().getReason());
                    assertEquals(BYTES, resp.getSpliced().getBytesAToB());
                    assertEquals(2, rep.fdCount(), "both original sockets come back");
                    try (Fd a = rep.takeFd(0)) {
                        assertEquals(Native.fstat(ends.get(2 * i).get())[2], Native.fstat(a.get())[2]);
                    }
                    rep.takeFd(1).close();
                }
            }
            if (preCopy) { // extra pair 1, begun after the copy, relays through the successor
                jnr.ffi.Pointer buf = Native.allocate(4);
                buf.putInt(0, 42);
                assertEquals(4, Native.write(extra.get(2).get(), buf, 4));
                assertEquals(4, Native.read(extra.get(3).get(), buf, 4));
                assertEquals(42, buf.getInt(0));
                Native.shutdown(extra.get(2).get(), Native.SHUT_WR);
                Native.shutdown(extra.get(3).get(), Native.SHUT_WR);
                try (Reply rep = extraAnswers.get(1).get(30, TimeUnit.SECONDS)) {
                    assertEquals(EndReason.BOTH_EOF, rep.response().getSpliced().getReason());
                    assertEquals(4, rep.response().getSpliced().getBytesAToB());
                    rep.takeFd(0).close();
                    rep.takeFd(1).close();
                }
            }
            Fd.closeAll(extra);
            client.close();
            old.audit.flush(5000); // lines are written by the audits' writer threads
            next.audit.flush(5000);
            String oldAudit = Files.readString(dir.resolve("old.jsonl"));
            String newAudit = Files.readString(dir.resolve("new.jsonl"));
            int x = preCopy ? 1 : 0;
            assertEquals(PAIRS + 2 * x, count(oldAudit, "\"event\":\"start\""));
            assertEquals(x, count(oldAudit, "\"event\":\"end\""), "the old process ends no handed-on task");
            assertEquals(PAIRS + x, count(newAudit, "\"event\":\"end\""));
            assertEquals(0, count(newAudit, "\"event\":\"start\""));
            assertTrue(old.errors.isEmpty() && next.errors.isEmpty(), old.errors + " " + next.errors);
            if (nextListener.get() != null) {
                nextListener.get().close();
            }
        } finally {
            Fd.closeAll(ends);
            io.shutdownNow();
        }
    }

    @Test
    void aPausedServerThatResumesServesAsBefore() throws Exception {
        Path ctl = dir.resolve("ctl2.sock");
        List<Fd> ends = new ArrayList<>();
        try (Side side = new Side(dir.resolve("a.jsonl"))) {
            SeqpacketListener listener = SeqpacketListener.bind(ctl);
            side.on(() -> {
                side.server(listener).start();
                return null;
            });
            try (ControlClient client = ControlClient.connect(ctl)) {
                int[] x = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                int[] y = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                ends.add(Fd.adopt(x[0]));
                ends.add(Fd.adopt(y[1]));
                try (Fd a = Fd.adopt(x[1]); Fd b = Fd.adopt(y[0])) {
                    CompletableFuture<Response> accepted = new CompletableFuture<>();
                    CompletableFuture<Reply> answer = client.call(Request.newBuilder().setId(7)
                            .setSplice(Splice.newBuilder().setFdA(0).setFdB(1)), List.of(a, b), accepted::complete);
                    accepted.get(10, TimeUnit.SECONDS);
                    side.on(() -> {
                        int registered = side.loop.registrations();
                        side.server.pauseForHandoff();
                        side.relay.pause();
                        assertTrue(side.server.pausedForHandoff());
                        assertEquals(registered, side.loop.registrations(),
                                "pausing holds the registrations' events (EventLoop.Group), it unregisters nothing");
                        HandoffItem it = side.server.export("control");
                        assertEquals(2, it.fds().size(), "listener and one connection");
                        assertEquals(1, side.server.callRef(side.tasks.list().get(0).task() instanceof Pair p ? p.call() : null));
                        return null;
                    });
                    // a request sent while paused waits, and is served after the resume
                    CompletableFuture<Reply> status = client.call(Request.newBuilder().setStatus(Status.getDefaultInstance()),
                            List.of());
                    Thread.sleep(200);
                    assertTrue(!status.isDone(), "nothing is read while paused");
                    side.on(() -> {
                        side.relay.resume();
                        side.server.resumeAfterHandoff();
                        return null;
                    });
                    try (Reply st = status.get(10, TimeUnit.SECONDS)) {
                        assertEquals(1, st.response().getStatus().getTasksActive());
                    }
                    Native.shutdown(ends.get(0).get(), Native.SHUT_WR);
                    Native.shutdown(ends.get(1).get(), Native.SHUT_WR);
                    try (Reply rep = answer.get(10, TimeUnit.SECONDS)) {
                        assertEquals(EndReason.BOTH_EOF, rep.response().getSpliced().getReason());
                        rep.takeFd(0).close();
                        rep.takeFd(1).close();
                    }
                }
            }
            assertTrue(side.errors.isEmpty(), side.errors.toString());
        } finally {
            Fd.closeAll(ends);
        }
    }

    private static int count(String s, String what) {
        int n = 0;
        for (int i = s.indexOf(what); i >= 0; i = s.indexOf(what, i + 1)) {
            n++;
        }
        return n;
    }
}
