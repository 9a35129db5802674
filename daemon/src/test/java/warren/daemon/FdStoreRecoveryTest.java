package warren.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import warren.daemon.handoff.HandoffItem;
import warren.fdpass.Fd;
import warren.fdpass.FdCount;
import warren.fdpass.Memfd;
import warren.fdpass.libc.Native;
import warren.handoff.v1.ControlState;
import warren.handoff.v1.PendingCall;
import warren.handoff.v1.StoredTask;
import warren.handoff.v1.StoredTasks;
import warren.systemd.ListenFds;

/**
 * The generic part of crash recovery, without systemd: LISTEN_FDS grouped by name and kind, junk
 * names closed and counted, each kind's recovery given its entries, requests tied to their
 * connections, entries that cannot be used closed and counted; no fd left behind.
 */
class FdStoreRecoveryTest {
    private static Fd socket(List<Fd> peers) throws Exception {
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
        peers.add(Fd.adopt(sv[1]));
        return Fd.adopt(sv[0]);
    }

    /**
     * The control state a recovery of pairs starts from: a listener and stored connection 3 (the
     * listener and every peer into {@code peers}, to close at the end).
     */
    private static FdStoreRecovery.Recovering recoveringWithConnection3(List<Fd> peers) throws Exception {
        Fd listener = socket(peers);
        peers.add(listener);
        Fd c3 = socket(peers);
        return new FdStoreRecovery.Recovering(listener,
                List.of(new StoreRecovery.Entry(FdStoreNames.parse("c3"), new ArrayList<>(List.of(c3)))), null);
    }

    /**
     * Pair {@code i}'s description as the journal stores it: sockets {@code s}, pinned pipes {@code
     * p1} (a to b, {@code inFlight} bytes in it) and {@code p2}, task 100 + i on {@code connection};
     * {@code reopened}: only the pipes' read ends stored.
     */
    private static warren.handoff.v1.StoredPair storedPair(int i, int[] s, int[] p1, int[] p2, long inFlight,
            long connection, boolean reopened) throws Exception {
        warren.handoff.v1.RelayDirection.Builder d = warren.handoff.v1.RelayDirection.newBuilder().setHasPipe(true)
                .setPipePinned(true);
        warren.handoff.v1.RelayPair pair = warren.handoff.v1.RelayPair.newBuilder().setFdA(0).setFdB(1)
                .addDirections(d.clone().setPipeR(2).setPipeW(3).setRead(100).setWritten(100 - inFlight))
                .addDirections(d.clone().setPipeR(4).setPipeW(5)).setStartUnixNanos(1).build();
        return warren.handoff.v1.StoredPair.newBuilder().setPair(pair)
                .setCall(PendingCall.newBuilder().setId(1000 + i).setTask(100 + i).setKind("splice"))
                .setConnection(connection).setItem("splicer.relay").setInoA(Native.fstat(s[0])[3])
                .setInoB(Native.fstat(s[1])[3]).setInoPipeAToB(Native.fstat(p1[0])[3])
                .setInoPipeBToA(Native.fstat(p2[0])[3]).setPipeWriteEndsReopened(reopened).build();
    }

