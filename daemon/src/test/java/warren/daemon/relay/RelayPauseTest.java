package warren.daemon.relay;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import warren.control.v1.EndReason;
import warren.control.v1.Spliced;
import warren.daemon.loop.EventLoop;
import warren.daemon.metrics.Counters;
import warren.daemon.testing.LoopThread;
import warren.daemon.testing.Streams;
import warren.fdpass.Fd;
import warren.fdpass.FdCount;
import warren.fdpass.libc.Native;

/**
 * Pausing the relay (the first step of an upgrade handoff) stops every byte, holds what is in the
 * pipes, and resuming carries on with nothing lost or duplicated: 20 pairs stream 4 MiB each
 * through a pause, checked by SHA-256 at the far end, then end with BOTH_EOF and exact counts.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class RelayPauseTest {
    private static final int PAIRS = 20;
    private static final int BYTES = 4 << 20;

    @Test
    void pausedPairsMoveNothingAndResumeLosslessly() throws Exception {
        java.util.Set<String> before = FdCount.snapshot();
        LoopThread lt = new LoopThread("relay-loop", 256);
        ConcurrentLinkedQueue<Throwable> errors = lt.errors;
        EventLoop loop = lt.loop;
        Relay relay = new Relay(loop, new Counters(), new Relay.Settings(64 * 1024, 4, 64));
        List<Fd> clients = new ArrayList<>(); // c1 (writes into a), c2 (reads what comes out of b)
        ConcurrentLinkedQueue<Spliced> ended = new ConcurrentLinkedQueue<>();
        List<Pair> pairs = new ArrayList<>();
        try {
            for (int i = 0; i < PAIRS; i++) {
                int[] x = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                int[] y = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                clients.add(Fd.adopt(x[0]));
                clients.add(Fd.adopt(y[1]));
                Fd a = Fd.adopt(x[1]);
                Fd b = Fd.adopt(y[0]);
                pairs.add(lt.on(() -> relay.start(null, a, b, 0, 0, 0, (call, fa, fb, counts, audit) -> {
                    fa.close();
                    fb.close();
                    ended.add(counts);
                }, null)));
            }
            byte[] expect = new byte[BYTES];
            new java.util.Random(7).nextBytes(expect);
            byte[] want = Streams.sha256(expect);
            List<CompletableFuture<byte[]>> readers = new ArrayList<>();
            List<CompletableFuture<Void>> writers = new ArrayList<>();
            for (int i = 0; i < PAIRS; i++) {
                int c1 = clients.get(2 * i).get();
                int c2 = clients.get(2 * i + 1).get();
                writers.add(CompletableFuture.runAsync(() -> Streams.writeAll(c1, expect), pool()));
                readers.add(CompletableFuture.supplyAsync(() -> Streams.readAllSha256(c2), pool()));
            }
            Thread.sleep(20);
            assertEquals(PAIRS, (int) lt.on(relay::pause));
            long[] frozen = lt.on(() -> totals(pairs));
            long moved = 0;
            for (int i = 0; i < frozen.length; i += 2) {
                moved += frozen[i];
            }
            System.out.printf("paused with %d of %d bytes read by the relay%n", moved, (long) PAIRS * BYTES);
            assertTrue(moved < (long) PAIRS * BYTES, "the pause came while data was still streaming");
            Thread.sleep(300);
            assertArrayEquals(frozen, lt.on(() -> totals(pairs)), "no byte moves while paused");
            lt.on(() -> {
                relay.resume();
                return null;
            });
            for (CompletableFuture<Void> w : writers) {
                w.get(60, TimeUnit.SECONDS);
            }
            for (int i = 0; i < PAIRS; i++) {
                Native.shutdown(clients.get(2 * i).get(), Native.SHUT_WR);
                Native.shutdown(clients.get(2 * i + 1).get(), Native.SHUT_WR);
            }
            for (CompletableFuture<byte[]> r : readers) {
                assertArrayEquals(want, r.get(60, TimeUnit.SECONDS), "same bytes, none lost or duplicated");
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (ended.size() < PAIRS && System.nanoTime() < deadline) {
                Thread.sleep(10);
            }
            assertEquals(PAIRS, ended.size());
            for (Spliced s : ended) {
                assertEquals(EndReason.BOTH_EOF, s.getReason());
                assertEquals(BYTES, s.getBytesAToB());
                assertEquals(0, s.getBytesBToA());
            }
            assertTrue(errors.isEmpty(), errors.toString());
        } finally {
            Fd.closeAll(clients);
            lt.stop();
            relay.close();
            loop.close();
        }
        assertEquals(java.util.Set.of(), FdCount.openedSince(before), "fds left open");
    }

    @Test
    void livePairsMoveToAnotherRelayMidStreamWithTheirPipesAndCounts() throws Exception {
        java.util.Set<String> before = FdCount.snapshot();
        LoopThread ltA = new LoopThread("old-relay-loop", 256);
        LoopThread ltB = new LoopThread("new-relay-loop", 256);
        EventLoop loopA = ltA.loop;
        EventLoop loopB = ltB.loop;
        Relay oldRelay = new Relay(loopA, new Counters(), new Relay.Settings(64 * 1024, 4, 64));
        Relay newRelay = new Relay(loopB, new Counters(), new Relay.Settings(64 * 1024, 4, 64));
        List<Fd> clients = new ArrayList<>();
        ConcurrentLinkedQueue<Spliced> ended = new ConcurrentLinkedQueue<>();
        ConcurrentLinkedQueue<Spliced> endedOld = new ConcurrentLinkedQueue<>();
        try {
            for (int i = 0; i < PAIRS; i++) {
                int[] x = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                int[] y = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                clients.add(Fd.adopt(x[0]));
                clients.add(Fd.adopt(y[1]));
                Fd a = Fd.adopt(x[1]);
                Fd b = Fd.adopt(y[0]);
                ltA.on(() -> oldRelay.start(null, a, b, 60_000, 0, 0, (call, fa, fb, counts, audit) -> {
                    fa.close();
                    fb.close();
                    endedOld.add(counts);
                }, null));
            }
            byte[] expect = new byte[BYTES];
            new java.util.Random(11).nextBytes(expect);
            byte[] want = Streams.sha256(expect);
            List<CompletableFuture<byte[]>> readers = new ArrayList<>();
            List<CompletableFuture<Void>> writers = new ArrayList<>();
            for (int i = 0; i < PAIRS; i++) {
                int c1 = clients.get(2 * i).get();
                int c2 = clients.get(2 * i + 1).get();
                writers.add(CompletableFuture.runAsync(() -> Streams.writeAll(c1, expect), pool()));
            }
            Thread.sleep(100); // nobody reads yet: b's buffers fill and bytes wait in the pipes
            warren.fdpass.SeqpacketSocket[] link = warren.fdpass.SeqpacketSocket.pair();
            long[] inPipes = new long[1];
            try (warren.fdpass.SeqpacketSocket oldSide = link[0]; warren.fdpass.SeqpacketSocket newSide = link[1]) {
                ltB.on(newRelay::pause); // adopted pairs wait for the commit
                CompletableFuture<warren.daemon.handoff.HandoffReceiver.Taken> successor = CompletableFuture.supplyAsync(() -> {
                    try {
                        return warren.daemon.handoff.HandoffReceiver.receive(newSide, "splicer", List.of(1), (v, items) -> {
                            warren.daemon.handoff.HandoffItem it = items.get(0);
                            warren.handoff.v1.RelayState st = warren.handoff.v1.RelayState.parseFrom(it.payload());
                            for (warren.handoff.v1.RelayPair rp : st.getPairsList()) {
                                inPipes[0] += rp.getDirections(0).getRead() - rp.getDirections(0).getWritten();
                            }
                            ltB.on(() -> newRelay.adopt(st, it.fds(), ref -> null,
                                    (call, fa, fb, counts, audit) -> {
                                        fa.close();
                                        fb.close();
                                        ended.add(counts);
                                    }));
                        }, 20_000);
                    } catch (warren.daemon.handoff.HandoffException e) {
                        throw new java.util.concurrent.CompletionException(e);
                    }
                });
                warren.daemon.handoff.HandoffSender.Report r = warren.daemon.handoff.HandoffSender.hand(oldSide, "splicer",
                        new warren.daemon.handoff.HandoffSender.Source() {
                            @Override
                            public int stateVersion() {
                                return 1;
                            }

                            @Override
                            public List<warren.daemon.handoff.HandoffItem> pause() throws Exception {
                                return ltA.on(() -> {
                                    oldRelay.pause();
                                    return List.of(oldRelay.export("relay", call -> 0));
                                });
                            }

                            @Override
                            public void resume() {
                                throw new AssertionError("must not resume");
                            }
                        }, 20_000);
                assertEquals(PAIRS, (int) ltA.on(oldRelay::abandon));
                successor.get(30, TimeUnit.SECONDS);
                ltB.on(() -> {
                    newRelay.resume();
                    return null;
                });
                System.out.printf("handed %d pairs (%d fds, %d bytes in pipes) in %.1f ms%n", PAIRS, r.fds(),
                        inPipes[0], r.pausedNanos() / 1e6);
                assertTrue(inPipes[0] > 0, "bytes were in flight inside pipes at the handoff");
                assertTrue(r.fds() > 2 * PAIRS, "pipes travelled with their pairs");
            }
            for (int i = 0; i < PAIRS; i++) {
                int c2 = clients.get(2 * i + 1).get();
                readers.add(CompletableFuture.supplyAsync(() -> Streams.readAllSha256(c2), pool()));
            }
            for (CompletableFuture<Void> w : writers) {
                w.get(60, TimeUnit.SECONDS);
            }
            for (int i = 0; i < PAIRS; i++) {
                Native.shutdown(clients.get(2 * i).get(), Native.SHUT_WR);
                Native.shutdown(clients.get(2 * i + 1).get(), Native.SHUT_WR);
            }
            for (CompletableFuture<byte[]> r : readers) {
                assertArrayEquals(want, r.get(60, TimeUnit.SECONDS), "same bytes, none lost or duplicated");
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (ended.size() < PAIRS && System.nanoTime() < deadline) {
                Thread.sleep(10);
            }
            assertEquals(PAIRS, ended.size());
            assertEquals(0, endedOld.size(), "the old relay answers nothing for pairs it handed on");
            for (Spliced s : ended) {
                assertEquals(EndReason.BOTH_EOF, s.getReason());
                assertEquals(BYTES, s.getBytesAToB(), "counts carry over from the old relay");
            }
            assertTrue(ltA.errors.isEmpty() && ltB.errors.isEmpty(), ltA.errors + " " + ltB.errors);
        } finally {
            Fd.closeAll(clients);
            ltA.stop();
            ltB.stop();
            oldRelay.close();
            newRelay.close();
            loopA.close();
            loopB.close();
        }
        assertEquals(java.util.Set.of(), FdCount.openedSince(before), "fds left open");
    }

    /** A test pair: its relay-side sockets started on {@code lt}'s relay; c1 writes into a, c2 reads b's output. */
    private static Pair startPair(LoopThread lt, Relay relay, List<Fd> clients, ConcurrentLinkedQueue<Spliced> ended)
            throws Exception {
        int[] x = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
        int[] y = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
        clients.add(Fd.adopt(x[0]));
        clients.add(Fd.adopt(y[1]));
        Fd a = Fd.adopt(x[1]);
        Fd b = Fd.adopt(y[0]);
        return lt.on(() -> relay.start(null, a, b, 60_000, 0, 0, (call, fa, fb, counts, audit) -> {
            fa.close();
            fb.close();
            ended.add(counts);
        }, null));
    }

    private static Relay.Ending collect(ConcurrentLinkedQueue<Spliced> ended) {
        return (call, fa, fb, counts, audit) -> {
            fa.close();
            fb.close();
            ended.add(counts);
        };
    }

    /**
     * The pre-copy (handoff protocol 2) between two relays on two loops: pairs are copied in small
     * chunks while the old relay streams on; during the copy 6 copied pairs end and 4 new pairs
     * start (copied by later chunks), and 3 more start just before the pause (sent whole). The
     * pause then carries only the delta: the 6 ended keys (the successor closes its copies), the
     * 3 new pairs, and updates for the copied pairs that moved, with the pipes holding bytes. Every
     * stream arrives SHA-256-identical, the counts carry on, no fd is left open on either side.
     */
    @Test
    void preCopiedPairsMoveWithWhatStartedEndedAndChangedDuringTheCopy() throws Exception {
        java.util.Set<String> before = FdCount.snapshot();
        LoopThread ltA = new LoopThread("old-precopy-loop", 256);
        LoopThread ltB = new LoopThread("new-precopy-loop", 256);
        Relay oldRelay = new Relay(ltA.loop, new Counters(), new Relay.Settings(64 * 1024, 4, 256));
        Relay newRelay = new Relay(ltB.loop, new Counters(), new Relay.Settings(64 * 1024, 4, 256));
        List<Fd> ending = new ArrayList<>();   // 6 pairs that end during the copy
        List<Fd> streaming = new ArrayList<>(); // pairs that stream across the handoff
        ConcurrentLinkedQueue<Spliced> endedOld = new ConcurrentLinkedQueue<>();
        ConcurrentLinkedQueue<Spliced> ended = new ConcurrentLinkedQueue<>();
        byte[] expect = new byte[1 << 20];
        new java.util.Random(13).nextBytes(expect);
        byte[] want = Streams.sha256(expect);
        List<CompletableFuture<Void>> writers = new ArrayList<>();
        int[] delta = new int[5]; // ended keys, whole pairs, updates, bytes in the delta's pipes, pipes
        try {
            for (int i = 0; i < 6; i++) { // first: copied by the first chunks
                startPair(ltA, oldRelay, ending, endedOld);
            }
            for (int i = 0; i < PAIRS; i++) {
                startPair(ltA, oldRelay, streaming, endedOld);
                int c1 = streaming.get(streaming.size() - 2).get();
                writers.add(CompletableFuture.runAsync(() -> Streams.writeAll(c1, expect), pool())); // nobody reads yet
            }
            ltB.on(newRelay::pause);
            int[] calls = new int[1];
            warren.daemon.handoff.HandoffSender.Source source = new warren.daemon.handoff.HandoffSender.Source() {
                @Override
                public int stateVersion() {
                    return 1;
                }

                @Override
                public List<warren.daemon.handoff.HandoffItem> preCopy(int maxFds) throws Exception {
                    if (++calls[0] == 3) { // the 6 ending pairs are copied by now: they end, 4 pairs start
                        for (int i = 0; i < ending.size(); i++) {
                            Native.shutdown(ending.get(i).get(), Native.SHUT_WR);
                        }
                        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
                        while (endedOld.size() < 6 && System.nanoTime() < deadline) {
                            Thread.sleep(5);
                        }
                        assertEquals(6, endedOld.size(), "the 6 pairs ended during the copy");
                        for (int i = 0; i < 4; i++) {
                            startPair(ltA, oldRelay, streaming, endedOld);
                            int c1 = streaming.get(streaming.size() - 2).get();
                            writers.add(CompletableFuture.runAsync(() -> Streams.writeAll(c1, expect), pool()));
                        }
                    }
                    warren.daemon.handoff.HandoffItem it = ltA.on(() -> oldRelay.preCopy("relay", c -> 0, 8));
                    return it == null ? List.of() : List.of(it);
                }

                @Override
                public List<warren.daemon.handoff.HandoffItem> pause() throws Exception {
                    for (int i = 0; i < 3; i++) { // begun after the last chunk: sent whole
                        startPair(ltA, oldRelay, streaming, endedOld);
                        int c1 = streaming.get(streaming.size() - 2).get();
                        writers.add(CompletableFuture.runAsync(() -> Streams.writeAll(c1, expect), pool()));
                    }
                    return ltA.on(() -> {
                        oldRelay.pause();
                        return List.of(oldRelay.export("relay", c -> 0));
                    });
                }

                @Override
                public void resume() {
                    throw new AssertionError("must not resume");
                }
            };
            warren.daemon.handoff.HandoffSender.Report r;
            warren.fdpass.SeqpacketSocket[] link = warren.fdpass.SeqpacketSocket.pair();
            try (warren.fdpass.SeqpacketSocket oldSide = link[0]; warren.fdpass.SeqpacketSocket newSide = link[1]) {
                CompletableFuture<warren.daemon.handoff.HandoffReceiver.Taken> successor = CompletableFuture.supplyAsync(() -> {
                    try {
                        return warren.daemon.handoff.HandoffReceiver.receive(newSide, "splicer", List.of(1),
                                new warren.daemon.handoff.HandoffReceiver.Preparer() {
                                    @Override
                                    public void preCopy(int v, List<warren.daemon.handoff.HandoffItem> items) throws Exception {
                                        warren.daemon.handoff.HandoffItem it = items.get(0);
                                        warren.handoff.v1.RelayState st = warren.handoff.v1.RelayState.parseFrom(it.payload());
                                        ltB.on(() -> newRelay.preAdopt(st, it.fds()));
                                    }

                                    @Override
                                    public void prepare(int v, List<warren.daemon.handoff.HandoffItem> items) throws Exception {
                                        warren.daemon.handoff.HandoffItem it = items.get(0);
                                        warren.handoff.v1.RelayState st = warren.handoff.v1.RelayState.parseFrom(it.payload());
                                        delta[0] = st.getEndedCount();
                                        for (warren.handoff.v1.RelayPair rp : st.getPairsList()) {
                                            delta[rp.getUpdate() ? 2 : 1]++;
                                            for (warren.handoff.v1.RelayDirection d : rp.getDirectionsList()) {
                                                delta[3] += (int) (d.getRead() - d.getWritten());
                                                delta[4] += d.getHasPipe() ? 1 : 0;
                                            }
                                        }
                                        ltB.on(() -> {
                                            newRelay.adopt(st, it.fds(), ref -> null, collect(ended));
                                            return newRelay.adoptCopies(ref -> null, collect(ended));
                                        });
                                    }

                                    @Override
                                    public void discard() {
                                        try {
                                            ltB.on(newRelay::abandon);
                                        } catch (Exception e) {
                                            throw new IllegalStateException(e);
                                        }
                                    }
                                }, 20_000);
                    } catch (warren.daemon.handoff.HandoffException e) {
                        throw new java.util.concurrent.CompletionException(e);
                    }
                });
                r = warren.daemon.handoff.HandoffSender.hand(oldSide, "splicer", source, 20_000);
                int total = PAIRS + 4 + 3;
                assertEquals(total, (int) ltA.on(oldRelay::abandon));
                successor.get(30, TimeUnit.SECONDS);
                ltB.on(() -> {
                    newRelay.resume();
                    return null;
                });
                assertEquals(total, (int) ltB.on(newRelay::active));
            }
            System.out.printf("pre-copy: %s; delta: %d ended, %d whole, %d updates, %d bytes in pipes, %d fds%n",
                    r.timings(), delta[0], delta[1], delta[2], delta[3], r.fds());
            assertEquals(6, delta[0], "the pairs that ended during the copy are named by key");
            assertEquals(3, delta[1], "the pairs begun after the last chunk go whole");
            assertTrue(delta[2] > 0 && delta[3] > 0, "copied pairs that moved are updated, bytes in pipes travel");
            assertEquals(2 * delta[1] + 2 * delta[4], r.fds(), "the pause sent the new pairs' sockets and pipes with"
                    + " bytes, no socket of a pre-copied pair");
            assertEquals(2 * (PAIRS + 10), r.preCopiedFds(), "every pair begun before the last chunk was pre-copied");
            List<CompletableFuture<byte[]>> readers = new ArrayList<>();
            for (int i = 1; i < streaming.size(); i += 2) {
                int c2 = streaming.get(i).get();
                readers.add(CompletableFuture.supplyAsync(() -> Streams.readAllSha256(c2), pool()));
            }
            for (CompletableFuture<Void> w : writers) {
                w.get(60, TimeUnit.SECONDS);
            }
            for (int i = 0; i < streaming.size(); i++) {
                Native.shutdown(streaming.get(i).get(), Native.SHUT_WR);
            }
            for (CompletableFuture<byte[]> rd : readers) {
                assertArrayEquals(want, rd.get(60, TimeUnit.SECONDS), "same bytes, none lost or duplicated");
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (ended.size() < PAIRS + 7 && System.nanoTime() < deadline) {
                Thread.sleep(10);
            }
            assertEquals(PAIRS + 7, ended.size());
            assertEquals(6, endedOld.size(), "the old relay answered only the pairs that ended before the pause");
            for (Spliced sp : ended) {
                assertEquals(EndReason.BOTH_EOF, sp.getReason());
                assertEquals(expect.length, sp.getBytesAToB(), "counts carry over from the old relay");
            }
            assertTrue(ltA.errors.isEmpty() && ltB.errors.isEmpty(), ltA.errors + " " + ltB.errors);
        } finally {
            Fd.closeAll(ending);
            Fd.closeAll(streaming);
            ltA.stop();
            ltB.stop();
            oldRelay.close();
            newRelay.close();
            ltA.loop.close();
            ltB.loop.close();
        }
        assertEquals(java.util.Set.of(), FdCount.openedSince(before), "fds left open");
    }

    /**
     * A successor that refuses the delta after a whole pre-copy: it closes every copy it built, the
     * old relay resumes and forgets the copy, and its streams finish through it byte for byte.
     */
    @Test
    void aRefusalAfterThePreCopyLeavesTheOldRelayServingAndTheSuccessorWithNothing() throws Exception {
        java.util.Set<String> before = FdCount.snapshot();
        LoopThread ltA = new LoopThread("old-refused-loop", 256);
        LoopThread ltB = new LoopThread("new-refused-loop", 256);
        Relay oldRelay = new Relay(ltA.loop, new Counters(), new Relay.Settings(64 * 1024, 4, 256));
        Relay newRelay = new Relay(ltB.loop, new Counters(), new Relay.Settings(64 * 1024, 4, 256));
        List<Fd> streaming = new ArrayList<>();
        ConcurrentLinkedQueue<Spliced> endedOld = new ConcurrentLinkedQueue<>();
        byte[] expect = new byte[1 << 20];
        new java.util.Random(17).nextBytes(expect);
        byte[] want = Streams.sha256(expect);
        List<CompletableFuture<Void>> writers = new ArrayList<>();
        try {
            for (int i = 0; i < PAIRS; i++) {
                startPair(ltA, oldRelay, streaming, endedOld);
                int c1 = streaming.get(streaming.size() - 2).get();
                writers.add(CompletableFuture.runAsync(() -> Streams.writeAll(c1, expect), pool()));
            }
            ltB.on(newRelay::pause);
            int[] adoptedCopies = new int[1];
            warren.fdpass.SeqpacketSocket[] link = warren.fdpass.SeqpacketSocket.pair();
            try (warren.fdpass.SeqpacketSocket oldSide = link[0]; warren.fdpass.SeqpacketSocket newSide = link[1]) {
                CompletableFuture<warren.daemon.handoff.HandoffReceiver.Taken> successor = CompletableFuture.supplyAsync(() -> {
                    try {
                        return warren.daemon.handoff.HandoffReceiver.receive(newSide, "splicer", List.of(1),
                                new warren.daemon.handoff.HandoffReceiver.Preparer() {
                                    @Override
                                    public void preCopy(int v, List<warren.daemon.handoff.HandoffItem> items) throws Exception {
                                        warren.daemon.handoff.HandoffItem it = items.get(0);
                                        warren.handoff.v1.RelayState st = warren.handoff.v1.RelayState.parseFrom(it.payload());
                                        adoptedCopies[0] += ltB.on(() -> newRelay.preAdopt(st, it.fds()));
                                    }

                                    @Override
                                    public void prepare(int v, List<warren.daemon.handoff.HandoffItem> items) {
                                        throw new IllegalArgumentException("refusing the delta");
                                    }

                                    @Override
                                    public void discard() {
                                        try {
                                            ltB.on(newRelay::abandon);
                                        } catch (Exception e) {
                                            throw new IllegalStateException(e);
                                        }
                                    }
                                }, 20_000);
                    } catch (warren.daemon.handoff.HandoffException e) {
                        throw new java.util.concurrent.CompletionException(e);
                    }
                });
                warren.daemon.handoff.HandoffException e = org.junit.jupiter.api.Assertions.assertThrows(
                        warren.daemon.handoff.HandoffException.class, () -> warren.daemon.handoff.HandoffSender.hand(
                                oldSide, "splicer", new warren.daemon.handoff.HandoffSender.Source() {
                                    @Override
                                    public int stateVersion() {
                                        return 1;
                                    }

                                    @Override
                                    public List<warren.daemon.handoff.HandoffItem> preCopy(int maxFds) throws Exception {
                                        warren.daemon.handoff.HandoffItem it = ltA.on(() -> oldRelay.preCopy("relay", c -> 0, 16));
                                        return it == null ? List.of() : List.of(it);
                                    }

                                    @Override
                                    public List<warren.daemon.handoff.HandoffItem> pause() throws Exception {
                                        return ltA.on(() -> {
                                            oldRelay.pause();
                                            return List.of(oldRelay.export("relay", c -> 0));
                                        });
                                    }

                                    @Override
                                    public void resume() {
                                        try {
                                            ltA.on(() -> {
                                                oldRelay.resume();
                                                return null;
                                            });
                                        } catch (Exception x) {
                                            throw new IllegalStateException(x);
                                        }
                                    }
                                }, 20_000));
                assertEquals(warren.daemon.handoff.HandoffException.Reason.REFUSED, e.reason(), e.getMessage());
                org.junit.jupiter.api.Assertions.assertThrows(java.util.concurrent.ExecutionException.class,
                        () -> successor.get(30, TimeUnit.SECONDS));
            }
            assertEquals(PAIRS, adoptedCopies[0], "every pair was pre-copied before the refusal");
            assertEquals(0, (int) ltB.on(newRelay::active), "the successor closed every copy");
            assertEquals(0, (int) ltA.on(oldRelay::copied), "the old relay forgot the copy");
            List<CompletableFuture<byte[]>> readers = new ArrayList<>();
            for (int i = 1; i < streaming.size(); i += 2) {
                int c2 = streaming.get(i).get();
                readers.add(CompletableFuture.supplyAsync(() -> Streams.readAllSha256(c2), pool()));
            }
            for (CompletableFuture<Void> w : writers) {
                w.get(60, TimeUnit.SECONDS);
            }
            for (int i = 0; i < streaming.size(); i++) {
                Native.shutdown(streaming.get(i).get(), Native.SHUT_WR);
            }
            for (CompletableFuture<byte[]> rd : readers) {
                assertArrayEquals(want, rd.get(60, TimeUnit.SECONDS), "the old relay carried on byte for byte");
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (endedOld.size() < PAIRS && System.nanoTime() < deadline) {
                Thread.sleep(10);
            }
            assertEquals(PAIRS, endedOld.size());
            for (Spliced sp : endedOld) {
                assertEquals(EndReason.BOTH_EOF, sp.getReason());
                assertEquals(expect.length, sp.getBytesAToB());
            }
            assertTrue(ltA.errors.isEmpty() && ltB.errors.isEmpty(), ltA.errors + " " + ltB.errors);
        } finally {
            Fd.closeAll(streaming);
            ltA.stop();
            ltB.stop();
            oldRelay.close();
            newRelay.close();
            ltA.loop.close();
            ltB.loop.close();
        }
        assertEquals(java.util.Set.of(), FdCount.openedSince(before), "fds left open");
    }

    @Test
    void aPauseDoesNotCountAsIdle() throws Exception {
        LoopThread lt = new LoopThread("relay-idle-loop", 64);
        Relay relay = new Relay(lt.loop, new Counters(), new Relay.Settings(64 * 1024, 4, 64));
        ConcurrentLinkedQueue<Spliced> ended = new ConcurrentLinkedQueue<>();
        List<Fd> clients = new ArrayList<>();
        try {
            int[] x = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
            int[] y = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
            clients.add(Fd.adopt(x[0]));
            clients.add(Fd.adopt(y[1]));
            Fd a = Fd.adopt(x[1]);
            Fd b = Fd.adopt(y[0]);
            long idleMs = 300;
            lt.on(() -> relay.start(null, a, b, idleMs, 0, 0, (call, fa, fb, counts, audit) -> {
                fa.close();
                fb.close();
                ended.add(counts);
            }, null));
            lt.on(relay::pause);
            Thread.sleep(2 * idleMs); // the pause outlasts the idle timeout: its timer comes due, held
            lt.on(() -> {
                relay.resume();
                return null;
            });
            lt.on(() -> null); // the held timer has fired by now (the cycle after the resume)
            assertTrue(ended.isEmpty(), "a pause longer than the idle timeout ended the pair: " + ended);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (ended.isEmpty() && System.nanoTime() < deadline) {
                Thread.sleep(10);
            }
            assertEquals(EndReason.IDLE_TIMEOUT, ended.peek().getReason(), "idle after the resume: it ends then");
            assertTrue(lt.errors.isEmpty(), lt.errors.toString());
        } finally {
            Fd.closeAll(clients);
            lt.stop();
            relay.close();
            lt.loop.close();
        }
    }

    @Test
    void aMalformedRelayStateIsRefusedBeforeAnyFdIsTaken() throws Exception {
        EventLoop loop = new EventLoop(16, t -> { });
        Relay relay = new Relay(loop, new Counters(), new Relay.Settings(64 * 1024, 4, 64));
        int[] x = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
        List<Fd> fds = List.of(Fd.adopt(x[0]), Fd.adopt(x[1]));
        try {
            warren.handoff.v1.RelayDirection idle = warren.handoff.v1.RelayDirection.newBuilder().setRead(5)
                    .setWritten(5).build();
            warren.handoff.v1.RelayPair good = warren.handoff.v1.RelayPair.newBuilder().setFdA(0).setFdB(1)
                    .addDirections(idle).addDirections(idle).build();
            List<warren.handoff.v1.RelayPair> bad = List.of(
                    good.toBuilder().setFdB(0).build(),                                  // fd used twice
                    good.toBuilder().setFdB(7).build(),                                  // out of range
                    good.toBuilder().clearDirections().addDirections(idle).build(),      // one direction
                    good.toBuilder().setDirections(0, idle.toBuilder().setRead(9)).build(), // bytes, no pipe
                    good.toBuilder().setDirections(1, idle.toBuilder().setRead(1)).build()); // wrote > read
            for (warren.handoff.v1.RelayPair rp : bad) {
                warren.handoff.v1.RelayState st = warren.handoff.v1.RelayState.newBuilder().setFormat(1).addPairs(rp)
                        .build();
                org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                        () -> relay.adopt(st, fds, ref -> null, Relay.HAND_BACK), rp.toString());
                assertTrue(fds.get(0).isOpen() && fds.get(1).isOpen(), "nothing taken from a refused state");
            }
            // formats 1 and 2 (pairs that name fd store slots) are read; another is not
            org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                    () -> relay.adopt(warren.handoff.v1.RelayState.newBuilder().setFormat(3).build(), fds, ref -> null,
                            Relay.HAND_BACK));
        } finally {
            Fd.closeAll(fds);
            relay.close();
            loop.close();
        }
    }

    private static java.util.concurrent.ExecutorService pool;

    private static synchronized java.util.concurrent.ExecutorService pool() {
        if (pool == null) {
            pool = java.util.concurrent.Executors.newCachedThreadPool(r -> {
                Thread t = new Thread(r, "relay-pause-io");
                t.setDaemon(true);
                return t;
            });
        }
        return pool;
    }

    private static long[] totals(List<Pair> pairs) {
        long[] t = new long[pairs.size() * 2];
        for (int i = 0; i < pairs.size(); i++) {
            t[2 * i] = pairs.get(i).read[0];
            t[2 * i + 1] = pairs.get(i).written[0];
        }
        return t;
    }
}
