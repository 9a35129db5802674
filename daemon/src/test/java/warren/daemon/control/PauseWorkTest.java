package warren.daemon.control;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.daemon.audit.AuditLog;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.handoff.HandoffItem;
import warren.daemon.handoff.HandoffReceiver;
import warren.daemon.handoff.HandoffSender;
import warren.daemon.metrics.Counters;
import warren.daemon.relay.Pair;
import warren.daemon.relay.Relay;
import warren.daemon.task.TaskRegistry;
import warren.daemon.testing.LoopThread;
import warren.fdpass.Fd;
import warren.fdpass.SeqpacketListener;
import warren.fdpass.SeqpacketSocket;
import warren.fdpass.libc.Native;
import warren.handoff.v1.ControlState;
import warren.handoff.v1.RelayState;

/**
 * The pause is O(changed), not O(flows) (issue 16): a Splicer-like daemon (control server and
 * relay on a loop) with N idle pairs, all pre-copied (sockets, calls) and attached to their calls
 * in the successor during the pre-copy, of which one moves a byte after its copy, hands over; the
 * old side's pause + export ({@code pauseVisits}) and the successor's adoption at the pause
 * ({@code adoptVisits}) must visit the same number of calls and pairs with 10 pairs as with
 * 2,000. This is the regression test that fails if either side goes back to scanning every
 * pair or call in the pause. (It counts work, not time: no timing is asserted.)
 */
@Timeout(value = 300, unit = TimeUnit.SECONDS)
class PauseWorkTest {
    @TempDir
    Path dir;

    /** What one handoff's pause did, on both sides, and what it carried. */
    private record Work(long oldCalls, long oldPairs, long newCalls, long newPairs, int deltaCalls, int deltaPairs,
            int pauseFds, int attachedBeforePause, long preCopiedFds) {}

    @Test
    void thePauseVisitsTheSameCallsAndPairsWith10And2000IdlePairs() throws Exception {
        Work small = handOver(10, "a", false);
        Work large = handOver(2000, "b", false);
        System.out.println("pause work, 10 pairs: " + small + "; 2,000 pairs: " + large);
        assertEquals(10, small.attachedBeforePause(), "every pre-copied pair got its call and task in the pre-copy");
        assertEquals(2000, large.attachedBeforePause(), "every pre-copied pair got its call and task in the pre-copy");
        assertEquals(1, large.deltaPairs(), "only the pair that moved after its copy is in the delta");
        assertEquals(0, large.deltaCalls(), "no call changed after the copy");
        assertEquals(2, large.pauseFds(), "the listener and the one connection");
        assertEquals(small.oldCalls(), large.oldCalls(), "calls visited by the old side's pause and export");
        assertEquals(small.oldPairs(), large.oldPairs(), "pairs visited by the old relay's export");
        assertEquals(small.newCalls(), large.newCalls(), "calls and connections visited by the successor's adoption");
        assertEquals(small.newPairs(), large.newPairs(), "pairs visited by the successor's relay adoption");
        assertTrue(large.oldPairs() <= 2 && large.newPairs() <= 2 && large.oldCalls() <= 2 && large.newCalls() <= 2,
                large.toString());
    }

    /**
     * Pinned pipes (systemd's fd store: every pair holds its two pipes for its life) are pre-copied
     * with their sockets, 6 fds per pair; the pair that moved after its copy then costs its counts
     * only in the pause, no fd, and relays on through the successor's copy of its pipes.
     */
    @Test
    void pinnedPipesArePreCopiedAndThePauseCarriesCountsOnly() throws Exception {
        Work w = handOver(10, "c", true);
        System.out.println("pinned pipes, 10 pairs: " + w);
        assertEquals(1 + 6 * 10, w.preCopiedFds(), "the listener, and each pair's 2 sockets and 4 pipe ends");
        assertEquals(1, w.deltaPairs(), "the pair that moved after its copy: an update");
        assertEquals(2, w.pauseFds(), "the listener and the connection: no pipe travels in the pause");
        assertEquals(10, w.attachedBeforePause());
    }

    private static final class Side implements AutoCloseable {
        final LoopThread lt;
        final Relay relay;
        final TaskRegistry tasks;
        final AuditLog audit;
        ControlServer server;