    @Test
    void junkNamesAreClosedAndCountedAndTheRestGroupedByKind() throws Exception {
        int before = FdCount.now();
        List<Fd> peers = new ArrayList<>();
        Fd listener = socket(peers);
        Fd c3 = socket(peers);
        Fd p7a = socket(peers);
        Fd p7b = socket(peers);
        Fd junk1 = socket(peers);
        Fd junk2 = socket(peers);
        Fd x = socket(peers);
        List<ListenFds.Named> named = List.of(new ListenFds.Named(listener, "control"), new ListenFds.Named(c3, "c3"),
                new ListenFds.Named(p7a, "p7"), new ListenFds.Named(junk1, "c07"), new ListenFds.Named(p7b, "p7"),
                new ListenFds.Named(junk2, "bogus"), new ListenFds.Named(x, "x.tun0"));
        assertTrue(FdStoreRecovery.present(named, named.get(0)));
        assertFalse(FdStoreRecovery.present(List.of(named.get(0)), named.get(0)));
        int[] dropped = {0};
        Map<FdStoreNames.Kind, List<StoreRecovery.Entry>> byKind = FdStoreRecovery.group(named, listener.number(), dropped);
        assertEquals(2, dropped[0], "c07 and bogus");
        assertFalse(junk1.isOpen());
        assertFalse(junk2.isOpen());
        assertTrue(listener.isOpen(), "the listener is not an entry");
        assertEquals(List.of("c3"), byKind.get(FdStoreNames.Kind.CONNECTION).stream().map(Object::toString).toList());
        List<StoreRecovery.Entry> pairs = byKind.get(FdStoreNames.Kind.PAIR);
        assertEquals(1, pairs.size());
        assertEquals(List.of(p7a, p7b), pairs.get(0).fds(), "one entry, its fds in systemd's order");
        assertEquals("tun0", byKind.get(FdStoreNames.Kind.EXTRA).get(0).name().extra());
        assertEquals(3, byKind.size());
        for (Fd f : List.of(listener, c3, p7a, p7b, x)) {
            f.close();
        }
        Fd.closeAll(peers);
        assertEquals(before, FdCount.now(), "no fd left behind");
    }

    @Test
    void recoveriesTieRequestsToConnectionsAndCloseWhatTheyCannotUse() throws Exception {
        int before = FdCount.now();
        List<Fd> peers = new ArrayList<>();
        Fd listener = socket(peers);
        Fd c3 = socket(peers);
        FdStoreRecovery.Recovering into = new FdStoreRecovery.Recovering(listener,
                List.of(new StoreRecovery.Entry(FdStoreNames.parse("c3"), new ArrayList<>(List.of(c3)))), null);
        long now = into.nowUnixNanos();
        PendingCall call5 = PendingCall.newBuilder().setId(50).setTask(5).setKind("client").setStartUnixNanos(now - 1000).build();
        Fd t5 = socket(peers);
        Fd t5description = Memfd.createSealed("t5", StoredTask.newBuilder().setCall(call5).setConnection(3).setItem("fish.egress")
                .setVersion(2).addInos(Native.fstat(t5.get())[3]).build().toByteArray());
        Fd t6 = socket(peers); // no description
        Fd t8 = socket(peers); // its connection was gone, not answered
        Fd t8description = Memfd.createSealed("t8", StoredTask.newBuilder().setCall(call5.toBuilder().setTask(8))
                .setConnection(4).setItem("fish.egress").setVersion(1).build().toByteArray());
        Fd tun = socket(peers);
        Fd q0 = socket(peers);
        Fd q1 = socket(peers);
        List<StoreRecovery.Entry> entries = List.of(
                new StoreRecovery.Entry(FdStoreNames.parse("t5"), new ArrayList<>(List.of(t5description, t5))),
                new StoreRecovery.Entry(FdStoreNames.parse("t6"), new ArrayList<>(List.of(t6))),
                new StoreRecovery.Entry(FdStoreNames.parse("t8"), new ArrayList<>(List.of(t8, t8description))),
                new StoreRecovery.Entry(FdStoreNames.parse("x.tun"), new ArrayList<>(List.of(tun))),
                new StoreRecovery.Entry(FdStoreNames.parse("x.q"), new ArrayList<>(List.of(q0, q1))));
        TaskStore.RECOVERY.recover(entries, into);
        assertEquals(2, into.dropped, "t6 (no description) and t8 (connection gone)");
        assertFalse(t6.isOpen());
        assertFalse(t8.isOpen());
        assertFalse(t5description.isOpen(), "descriptions are read and closed");
        assertEquals(1, into.items.size());
        HandoffItem it = into.items.get(0);
        assertEquals(TaskStore.RECOVERED_ITEM, it.name());
        StoredTasks st = StoredTasks.parseFrom(it.payload());
        assertEquals(List.of("x.tun", "x.q", "x.q"), st.getExtrasList(), "an entry of several fds: its name per fd");
        assertEquals(1, st.getTasksCount());
        assertEquals(List.of(tun, q0, q1, t5), it.fds(), "the extras, then each task's fds");
        assertEquals(Map.of("other tasks", 1), into.resumed);

        // a pair entry nobody can read: dropped by the relay's recovery
        Fd p9 = socket(peers);
        warren.daemon.relay.RelayStore.RECOVERY.recover(
                List.of(new StoreRecovery.Entry(FdStoreNames.parse("p9"), new ArrayList<>(List.of(p9)))), into);
        assertEquals(3, into.dropped);
        assertFalse(p9.isOpen());
        assertEquals(0, into.resumed.get("pairs"));

        // the same request tied twice is one call; answered ones are detached; 5 is on connection 3
        assertTrue(into.call(3, call5, false));
        assertTrue(into.call(9, call5.toBuilder().setTask(11).build(), true));
        assertFalse(into.call(9, call5.toBuilder().setTask(12).build(), false));
        ControlState cs = into.controlState();
        assertEquals(1, cs.getConnectionsCount());
        assertEquals(3, cs.getConnections(0).getNumber());
        assertEquals(1, cs.getConnections(0).getFd());
        assertEquals(1, cs.getConnections(0).getCallsCount());
        assertEquals(5, cs.getConnections(0).getCalls(0).getRef(), "a stored request is named by its task");
        assertEquals(1, cs.getDetachedCount());
        assertEquals(4, cs.getNextClient());
        assertEquals(12, cs.getNextTask());

        into.closeAll();
        assertTrue(listener.isOpen(), "the listener is the daemon's");
        listener.close();
        Fd.closeAll(peers);
        assertEquals(before, FdCount.now(), "no fd left behind");
    }

