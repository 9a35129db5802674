package warren.daemon.handoff;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import warren.fdpass.Fd;
import warren.fdpass.FdCount;
import warren.fdpass.Received;
import warren.fdpass.SeqpacketSocket;
import warren.fdpass.libc.Native;
import warren.handoff.v1.HandoffMessage;
import warren.handoff.v1.Hello;

/**
 * The handoff protocol end to end over a real socketpair, the old and the new side on two threads:
 * thousands of live sockets cross in 253-fd batches and still work afterwards, and every way of
 * failing before commit leaves the old side resumed, the new side empty, and no fd leaked.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class HandoffTest {
    private static final long T = 10_000;

    /** A source of n live stream socketpairs: item "pairs" holds the a-ends, "peers" the b-ends. */
    private static final class PairsSource implements HandoffSender.Source {
        final List<Fd> a = new ArrayList<>();
        final List<Fd> b = new ArrayList<>();
        final AtomicInteger paused = new AtomicInteger();
        final AtomicInteger resumed = new AtomicInteger();
        final AtomicInteger preCopyAborted = new AtomicInteger();
        final int version;
        /** Pre-copy: duplicates of the a-ends, in chunks (false: nothing pre-copied). */
        boolean preCopies;
        /** Pre-copy: copies "pre.pairs" whatever the successor takes (a source with a bug). */
        boolean ignoresTakes;
        final AtomicInteger preCopyAsked = new AtomicInteger();
        private int copied;

        PairsSource(int n, int version) throws Exception {
            this.version = version;
            for (int i = 0; i < n; i++) {
                int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                a.add(Fd.adopt(sv[0]));
                b.add(Fd.adopt(sv[1]));
            }
        }

        @Override
        public int stateVersion() {
            return version;
        }

        @Override
        public List<HandoffItem> pause() {
            paused.incrementAndGet();
            return List.of(new HandoffItem("pairs", ("count=" + a.size()).getBytes(StandardCharsets.UTF_8), a),
                    new HandoffItem("nothing", new byte[0], List.of()),
                    new HandoffItem("peers", new byte[] {7}, b));
        }

        @Override
        public void resume() {
            resumed.incrementAndGet();
        }

        @Override
        public List<HandoffItem> preCopy(int maxFds) throws Exception {
            List<Fd> dups = new ArrayList<>();
            while (preCopies && copied < a.size() && dups.size() < maxFds) {
                dups.add(Fd.adopt(Native.fcntl(a.get(copied++).get(), Native.F_DUPFD_CLOEXEC, 0)));
            }
            return dups.isEmpty() ? List.of() : List.of(new HandoffItem("pre.pairs", new byte[] {1}, dups));
        }

        @Override
        public List<HandoffItem> preCopy(int maxFds, java.util.function.Predicate<String> takes) throws Exception {
            preCopyAsked.incrementAndGet();
            return ignoresTakes || takes.test("pre.pairs") ? preCopy(maxFds) : List.of();
        }

        @Override
        public void preCopyAborted() {
            preCopyAborted.incrementAndGet();
        }

        void close() {
            Fd.closeAll(a);
            Fd.closeAll(b);
        }
    }

    private static CompletableFuture<HandoffReceiver.Taken> successor(SeqpacketSocket s, List<Integer> accepts,
            HandoffReceiver.Preparer preparer, long timeoutMs) {
        return CompletableFuture.supplyAsync(() -> {
            try {
                return HandoffReceiver.receive(s, "splicer", accepts, preparer, timeoutMs);
            } catch (HandoffException e) {
                throw new java.util.concurrent.CompletionException(e);
            }
        });
    }

    private static HandoffException cause(CompletableFuture<?> f) {
        ExecutionException e = assertThrows(ExecutionException.class, () -> f.get(30, TimeUnit.SECONDS));
        assertTrue(e.getCause() instanceof HandoffException, String.valueOf(e.getCause()));
        return (HandoffException) e.getCause();
    }

    @Test
    void fourThousandLiveSocketsCrossInBatchesAndStillWork() throws Exception {
        int before = FdCount.now();
        SeqpacketSocket[] p = SeqpacketSocket.pair();
        PairsSource src = new PairsSource(2000, 1);
        HandoffReceiver.Taken taken;
        try (SeqpacketSocket oldSide = p[0]; SeqpacketSocket newSide = p[1]) {
            var f = successor(newSide, List.of(1, 2), (v, items) -> {
                if (items.size() != 3 || items.get(0).fds().size() != 2000) {
                    throw new IllegalStateException("bad items");
                }
            }, T);
            HandoffSender.Report r = HandoffSender.hand(oldSide, "splicer", src, T);
            taken = f.get(30, TimeUnit.SECONDS);
            System.out.printf("handed off %d items, %d fds, %d state bytes; paused %.1f ms%n", r.items(), r.fds(),
                    r.stateBytes(), r.pausedNanos() / 1e6);
            assertEquals(4000, r.fds());
            assertEquals(3, r.items());
            assertEquals(0, src.resumed.get());
        }
        src.close(); // the old process exits: its copies go, the sockets live on in the successor
        assertTrue(taken.committed());
        assertEquals(1, taken.stateVersion());
        assertEquals("count=2000", new String(taken.items().get(0).payload(), StandardCharsets.UTF_8));
        assertEquals(List.of(), taken.items().get(1).fds());
        List<Fd> a = taken.items().get(0).fds();
        List<Fd> b = taken.items().get(2).fds();
        Pointer buf = Native.allocate(8);
        for (int i = 0; i < a.size(); i++) {
            buf.putInt(0, i);
            assertEquals(4, Native.write(a.get(i).get(), buf, 4));
            buf.putInt(0, -1);
            assertEquals(4, Native.read(b.get(i).get(), buf, 4));
            assertEquals(i, buf.getInt(0), "pair " + i + " still connects the same two ends");
        }
        Fd.closeAll(a);
        Fd.closeAll(b);
        assertEquals(before, FdCount.now());
    }

    @Test
    void preCopiedChunksArriveWhileTheOldSideRunsAndTheirFdsWork() throws Exception {
        int before = FdCount.now();
        SeqpacketSocket[] p = SeqpacketSocket.pair();
        PairsSource src = new PairsSource(1500, 1);
        src.preCopies = true;
        AtomicInteger chunks = new AtomicInteger();
        HandoffReceiver.Taken taken;
        try (SeqpacketSocket oldSide = p[0]; SeqpacketSocket newSide = p[1]) {
            var f = successor(newSide, List.of(1), new HandoffReceiver.Preparer() {
                @Override
                public void preCopy(int v, List<HandoffItem> items) {
                    if (src.paused.get() != 0) {
                        throw new IllegalStateException("the old side paused before the pre-copy was done");
                    }
                    chunks.incrementAndGet();
                }

                @Override
                public void prepare(int v, List<HandoffItem> items) {}
            }, T);
            HandoffSender.Report r = HandoffSender.hand(oldSide, "splicer", src, T);
            taken = f.get(30, TimeUnit.SECONDS);
            assertEquals(2, chunks.get(), "1,500 fds in chunks of " + HandoffSender.PRE_COPY_FDS);
            assertEquals(3000, r.fds(), "the pause sent the items it was given");
            assertTrue(r.timings().contains("pre-copied 1500 fds in 2 chunks"), r.timings());
        }
        assertEquals(0, src.preCopyAborted.get());
        List<Fd> copies = new ArrayList<>();
        for (HandoffItem it : taken.preCopied()) {
            copies.addAll(it.fds());
        }
        assertEquals(1500, copies.size());
        Pointer buf = Native.allocate(8);
        for (int i = 0; i < copies.size(); i++) {
            buf.putInt(0, i);
            assertEquals(4, Native.write(copies.get(i).get(), buf, 4));
            assertEquals(4, Native.read(src.b.get(i).get(), buf, 4));
            assertEquals(i, buf.getInt(0), "pre-copied fd " + i + " is the same socket");
        }
        Fd.closeAll(copies);
        for (HandoffItem it : taken.items()) {
            Fd.closeAll(it.fds());
        }
        src.close();
        assertEquals(before, FdCount.now(), "the old side closed its chunk duplicates once sent");
    }

    @Test
    void aSuccessorThatDiesMidPreCopyLeavesTheOldOneServingAndNothingOpen() throws Exception {
        int before = FdCount.now();
        SeqpacketSocket[] p = SeqpacketSocket.pair();
        PairsSource src = new PairsSource(1500, 1);
        src.preCopies = true;
        try (SeqpacketSocket oldSide = p[0]) {
            CompletableFuture<HandoffSender.Report> old = CompletableFuture.supplyAsync(() -> {
                try {
                    return HandoffSender.hand(oldSide, "splicer", src, T);
                } catch (HandoffException e) {
                    throw new java.util.concurrent.CompletionException(e);
                }
            });
            try (SeqpacketSocket newSide = p[1]) {
                newSide.sendBlocking(hello(1), List.of(), T);
                try (Received chunk = newSide.receiveBlocking(T)) {
                    assertTrue(HandoffMessage.parseFrom(chunk.data()).hasPreCopy());
                }
                // dies here, the first chunk's fds in flight
            }
            HandoffException e = cause(old);
            assertEquals(HandoffException.Reason.CLOSED, e.reason(), e.getMessage());
        }
        assertEquals(1, src.preCopyAborted.get(), "the copy is forgotten");
        assertEquals(0, src.paused.get(), "nothing was paused: the old side served throughout");
        assertEquals(0, src.resumed.get());
        src.close();
        assertEquals(before, FdCount.now(), "the chunk's duplicates were closed");
    }

    @Test
    void aRefusedPreCopyChunkAndARefusalAfterThePreCopyCloseEveryCopy() throws Exception {
        for (boolean atPause : new boolean[] {false, true}) {
            int before = FdCount.now();
            SeqpacketSocket[] p = SeqpacketSocket.pair();
            PairsSource src = new PairsSource(1500, 1);
            src.preCopies = true;
            AtomicInteger discarded = new AtomicInteger();
            List<Fd> taken = new ArrayList<>(); // what the preparer takes over (detaches), closed by discard
            try (SeqpacketSocket oldSide = p[0]; SeqpacketSocket newSide = p[1]) {
                var f = successor(newSide, List.of(1), new HandoffReceiver.Preparer() {
                    @Override
                    public void preCopy(int v, List<HandoffItem> items) {
                        if (!atPause && !taken.isEmpty()) {
                            throw new IllegalStateException("chunk 2 names fd 4000");
                        }
                        Fd first = items.get(0).fds().get(0);
                        taken.add(Fd.adopt(first.detach())); // owned by the preparer now
                    }

                    @Override
                    public void prepare(int v, List<HandoffItem> items) {
                        throw new IllegalStateException("the delta names an unknown pair");
                    }

                    @Override
                    public void discard() {
                        discarded.incrementAndGet();
                        Fd.closeAll(taken);
                    }
                }, T);
                HandoffException e = assertThrows(HandoffException.class, () -> HandoffSender.hand(oldSide, "splicer",
                        src, T));
                assertEquals(HandoffException.Reason.REFUSED, e.reason(), e.getMessage());
                assertEquals(HandoffException.Reason.REFUSED, cause(f).reason());
            }
            assertEquals(1, discarded.get(), "what the preparer built is discarded");
            assertEquals(atPause ? 0 : 1, src.preCopyAborted.get());
            assertEquals(atPause ? 1 : 0, src.paused.get());
            assertEquals(atPause ? 1 : 0, src.resumed.get());
            src.close();
            assertEquals(before, FdCount.now(), "every pre-copied fd closed on the successor's side");
        }
    }

    @Test
    void aSuccessorSpeakingAnUnknownProtocolIsRefusedClearly() throws Exception {
        for (int protocol : new int[] {0, 3}) {
            int before = FdCount.now();
            SeqpacketSocket[] p = SeqpacketSocket.pair();
            PairsSource src = new PairsSource(3, 1);
            src.preCopies = true;
            try (SeqpacketSocket oldSide = p[0]; SeqpacketSocket newSide = p[1]) {
                newSide.sendBlocking(HandoffMessage.newBuilder().setHello(Hello.newBuilder().setProtocol(protocol)
                        .setDaemon("splicer").addAcceptsStateVersions(1).setPid(1)).build().toByteArray(), List.of(), T);
                HandoffException e = assertThrows(HandoffException.class, () -> HandoffSender.hand(oldSide, "splicer",
                        src, T));
                assertEquals(HandoffException.Reason.VERSION_REFUSED, e.reason());
                assertTrue(e.getMessage().contains("protocol " + protocol + " ")
                        && e.getMessage().contains("protocol " + Wire.PROTOCOL), e.getMessage());
                assertEquals(0, src.paused.get());
                assertEquals(0, src.preCopyAsked.get());
                drain(newSide);
            }
            src.close();
            assertEquals(before, FdCount.now());
        }
    }

    /**
     * A rollback: the successor is a build from before the pre-copy (protocol 1). It gets no
     * pre_copy message, the source is never asked for one, the offer holds every item whole, and
     * the upgrade commits; the fds it got are the live sockets.
     */
    @Test
    void aProtocolOneSuccessorGetsEverythingInTheOfferAndTheUpgradeCommits() throws Exception {
        int before = FdCount.now();
        SeqpacketSocket[] p = SeqpacketSocket.pair();
        PairsSource src = new PairsSource(600, 1);
        src.preCopies = true; // would copy, if asked
        List<String> phases = new java.util.concurrent.CopyOnWriteArrayList<>();
        warren.daemon.testing.FakeSuccessor.Got got;
        try (SeqpacketSocket oldSide = p[0]; SeqpacketSocket newSide = p[1]) {
            CompletableFuture<warren.daemon.testing.FakeSuccessor.Got> f = CompletableFuture.supplyAsync(() -> {
                try {
                    return warren.daemon.testing.FakeSuccessor.receive(newSide, "splicer", (v, items, pre) -> null, T);
                } catch (Exception e) {
                    throw new java.util.concurrent.CompletionException(e);
                }
            });
            HandoffSender.Report r = HandoffSender.hand(oldSide, "splicer", src, T, (ph, d) -> phases.add(ph + ": " + d));
            got = f.get(30, TimeUnit.SECONDS);
            assertEquals(HandoffMessage.KindCase.OFFER, got.first(), "the first message after hello");
            assertTrue(got.committed());
            assertEquals(0, src.preCopyAsked.get(), "no pre-copy for protocol 1");
            assertEquals(0, r.preCopiedFds());
            assertEquals(1200, r.fds(), "everything went at the pause");
            assertEquals(1, src.paused.get());
            assertEquals(0, src.resumed.get());
            assertTrue(phases.get(0).startsWith("pre_copied: none: the successor speaks handoff protocol 1"),
                    phases.toString());
        }
        assertEquals(List.of("pairs", "nothing", "peers"), got.items().stream().map(HandoffItem::name).toList());
        List<Fd> as = got.items().get(0).fds();
        Pointer buf = Native.allocate(8);
        for (int i = 0; i < as.size(); i++) { // the a-ends it got are the live sockets
            buf.putInt(0, i);
            assertEquals(4, Native.write(as.get(i).get(), buf, 4));
            assertEquals(4, Native.read(src.b.get(i).get(), buf, 4));
            assertEquals(i, buf.getInt(0));
        }
        for (HandoffItem it : got.items()) {
            Fd.closeAll(it.fds());
        }
        src.close();
        assertEquals(before, FdCount.now());
    }

    /**
     * Hello.pre_copies: a successor that lists nothing it pre-adopts gets nothing before the pause
     * (everything whole in the offer); one that lists the source's item gets it pre-copied; a
     * source that copies an item the successor did not list is stopped before the chunk goes out.
     */
    @Test
    void theHelloSaysWhatIsPreCopied() throws Exception {
        for (String mode : new String[] {"none", "listed", "unlisted"}) {
            int before = FdCount.now();
            SeqpacketSocket[] p = SeqpacketSocket.pair();
            PairsSource src = new PairsSource(300, 1);
            src.preCopies = true;
            src.ignoresTakes = mode.equals("unlisted");
            AtomicInteger chunks = new AtomicInteger();
            List<String> takes = switch (mode) {
                case "none" -> List.of();
                case "listed" -> List.of("pre.pairs");
                default -> List.of("control.listener");
            };
            HandoffReceiver.Taken taken = null;
            try (SeqpacketSocket oldSide = p[0]; SeqpacketSocket newSide = p[1]) {
                CompletableFuture<HandoffReceiver.Taken> f = CompletableFuture.supplyAsync(() -> {
                    try {
                        return HandoffReceiver.receive(newSide, "splicer", "test", List.of(1), takes,
                                new HandoffReceiver.Preparer() {
                                    @Override
                                    public void preCopy(int v, List<HandoffItem> items) {
                                        chunks.incrementAndGet();
                                    }

                                    @Override
                                    public void prepare(int v, List<HandoffItem> items) {}
                                }, T);
                    } catch (HandoffException e) {
                        throw new java.util.concurrent.CompletionException(e);
                    }
                });
                if (mode.equals("unlisted")) {
                    HandoffException e = assertThrows(HandoffException.class, () -> HandoffSender.hand(oldSide,
                            "splicer", src, T));
                    assertEquals(HandoffException.Reason.LOCAL, e.reason(), e.getMessage());
                    assertTrue(e.getMessage().contains("'pre.pairs', which the successor does not take"), e.getMessage());
                    assertEquals(HandoffException.Reason.ABORTED, cause(f).reason());
                    assertEquals(1, src.preCopyAborted.get());
                    assertEquals(0, src.paused.get(), "nothing paused");
                } else {
                    HandoffSender.Report r = HandoffSender.hand(oldSide, "splicer", src, T);
                    taken = f.get(30, TimeUnit.SECONDS);
                    assertEquals(mode.equals("none") ? 0 : 300, r.preCopiedFds(), mode);
                    assertEquals(mode.equals("none") ? 0 : 1, chunks.get(), mode);
                    assertEquals(600, r.fds(), mode);
                }
            }
            if (taken != null) {
                for (HandoffItem it : taken.preCopied()) {
                    Fd.closeAll(it.fds());
                }
                for (HandoffItem it : taken.items()) {
                    Fd.closeAll(it.fds());
                }
            }
            if (mode.equals("unlisted")) {
                assertEquals(0, chunks.get(), "no chunk reached the successor");
            }
            src.close();
            assertEquals(before, FdCount.now(), mode);
        }
    }

    /** A protocol-2 hello without pre_copies (builds before the field) is pre-copied as before. */
    @Test
    void aHelloWithoutPreCopiesGetsThePreCopyAsBefore() {
        assertTrue(HandoffSender.takes(Hello.newBuilder().setProtocol(2).build()).test("anything"));
        assertTrue(!HandoffSender.takes(Hello.newBuilder().setProtocol(2)
                .setPreCopies(warren.handoff.v1.PreCopies.getDefaultInstance()).build()).test("control.listener"));
    }

    @Test
    void aSuccessorThatRefusesTheStateVersionLeavesTheOldOneUntouched() throws Exception {
        int before = FdCount.now();
        SeqpacketSocket[] p = SeqpacketSocket.pair();
        PairsSource src = new PairsSource(10, 3);
        try (SeqpacketSocket oldSide = p[0]; SeqpacketSocket newSide = p[1]) {
            var f = successor(newSide, List.of(1, 2), (v, items) -> { }, T);
            HandoffException e = assertThrows(HandoffException.class, () -> HandoffSender.hand(oldSide, "splicer", src, T));
            assertEquals(HandoffException.Reason.VERSION_REFUSED, e.reason());
            assertTrue(e.getMessage().contains("accepts state versions [1, 2]"), e.getMessage());
            assertEquals(HandoffException.Reason.ABORTED, cause(f).reason());
            assertEquals(0, src.paused.get(), "nothing paused for a successor that cannot take the state");
        }
        src.close();
        assertEquals(before, FdCount.now());
    }

    @Test
    void aSuccessorThatFailsValidationGetsNothingAndTheOldOneResumes() throws Exception {
        int before = FdCount.now();
        SeqpacketSocket[] p = SeqpacketSocket.pair();
        PairsSource src = new PairsSource(300, 1);
        try (SeqpacketSocket oldSide = p[0]; SeqpacketSocket newSide = p[1]) {
            var f = successor(newSide, List.of(1), (v, items) -> {
                throw new IllegalArgumentException("flow table entry 17 names fd 900 of 600");
            }, T);
            HandoffException e = assertThrows(HandoffException.class, () -> HandoffSender.hand(oldSide, "splicer", src, T));
            assertEquals(HandoffException.Reason.REFUSED, e.reason());
            assertTrue(e.getMessage().contains("flow table entry 17"), e.getMessage());
            assertEquals(HandoffException.Reason.REFUSED, cause(f).reason());
            assertEquals(1, src.resumed.get());
        }
        src.close();
        assertEquals(before, FdCount.now(), "the refusing successor closed all 600 fds it got");
    }

    @Test
    void aSuccessorThatDiesMidwayLeavesTheOldOneServing() throws Exception {
        int before = FdCount.now();
        SeqpacketSocket[] p = SeqpacketSocket.pair();
        PairsSource src = new PairsSource(600, 1);
        try (SeqpacketSocket oldSide = p[0]) {
            CompletableFuture<HandoffSender.Report> old = CompletableFuture.supplyAsync(() -> {
                try {
                    return HandoffSender.hand(oldSide, "splicer", src, T);
                } catch (HandoffException e) {
                    throw new java.util.concurrent.CompletionException(e);
                }
            });
            try (SeqpacketSocket newSide = p[1]) {
                newSide.sendBlocking(hello(1), List.of(), T);
                try (Received offer = newSide.receiveBlocking(T)) {
                    assertTrue(HandoffMessage.parseFrom(offer.data()).hasOffer());
                }
                // dies here (closing its end), with the first batch of fds in flight
            }
            HandoffException e = cause(old);
            System.out.println("old side after the successor died: " + e.getMessage());
            assertEquals(HandoffException.Reason.CLOSED, e.reason(), e.getMessage());
        }
        assertEquals(1, src.resumed.get());
        src.close();
        assertEquals(before, FdCount.now());
    }

    @Test
    void aSuccessorThatHangsTimesOutAndTheOldOneResumes() throws Exception {
        int before = FdCount.now();
        SeqpacketSocket[] p = SeqpacketSocket.pair();
        PairsSource src = new PairsSource(5, 1);
        try (SeqpacketSocket oldSide = p[0]; SeqpacketSocket newSide = p[1]) {
            newSide.sendBlocking(hello(1), List.of(), T);
            HandoffException e = assertThrows(HandoffException.class, () -> HandoffSender.hand(oldSide, "splicer", src, 300));
            assertEquals(HandoffException.Reason.TIMEOUT, e.reason(), e.getMessage());
            assertEquals(1, src.resumed.get());
            drain(newSide);
        }
        src.close();
        assertEquals(before, FdCount.now());
    }

    @Test
    void anotherDaemonIsRefused() throws Exception {
        SeqpacketSocket[] p = SeqpacketSocket.pair();
        PairsSource src = new PairsSource(1, 1);
        try (SeqpacketSocket oldSide = p[0]; SeqpacketSocket newSide = p[1]) {
            var f = CompletableFuture.supplyAsync(() -> {
                try {
                    return HandoffReceiver.receive(newSide, "fish", List.of(1), (v, i) -> { }, T);
                } catch (HandoffException e) {
                    throw new java.util.concurrent.CompletionException(e);
                }
            });
            HandoffException e = assertThrows(HandoffException.class, () -> HandoffSender.hand(oldSide, "splicer", src, T));
            assertEquals(HandoffException.Reason.VERSION_REFUSED, e.reason());
            assertTrue(e.getMessage().contains("is fish"), e.getMessage());
            cause(f);
        }
        src.close();
    }

    @Test
    void aSuccessorTakesOverWhenTheOldProcessDiesAfterReady() throws Exception {
        int before = FdCount.now();
        HandoffReceiver.Taken taken = handPlayedOldProcess(false).get(30, TimeUnit.SECONDS);
        assertTrue(!taken.committed(), "taken over without a commit");
        assertEquals(6, taken.items().get(0).fds().size() + taken.items().get(2).fds().size());
        for (HandoffItem it : taken.items()) {
            Fd.closeAll(it.fds());
        }
        assertEquals(before, FdCount.now());
    }

    @Test
    void anAbortAfterReadyLeavesTheSuccessorWithNothing() throws Exception {
        int before = FdCount.now();
        assertEquals(HandoffException.Reason.ABORTED, cause(handPlayedOldProcess(true)).reason());
        assertEquals(before, FdCount.now(), "the successor closed the 6 fds it had prepared");
    }

    /** Plays the old side by hand up to the successor's ready, then aborts or dies. */
    private static CompletableFuture<HandoffReceiver.Taken> handPlayedOldProcess(boolean abort) throws Exception {
        SeqpacketSocket[] p = SeqpacketSocket.pair();
        PairsSource src = new PairsSource(3, 1);
        CompletableFuture<HandoffReceiver.Taken> f;
        try (SeqpacketSocket newSide = p[1]) {
            f = successor(newSide, List.of(1), (v, items) -> { }, T);
            try (SeqpacketSocket oldSide = p[0]) { // a hand-played old process that dies before commit
                try (Received hello = oldSide.receiveBlocking(T)) {
                    assertTrue(HandoffMessage.parseFrom(hello.data()).hasHello());
                }
                List<HandoffItem> items = src.pause();
                warren.handoff.v1.HandoffState.Builder st = warren.handoff.v1.HandoffState.newBuilder().setStateVersion(1);
                List<Fd> fds = new ArrayList<>();
                for (HandoffItem it : items) {
                    st.addItems(warren.handoff.v1.Item.newBuilder().setName(it.name()).setFdCount(it.fds().size()));
                    fds.addAll(it.fds());
                }
                byte[] bytes = st.build().toByteArray();
                try (Fd memfd = warren.fdpass.Memfd.createSealed("t", bytes)) {
                    oldSide.sendBlocking(HandoffMessage.newBuilder().setOffer(warren.handoff.v1.Offer.newBuilder()
                            .setStateVersion(1).setStateBytes(bytes.length).setTotalFds(fds.size())).build()
                            .toByteArray(), List.of(memfd), T);
                }
                warren.fdpass.FdBatch.send(oldSide, 1, fds, T);
                try (Received ready = oldSide.receiveBlocking(T)) {
                    assertTrue(HandoffMessage.parseFrom(ready.data()).hasReady());
                }
                if (abort) {
                    oldSide.sendBlocking(HandoffMessage.newBuilder().setAbort(warren.handoff.v1.Abort.newBuilder()
                            .setReason("changed my mind")).build().toByteArray(), List.of(), T);
                }
            } // dies here, before commit
            try {
                f.handle((t, e) -> null).get(30, TimeUnit.SECONDS); // settled before newSide closes
            } finally {
                src.close();
            }
        }
        return f;
    }

    private static byte[] hello(int version) {
        return HandoffMessage.newBuilder().setHello(Hello.newBuilder().setProtocol(Wire.PROTOCOL).setDaemon("splicer")
                .addAcceptsStateVersions(version).setPid(1)).build().toByteArray();
    }

    private static void drain(SeqpacketSocket s) throws Exception {
        for (Received r; (r = s.receive()) != null; ) {
            boolean eof = r.isEof();
            r.close();
            if (eof) {
                return;
            }
        }
    }
}