        Side(Path auditPath, boolean pinPipes) throws Exception {
            lt = new LoopThread("pause-work-loop", 16_384);
            relay = new Relay(lt.loop, new Counters(), new Relay.Settings(64 * 1024, 4, 256, pinPipes));
            audit = AuditLog.open("testd", auditPath.toString());
            tasks = new TaskRegistry(audit);
        }

        ControlServer server(SeqpacketListener l) {
            server = new ControlServer("testd", "1", lt.loop, l, warren.daemon.testing.RelayingHandler.of(relay), tasks, audit, new Counters(), ControlServer.Settings.defaults());
            return server;
        }

        <T> T on(java.util.concurrent.Callable<T> c) throws Exception {
            return lt.on(c);
        }

        @Override
        public void close() throws Exception {
            lt.stop();
            relay.close();
            lt.loop.close();
            audit.close();
        }
    }

    private Work handOver(int n, String tag, boolean pinPipes) throws Exception {
        Path ctl = dir.resolve(tag + ".sock");
        List<Fd> ends = new ArrayList<>();
        try (Side old = new Side(dir.resolve(tag + "-old.jsonl"), pinPipes);
                Side next = new Side(dir.resolve(tag + "-new.jsonl"), pinPipes)) {
            SeqpacketListener listener = SeqpacketListener.bind(ctl);
            old.on(() -> {
                old.server(listener).start();
                return null;
            });
            try (ControlClient client = ControlClient.connect(ctl)) {
                List<CompletableFuture<Response>> accepted = new ArrayList<>();
                for (int i = 0; i < n; i++) {
                    int[] x = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                    int[] y = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                    ends.add(Fd.adopt(x[0]));
                    ends.add(Fd.adopt(y[1]));
                    try (Fd a = Fd.adopt(x[1]); Fd b = Fd.adopt(y[0])) {
                        CompletableFuture<Response> acc = new CompletableFuture<>();
                        client.call(Request.newBuilder().setId(1 + i).setSplice(Splice.newBuilder().setFdA(0).setFdB(1)),
                                List.of(a, b), acc::complete);
                        accepted.add(acc);
                    }
                }
                for (CompletableFuture<Response> acc : accepted) {
                    assertTrue(acc.get(60, TimeUnit.SECONDS).hasAccepted());
                }
                AtomicWork work = new AtomicWork();
                SeqpacketSocket[] link = SeqpacketSocket.pair();
                try (SeqpacketSocket oldSide = link[0]; SeqpacketSocket newSide = link[1]) {
                    HandoffReceiver.Preparer preparer = new HandoffReceiver.Preparer() {
                        @Override
                        public void preCopy(int v, List<HandoffItem> items) throws Exception {
                            next.on(() -> {
                                for (HandoffItem it : items) {
                                    switch (it.name()) {
                                        case "control.listener" -> {
                                            next.server(SeqpacketListener.adopt(it.fds().get(0).transfer()));
                                            next.relay.pause();
                                        }
                                        case "control.calls" -> next.server.preAdoptCalls(ControlState.parseFrom(it.payload()));
                                        default -> next.relay.preAdopt(RelayState.parseFrom(it.payload()), it.fds());
                                    }
                                }
                                next.relay.preAttach(next.server::preCopiedCall, Relay.HAND_BACK, next.server::preAdoptTask);
                                return null;
                            });
                        }

                        @Override
                        public void prepare(int v, List<HandoffItem> items) throws Exception {
                            next.on(() -> {
                                work.attached = next.tasks.active();
                                HandoffItem ci = items.get(0);
                                HandoffItem ri = items.get(1);
                                ControlState cs = ControlState.parseFrom(ci.payload());
                                RelayState rs = RelayState.parseFrom(ri.payload());
                                work.deltaPairs = rs.getPairsCount() + rs.getEndedCount();
                                for (warren.handoff.v1.ControlConnection cc : cs.getConnectionsList()) {
                                    work.deltaCalls += cc.getCallsCount();
                                }
                                work.deltaCalls += cs.getDetachedCount() + cs.getGoneCallsCount();
                                work.pauseFds = ci.fds().size() + ri.fds().size();
                                ci.fds().get(cs.getFdListener()).close(); // the server runs on the pre-copied listener
                                ControlServer s = next.server;
                                Map<Long, Call> calls = s.adoptConnections(cs, ci.fds());
                                for (Pair p : next.relay.adopt(rs, ri.fds(), calls::get, Relay.HAND_BACK)) {
                                    s.adoptTask(p.call(), p);
                                }
                                for (Pair p : next.relay.adoptCopies(calls::get, Relay.HAND_BACK)) {
                                    s.adoptTask(p.call(), p);
                                }
                                assertEquals(0, s.failUnclaimed());
                                work.newCalls = s.adoptVisits();
                                work.newPairs = next.relay.adoptVisits();
                                return null;
                            });
                        }
                    };
                    CompletableFuture<HandoffReceiver.Taken> successor = CompletableFuture.supplyAsync(() -> {
                        try {
                            return HandoffReceiver.receive(newSide, "testd", List.of(1), preparer, 120_000);
                        } catch (Exception e) {
                            throw new java.util.concurrent.CompletionException(e);
                        }
                    });
                    boolean[] listenerSent = new boolean[1];
                    HandoffSender.Report report = HandoffSender.hand(oldSide, "testd", new HandoffSender.Source() {
                        @Override
                        public int stateVersion() {
                            return 1;
                        }

                        @Override
                        public List<HandoffItem> preCopy(int maxFds) throws Exception {
                            List<HandoffItem> chunk = old.on(() -> {
                                List<HandoffItem> l = new ArrayList<>();
                                if (!listenerSent[0]) {
                                    listenerSent[0] = true;
                                    l.add(old.server.exportListener("control.listener"));
                                    l.add(old.server.preCopyCalls("control.calls"));
                                }
                                HandoffItem r = old.relay.preCopy("relay", old.server::taskRef, maxFds);
                                if (r != null) {
                                    l.add(r);
                                }
                                return l;
                            });
                            if (chunk.isEmpty()) { // all copied: pair 0 moves one byte (a to b) after its copy
                                jnr.ffi.Pointer buf = Native.allocate(1);
                                buf.putByte(0, (byte) 7);
                                assertEquals(1, Native.write(ends.get(0).get(), buf, 1));
                                assertEquals(1, Native.read(ends.get(1).get(), buf, 1));
                            }
                            return chunk;
                        }

                        @Override
                        public List<HandoffItem> pause() throws Exception {
                            return old.on(() -> {
                                old.server.pauseForHandoff();
                                old.relay.pause();
                                List<HandoffItem> items = List.of(old.server.export("control"),
                                        old.relay.export("relay", old.server::callRef));
                                work.oldCalls = old.server.pauseVisits();
                                work.oldPairs = old.relay.pauseVisits();
                                return items;
                            });
                        }

                        @Override
                        public void resume() {
                            throw new AssertionError("must not resume");
                        }
                    }, 120_000);
                    old.on(() -> {
                        old.relay.abandon();
                        old.server.abandonAfterHandoff();
                        return null;
                    });
                    successor.get(120, TimeUnit.SECONDS);
                    work.preCopiedFds = report.preCopiedFds();
                }
                // the successor relays: pair 0 moves a byte b to a, and every task is there
                next.on(() -> {
                    next.relay.resume();
                    next.server.start();
                    return null;
                });
                jnr.ffi.Pointer buf = Native.allocate(1);
                buf.putByte(0, (byte) 9);
                assertEquals(1, Native.write(ends.get(1).get(), buf, 1));
                assertEquals(1, Native.read(ends.get(0).get(), buf, 1));
                assertEquals(9, buf.getByte(0));
                assertEquals(n, (int) next.on(() -> next.tasks.active()));
                next.on(() -> { // no answers: the pairs' copies closed as after a handoff
                    next.relay.abandon();
                    next.server.abandonAfterHandoff();
                    return null;
                });
                assertTrue(old.lt.errors.isEmpty() && next.lt.errors.isEmpty(), old.lt.errors + " " + next.lt.errors);
                return new Work(work.oldCalls, work.oldPairs, work.newCalls, work.newPairs, work.deltaCalls,
                        work.deltaPairs, work.pauseFds, work.attached, work.preCopiedFds);
            }
        } finally {
            Fd.closeAll(ends);
        }
    }

    /** Filled in by the loops' threads, read after the handoff. */
    private static final class AtomicWork {
        volatile long oldCalls;
        volatile long oldPairs;
        volatile long newCalls;
        volatile long newPairs;
        volatile int deltaCalls;
        volatile int deltaPairs;
        volatile int pauseFds;
        volatile int attached;
        volatile long preCopiedFds;
    }
}