    /**
     * Splicer's pair entries, 300 of them: every usable pair comes back in the entries' order with
     * its fds ordered (systemd returns them in any order) and re-based within the relay item, the
     * bytes in its pipe counted; an entry without a description and one whose connection was gone
     * are dropped; no fd left behind.
     */
    @Test
    void manyStoredPairsComeBackInOrderWithTheirFdsSortedAndRebased() throws Exception {
        int before = FdCount.now();
        int n = 300;
        List<Fd> peers = new ArrayList<>();
        FdStoreRecovery.Recovering into = recoveringWithConnection3(peers);
        List<StoreRecovery.Entry> entries = new ArrayList<>();
        List<Long> inoA = new ArrayList<>();
        jnr.ffi.Pointer bytes = Native.allocate(5);
        for (int i = 0; i < n; i++) {
            int[] s = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
            int[] p1 = Native.pipe2(Native.O_CLOEXEC);
            int[] p2 = Native.pipe2(Native.O_CLOEXEC);
            List<Fd> fds = new ArrayList<>();
            for (int fd : new int[] {p2[1], s[1], p1[0], s[0], p2[0], p1[1]}) { // not in the pair's order
                fds.add(Fd.adopt(fd));
            }
            if (i % 3 == 0) {
                assertEquals(i % 5 + 1, Native.write(p1[1], bytes, i % 5 + 1)); // bytes in flight a -> b
            }
            long connection = i == 7 ? 4 : 3; // pair 7's connection was gone before the crash
            warren.handoff.v1.StoredPair sp = storedPair(i, s, p1, p2, i % 3 == 0 ? i % 5 + 1 : 0, connection, false);
            if (i != 200) { // pair 200 lost its description: unusable
                fds.add(2, Memfd.createSealed("p" + (100 + i), sp.toByteArray()));
            }
            inoA.add(Native.fstat(s[0])[3]);
            entries.add(new StoreRecovery.Entry(FdStoreNames.parse("p" + (100 + i)), fds));
        }
        warren.daemon.relay.RelayStore.RECOVERY.recover(entries, into);
        assertEquals(2, into.dropped, "pair 200 (no description) and pair 7 (its connection gone)");
        assertEquals(Map.of("pairs", n - 2), into.resumed);
        assertEquals(1, into.items.size());
        HandoffItem it = into.items.get(0);
        warren.handoff.v1.RelayState st = warren.handoff.v1.RelayState.parseFrom(it.payload());
        assertEquals(n - 2, st.getPairsCount());
        assertEquals(6 * (n - 2), it.fds().size());
        assertEquals(warren.daemon.relay.RelayStateCodec.FORMAT, st.getFormat(), "no slot: the format every build reads");
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (i == 7 || i == 200) {
                continue;
            }
            warren.handoff.v1.RelayPair rp = st.getPairs(k);
            assertEquals(100 + i, rp.getCallRef(), "in the entries' order");
            assertEquals(6 * k, rp.getFdA(), "re-based within the item");
            assertEquals(inoA.get(i).longValue(), Native.fstat(it.fds().get(rp.getFdA()).get())[3], "a is a");
            assertEquals(i % 3 == 0 ? i % 5 + 1 : 0, rp.getDirections(0).getRead(), "the bytes in the pipe, counted");
            assertEquals(0, rp.getDirections(0).getWritten());
            assertTrue(rp.getCountsPartial());
            k++;
        }
        into.closeAll(); // the items' fds too
        Fd.closeAll(peers);
        assertEquals(before, FdCount.now(), "no fd left behind");
    }

    /**
     * Pairs stored as the journal stores them now: a, b and each pinned pipe's read end (5 fds with
     * the description). The recovery opens each write end again through /proc/self/fd: the same
     * pipe, the bytes in it kept and counted, a write through it read back behind them; an entry
     * that carries a write end anyway, or whose connection was gone, is dropped with the write ends
     * it had opened; no fd left behind.
     */
    @Test
    void pairsStoredWithTheirPipesReadEndsOnlyComeBackWithTheWriteEndsReopened() throws Exception {
        int before = FdCount.now();
        int n = 60;
        List<Fd> peers = new ArrayList<>();
        FdStoreRecovery.Recovering into = recoveringWithConnection3(peers);
        List<StoreRecovery.Entry> entries = new ArrayList<>();
        jnr.ffi.Pointer bytes = Native.allocate(8);
        for (int i = 0; i < 8; i++) {
            bytes.putByte(i, (byte) ('a' + i));
        }
        for (int i = 0; i < n; i++) {
            int[] s = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
            int[] p1 = Native.pipe2(Native.O_CLOEXEC | Native.O_NONBLOCK);
            int[] p2 = Native.pipe2(Native.O_CLOEXEC | Native.O_NONBLOCK);
            int inFlight = i % 3 == 0 ? i % 5 + 1 : 0;
            if (inFlight > 0) {
                assertEquals(inFlight, Native.write(p1[1], bytes, inFlight)); // bytes in flight a -> b
            }
            warren.handoff.v1.StoredPair sp = storedPair(i, s, p1, p2, inFlight, i == 11 ? 4 : 3, true);
            List<Fd> fds = new ArrayList<>();
            for (int fd : new int[] {p2[0], s[1], p1[0], s[0]}) { // not in the pair's order
                fds.add(Fd.adopt(fd));
            }
            if (i == 23) {
                fds.add(Fd.adopt(p1[1])); // a write end where none belongs: unusable
            } else {
                Native.close(p1[1]); // systemd holds the read ends only
            }
            Native.close(p2[1]);
            fds.add(1, Memfd.createSealed("p" + (100 + i), sp.toByteArray()));
            entries.add(new StoreRecovery.Entry(FdStoreNames.parse("p" + (100 + i)), fds));
        }
        warren.daemon.relay.RelayStore.RECOVERY.recover(entries, into);
        assertEquals(2, into.dropped, "pair 23 (a stored write end) and pair 11 (its connection gone)");
        HandoffItem it = into.items.get(0);
        warren.handoff.v1.RelayState st = warren.handoff.v1.RelayState.parseFrom(it.payload());
        assertEquals(n - 2, st.getPairsCount());
        assertEquals(6 * (n - 2), it.fds().size(), "six fds per pair again: the write ends reopened");
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (i == 11 || i == 23) {
                continue;
            }
            warren.handoff.v1.RelayPair rp = st.getPairs(k++);
            int inFlight = i % 3 == 0 ? i % 5 + 1 : 0;
            assertEquals(inFlight, rp.getDirections(0).getRead(), "pair " + i + ": the bytes in its pipe, counted");
            for (int dir = 0; dir < 2; dir++) {
                int r = it.fds().get(rp.getDirections(dir).getPipeR()).get();
                int w = it.fds().get(rp.getDirections(dir).getPipeW()).get();
                assertEquals(Native.fstat(r)[3], Native.fstat(w)[3], "pair " + i + ": the write end is its pipe's");
                assertEquals(1, Native.fcntl(w, Native.F_GETFL, 0) & 3, "opened O_WRONLY");
                assertEquals(Native.O_NONBLOCK, Native.fcntl(w, Native.F_GETFL, 0) & Native.O_NONBLOCK, "non-blocking, as the relay's");
            }
            int r0 = it.fds().get(rp.getDirections(0).getPipeR()).get();
            int w0 = it.fds().get(rp.getDirections(0).getPipeW()).get();
            jnr.ffi.Pointer z = Native.allocate(1);
            z.putByte(0, (byte) 'z');
            assertEquals(1, Native.write(w0, z, 1));
            jnr.ffi.Pointer got = Native.allocate(16);
            assertEquals(inFlight + 1, Native.read(r0, got, 16), "pair " + i + ": the old bytes, then the new one");
            assertEquals((byte) 'z', got.getByte(inFlight));
            if (inFlight > 0) {
                assertEquals((byte) 'a', got.getByte(0));
            }
        }
        into.closeAll(); // the items' fds too
        Fd.closeAll(peers);
        assertEquals(before, FdCount.now(), "no fd left behind, the reopened write ends of dropped entries neither");
    }

    /**
     * Pairs stored in the pair book's slots: 4 fds under a slot's name, the description in the
     * book. Every usable pair comes back with its slot (for its removal), its write ends reopened
     * and its bytes counted; the book goes to the control state for the daemon to write on into;
     * a slot whose description is another pair's, an empty slot, a slot with a file among its fds
     * and a p&lt;TASK&gt; entry beside them are told apart; without a book a slot's entry is dropped;
     * no fd left behind.
     */
    @Test
    void slotPairsComeBackFromTheBookWithTheirSlots() throws Exception {
        int before = FdCount.now();
        int n = 120;
        List<Fd> peers = new ArrayList<>();
        FdStoreRecovery.Recovering noBook = recoveringWithConnection3(peers);
        Fd listener = socket(peers);
        peers.add(listener);
        PairBook book = new PairBook();
        book.adopt(Fd.adopt(Native.memfd_create("book", Native.MFD_CLOEXEC)));
        FdStoreRecovery.Recovering into = new FdStoreRecovery.Recovering(listener,
                List.of(new StoreRecovery.Entry(FdStoreNames.parse("c3"), new ArrayList<>(List.of(socket(peers))))),
                List.of(new StoreRecovery.Entry(FdStoreNames.parse("book"),
                        new ArrayList<>(List.of(Fd.adopt(Native.fcntl(book.storedFd().get(), Native.F_DUPFD_CLOEXEC, 3)))))));
        List<StoreRecovery.Entry> entries = new ArrayList<>();
        jnr.ffi.Pointer bytes = Native.allocate(8);
        warren.handoff.v1.StoredPair previous = null;
        for (int i = 0; i < n; i++) {
            int[] s = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
            int[] p1 = Native.pipe2(Native.O_CLOEXEC | Native.O_NONBLOCK);
            int[] p2 = Native.pipe2(Native.O_CLOEXEC | Native.O_NONBLOCK);
            int inFlight = i % 3 == 0 ? i % 5 + 1 : 0;
            if (inFlight > 0) {
                assertEquals(inFlight, Native.write(p1[1], bytes, inFlight));
            }
            warren.handoff.v1.StoredPair sp = storedPair(i, s, p1, p2, inFlight, 3, true);
            Native.close(p1[1]);
            Native.close(p2[1]);
            List<Fd> fds = new ArrayList<>();
            for (int fd : new int[] {s[1], p2[0], s[0], p1[0]}) { // not in the pair's order
                fds.add(Fd.adopt(fd));
            }
            int slot = book.claim();
            assertEquals(i, slot, "the lowest free slot");
            if (i == 30) {
                fds.add(Memfd.createSealed("p", sp.toByteArray())); // a file among a slot's fds: unusable
            }
            if (i == 45) {
                book.write(slot, previous.toByteArray(), null); // another pair's description: unusable
            } else if (i != 60) { // slot 60's description never written: unusable
                book.write(slot, sp.toByteArray(), null);
            }
            previous = sp;
            entries.add(new StoreRecovery.Entry(FdStoreNames.parse(FdStoreNames.slot(slot)), fds));
            if (i == 90) { // a pair of the old format among them
                int[] t = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                int[] q1 = Native.pipe2(Native.O_CLOEXEC | Native.O_NONBLOCK);
                int[] q2 = Native.pipe2(Native.O_CLOEXEC | Native.O_NONBLOCK);
                warren.handoff.v1.StoredPair old = storedPair(1000, t, q1, q2, 0, 3, true);
                Native.close(q1[1]);
                Native.close(q2[1]);
                List<Fd> ofds = new ArrayList<>();
                for (int fd : new int[] {t[0], t[1], q1[0], q2[0]}) {
                    ofds.add(Fd.adopt(fd));
                }
                ofds.add(Memfd.createSealed("p1100", old.toByteArray()));
                entries.add(new StoreRecovery.Entry(FdStoreNames.parse("p1100"), ofds));
            }
        }
        assertTrue(FdStoreNames.slot(n - 1).length() == 2, "one- and two-character names both");
        warren.daemon.relay.RelayStore.RECOVERY.recover(entries, into);
        assertEquals(3, into.dropped, "slot 30 (a file among its fds), 45 (another pair's description), 60 (none)");
        assertEquals(Map.of("pairs", n - 3 + 1, "of them in the pair book", n - 3), into.resumed);
        HandoffItem it = into.items.get(0);
        warren.handoff.v1.RelayState st = warren.handoff.v1.RelayState.parseFrom(it.payload());
        assertEquals(n - 3 + 1, st.getPairsCount());
        assertEquals(6 * (n - 2), it.fds().size(), "six fds per pair: the write ends reopened");
        assertEquals(warren.daemon.relay.RelayStateCodec.FORMAT_STORE_SLOTS, st.getFormat(),
                "pairs with slots: a format a build without the pair book refuses");
        warren.daemon.relay.RelayStateCodec.check(st, it.fds());
        org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> warren.daemon.relay.RelayStateCodec.check(st.toBuilder().setFormat(3).build(), it.fds()));
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (i == 30 || i == 45 || i == 60) {
                continue;
            }
            warren.handoff.v1.RelayPair rp = st.getPairs(k++);
            assertEquals(100 + i, rp.getCallRef());
            assertEquals(i + 1, rp.getStoreSlot(), "the slot it is stored under, for its removal");
            int inFlight = i % 3 == 0 ? i % 5 + 1 : 0;
            assertEquals(inFlight, rp.getDirections(0).getRead(), "pair " + i + ": the bytes in its pipe, counted");
            int r = it.fds().get(rp.getDirections(1).getPipeR()).get();
            int w = it.fds().get(rp.getDirections(1).getPipeW()).get();
            assertEquals(Native.fstat(r)[3], Native.fstat(w)[3], "pair " + i + ": the write end is its pipe's");
            if (i == 90) {
                warren.handoff.v1.RelayPair old = st.getPairs(k++);
                assertEquals(1100, old.getCallRef(), "the p<TASK> entry, in its place");
                assertEquals(0, old.getStoreSlot());
            }
        }
        ControlState cs = into.controlState();
        assertTrue(cs.getFdPairBook() > 0, "the book goes to the daemon");
        assertEquals(Native.fstat(book.storedFd().get())[3],
                Native.fstat(into.controlFds.get(cs.getFdPairBook() - 1).get())[3], "the same book");

        // a slot's entry without a book: dropped
        int[] s = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
        warren.daemon.relay.RelayStore.RECOVERY.recover(List.of(new StoreRecovery.Entry(FdStoreNames.parse("A"),
                new ArrayList<>(List.of(Fd.adopt(s[0]), Fd.adopt(s[1]))))), noBook);
        assertEquals(1, noBook.dropped);
        assertEquals(0, noBook.controlState().getFdPairBook());

        noBook.closeAll();
        into.closeAll();
        book.close();
        Fd.closeAll(peers);
        assertEquals(before, FdCount.now(), "no fd left behind");
    }

    /**
     * The control listener among LISTEN_FDS: "control" wins wherever it is; else the first name
     * that is no stored entry's; else a listening SOCK_SEQPACKET socket whose socket unit's name
     * reads as a slot's (API), never a slot's entry (A) nor a listening socket of another type.
     */
    @Test
    void theListenerIsFoundEvenUnderANameThatReadsAsASlot(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir)
            throws Exception {
        int before = FdCount.now();
        List<Fd> peers = new ArrayList<>();
        try (warren.fdpass.SeqpacketListener api = warren.fdpass.SeqpacketListener.bind(dir.resolve("api.sock"));
                Fd tcp = warren.fdpass.net.TcpSockets.listen(new java.net.InetSocketAddress("127.0.0.1", 0), 4)) {
            Fd a = socket(peers);
            Fd c3 = socket(peers);
            ListenFds.Named slotEntry = new ListenFds.Named(a, "A");
            ListenFds.Named tcpUnderSlotName = new ListenFds.Named(tcp, "B");
            ListenFds.Named apiListener = new ListenFds.Named(api.fd(), "API");
            ListenFds.Named connection = new ListenFds.Named(c3, "c3");
            assertEquals("API", FdStoreRecovery.listener(List.of(slotEntry, tcpUnderSlotName, connection, apiListener))
                    .name());
            assertFalse(FdStoreRecovery.present(List.of(apiListener), apiListener), "a fresh start, not a recovery");
            assertTrue(FdStoreRecovery.present(List.of(slotEntry, apiListener), apiListener));
            ListenFds.Named control = new ListenFds.Named(api.fd(), "control");
            ListenFds.Named other = new ListenFds.Named(tcp, "other");
            assertEquals("control", FdStoreRecovery.listener(List.of(other, slotEntry, control)).name(), "wherever it is");
            assertEquals("other", FdStoreRecovery.listener(List.of(slotEntry, other)).name());
            assertEquals(null, FdStoreRecovery.listener(List.of(slotEntry, tcpUnderSlotName, connection)));
            a.close();
            c3.close();
        }
        Fd.closeAll(peers);
        assertEquals(before, FdCount.now(), "no fd left behind");
    }
}
