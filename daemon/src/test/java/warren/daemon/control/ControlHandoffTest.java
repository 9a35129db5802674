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
import java.util.Set;
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
            server = new ControlServer("testd", "1", loop, l, new RequestHandler() {
                @Override
                public Set<Request.BodyCase> serves() {
                    return Set.of(Request.BodyCase.SPLICE);
                }

                @Override
                public void handle(Call call) {
                    Splice s = call.request().getSplice();
                    relay.start(call, call.takeFd(s.getFdA()), call.takeFd(s.getFdB()), 0, 0, 0);
                }
            }, tasks, audit, new Counters(), ControlServer.Settings.defaults());
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

    @Test
    void connectionsCallsTasksAndPairsMoveToASuccessorMidStream() throws Exception {
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

            SeqpacketSocket[] link = SeqpacketSocket.pair();
            AtomicReference<SeqpacketListener> nextListener = new AtomicReference<>();
            try (SeqpacketSocket oldSide = link[0]; SeqpacketSocket newSide = link[1]) {
                CompletableFuture<HandoffReceiver.Taken> successor = CompletableFuture.supplyAsync(() -> {
                    try {
                        return HandoffReceiver.receive(newSide, "testd", List.of(1), (v, items) -> next.on(() -> {
                            HandoffItem ci = items.get(0);
                            HandoffItem ri = items.get(1);
                            ControlState cs = ControlState.parseFrom(ci.payload());
                            SeqpacketListener l = SeqpacketListener.adopt(ci.fds().get(cs.getFdListener()).transfer());
                            nextListener.set(l);
                            ControlServer s = next.server(l);
                            Map<Long, Call> calls = s.adoptConnections(cs, ci.fds());
                            next.relay.pause();
                            for (Pair p : next.relay.adopt(RelayState.parseFrom(ri.payload()), ri.fds(), calls::get,
                                    Relay.HAND_BACK)) {
                                s.adoptTask(p.call(), p);
                            }
                            assertEquals(0, s.failUnclaimed());
                            return null;
                        }), 20_000);
                    } catch (Exception e) {
                        throw new java.util.concurrent.CompletionException(e);
                    }
                });
                HandoffSender.Report r = HandoffSender.hand(oldSide, "testd", new HandoffSender.Source() {
                    @Override
                    public int stateVersion() {
                        return 1;
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
                System.out.printf("handed a control server with %d calls and their pairs: %d fds in %.1f ms%n",
                        PAIRS, r.fds(), r.pausedNanos() / 1e6);
            }
            assertTrue(Files.exists(ctl), "the control path survives the old server");
            try (ControlClient late = ControlClient.connect(ctl);
                    Reply st = late.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                            .get(10, TimeUnit.SECONDS)) {
                assertEquals(PAIRS, st.response().getStatus().getTasksActive(), "the successor serves new clients");
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
            client.close();
            old.audit.flush(5000); // lines are written by the audits' writer threads
            next.audit.flush(5000);
            String oldAudit = Files.readString(dir.resolve("old.jsonl"));
            String newAudit = Files.readString(dir.resolve("new.jsonl"));
            assertEquals(PAIRS, count(oldAudit, "\"event\":\"start\""));
            assertEquals(0, count(oldAudit, "\"event\":\"end\""), "the old process ends no handed-on task");
            assertEquals(PAIRS, count(newAudit, "\"event\":\"end\""));
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
