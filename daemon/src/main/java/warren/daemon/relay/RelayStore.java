package warren.daemon.relay;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import jnr.ffi.Pointer;
import warren.daemon.FdStoreNames;
import warren.daemon.PairBook;
import warren.daemon.StoreRecovery;
import warren.daemon.handoff.HandoffItem;
import warren.fdpass.Fd;
import warren.fdpass.Memfd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.handoff.v1.RelayDirection;
import warren.handoff.v1.RelayPair;
import warren.handoff.v1.RelayState;
import warren.handoff.v1.StoredPair;

/**
 * A relay's pairs in systemd's fd store (fdstore.proto's StoredPair under {@code p<TASK>}), both
 * ways: {@link #describe} is what {@link FdStoreJournal} stores as a pair starts, {@link #RECOVERY}
 * turns the stored pairs back into one RelayState item per relay item after a crash. A pair
 * resumes with the bytes its pinned pipes held, counted from the restart on
 * ({@code counts_partial}); a pair whose control connection was gone is closed (nobody is left to
 * hand its sockets back to).
 */
public final class RelayStore {
    private static final long FIONREAD = 0x541B;
    private static final int S_IFMT = 0xF000;
    private static final int S_IFREG = 0x8000;

    private RelayStore() {}

    /**
     * The description of pair {@code p} of {@code relay} (item {@code item}) as it starts; the fds
     * to store with it (views: the pair owns them) are appended to {@code fds}: a, b and each
     * pinned pipe's read end (a-&gt;b, then b-&gt;a). The description's RelayPair indexes them as
     * a, b, a-&gt;b r, a-&gt;b w, b-&gt;a r, b-&gt;a w: the recovery reopens the write ends from the read
     * ends ({@code pipe_write_ends_reopened}), so the store holds 5 fds per pair instead of 7.
     */
    static StoredPair describe(Relay relay, Pair p, String item, List<Fd> fds) {
        List<Fd> all = new ArrayList<>(6);
        RelayPair.Builder rp = RelayStateCodec.pair(p, all, System.nanoTime(), relay.pinsPipes());
        boolean bothPipes = all.size() == 6;
        fds.add(all.get(0));
        fds.add(all.get(1));
        if (bothPipes) {
            fds.add(all.get(2));
            fds.add(all.get(4));
        } else {
            fds.addAll(all.subList(2, all.size())); // not a pinned pair: as stored before (unusable after a crash)
        }
        return StoredPair.newBuilder().setPair(rp).setCall(p.call.describe()).setConnection(p.call.connection())
                .setItem(item).setInoA(ino(all.get(0))).setInoB(ino(all.get(1)))
                .setInoPipeAToB(all.size() > 2 ? ino(all.get(2)) : 0).setInoPipeBToA(all.size() > 4 ? ino(all.get(4)) : 0)
                .setPipeWriteEndsReopened(bothPipes).build();
    }

    /** Every stored pair book's content (an unreadable one reads as empty: its slots' pairs are dropped). */
    private static byte[][] readBooks(List<Fd> books) {
        byte[][] out = new byte[books.size()][];
        for (int i = 0; i < out.length; i++) {
            try {
                out[i] = PairBook.read(books.get(i), 256L << 20);
            } catch (Exception x) {
                warren.daemon.Log.warn("fd store: pair book " + i + " unreadable (" + x.getMessage()
                        + "); the pairs it describes are dropped");
                out[i] = new byte[0];
            }
        }
        return out;
    }

    private static long ino(Fd fd) {
        try {
            return Native.fstat(fd.get())[3];
        } catch (NativeIoException e) {
            return 0;
        }
    }

    /**
     * Reads {@code p<TASK>} and slot entries back (a slot's description from the pair book): one
     * RelayState item per relay item, named as the journal's; a slot pair keeps its slot.
     */
    public static final StoreRecovery RECOVERY = new StoreRecovery() {
        @Override
        public Set<FdStoreNames.Kind> kinds() {
            return Set.of(FdStoreNames.Kind.PAIR, FdStoreNames.Kind.SLOT);
        }

        @Override
        public void recover(List<Entry> entries, Into into) throws Exception {
            recoverPairs(entries, into);
        }
    };

    private static void recoverPairs(List<StoreRecovery.Entry> entries, StoreRecovery.Into into) throws Exception {
        Map<String, RelayState.Builder> relays = new LinkedHashMap<>();
        Map<String, List<Fd>> relayFds = new LinkedHashMap<>();
        Pointer n = Native.allocate(8);
        int resumed = 0;
        byte[][] books = null; // read at the first slot entry: every stored book, whole
        int slotted = 0;
        // /proc/self/fd, once per recovery (O_PATH), for each pipe's write end by openat(2): a path
        // walk from / per pipe cost ~25 us a pair in a cold recovery
        try (Fd procFd = Fd.adopt(Native.open("/proc/self/fd", Native.O_PATH | Native.O_DIRECTORY))) {
            for (StoreRecovery.Entry e : entries) {
                StoredPair sp;
                List<Fd> g = new ArrayList<>(6);
                boolean slot = e.name().kind() == FdStoreNames.Kind.SLOT;
                try {
                    List<StoredPair> fromBook = null;
                    if (slot) {
                        if (books == null) {
                            books = readBooks(into.pairBooks());
                        }
                        fromBook = new ArrayList<>(books.length);
                        for (byte[] b : books) {
                            int[] at = PairBook.find(b, e.name().number());
                            if (at != null) {
                                fromBook.add(StoredPair.parseFrom(
                                        com.google.protobuf.CodedInputStream.newInstance(b, at[0], at[1])));
                            }
                        }
                    }
                    sp = describeAndOrder(e.fds(), g, procFd, fromBook);
                    // the description's indices name g's fds: checked as the adopt will, so that one bad
                    // entry is dropped here instead of failing the recovery or the whole relay's item
                    RelayStateCodec.checkStoredPair(sp.getPair(), g);
                    if (sp.getItem().isEmpty()) { // no relay item to go back to (HandoffItem needs a name)
                        throw new IllegalArgumentException("no relay item named");
                    }
                    // a stored pair is whole: an update names a pre-copied pair's sockets that a restart
                    // does not have, and would fail the adopt of the whole relay item (found by fuzzing)
                    if (sp.getPair().getUpdate()) {
                        throw new IllegalArgumentException("a stored pair cannot be an update of a pre-copied one");
                    }
                } catch (Exception x) {
                    into.drop(e, "unusable (" + x.getMessage() + ")");
                    continue;
                }
                if (!into.call(sp.getConnection(), sp.getCall(), false)) {
                    into.drop(e, "the pair of task " + sp.getCall().getTask() + " belonged to connection "
                            + sp.getConnection() + ", which was gone before the crash");
                    continue;
                }
                List<Fd> rf = relayFds.computeIfAbsent(sp.getItem(), k -> new ArrayList<>());
                RelayPair.Builder rp = sp.getPair().toBuilder().setCallRef(sp.getCall().getTask())
                        .setCountsPartial(true)
                        .setAgeNanos(Math.max(0, into.nowUnixNanos() - sp.getPair().getStartUnixNanos()))
                        .setStoreSlot(slot ? (int) e.name().number() + 1 : 0); // removed by that name at its end
                int base = rf.size();
                rp.setFdA(base + rp.getFdA()).setFdB(base + rp.getFdB());
                for (int d = 0; d < rp.getDirectionsCount(); d++) {
                    RelayDirection.Builder dir = rp.getDirectionsBuilder(d);
                    long inPipe = 0;
                    if (dir.getHasPipe()) {
                        if (Native.tryIoctl(g.get(dir.getPipeR()).get(), FIONREAD, n) == 0) {
                            inPipe = n.getInt(0);
                        }
                        dir.setPipeR(base + dir.getPipeR()).setPipeW(base + dir.getPipeW());
                    }
                    dir.setRead(inPipe).setWritten(0); // counted from here; the pipe's bytes still go out
                }
                rf.addAll(g);
                relays.computeIfAbsent(sp.getItem(), k -> RelayState.newBuilder().setFormat(RelayStateCodec.FORMAT))
                        .addPairs(rp);
                resumed++;
                slotted += slot ? 1 : 0;
            }
        }
        for (Map.Entry<String, RelayState.Builder> r : relays.entrySet()) {
            into.item(new HandoffItem(r.getKey(), RelayStateCodec.stamped(r.getValue()).build().toByteArray(),
                    relayFds.get(r.getKey())));
        }
        into.resumed("pairs", resumed);
        if (slotted > 0) {
            into.resumed("of them in the pair book", slotted);
        }
    }

    /**
     * A pair's fds as systemd returned them (any order) ordered [a, b, a-&gt;b r, a-&gt;b w, b-&gt;a r,
     * b-&gt;a w] into {@code ordered}, told apart by inode (and a pipe's ends by their access mode),
     * and its description: for a {@code p<TASK>} entry ({@code fromBook} null) its sealed memfd
     * (read, then closed here: systemd keeps its copy); for a slot's entry the first of
     * {@code fromBook} (the slot in each stored book) whose inodes are the entry's. With {@code
     * pipe_write_ends_reopened} only the read ends were stored: each write end is opened again
     * through /proc/self/fd (the same pipe) and added to {@code g}, the entry's own fds, so that an
     * entry dropped later closes it too. One fstat per fd: a recovery does this for every stored
     * pair before the daemon serves again.
     */
    private static StoredPair describeAndOrder(List<Fd> g, List<Fd> ordered, Fd procFd, List<StoredPair> fromBook)
            throws Exception {
        int n = g.size();
        long[] mode = new long[n];
        long[] ino = new long[n];
        StoredPair sp = null;
        for (int i = 0; i < n; i++) {
            Fd f = g.get(i);
            long[] st = Native.fstat(f.get());
            mode[i] = st[0] & S_IFMT;
            ino[i] = st[3];
            if (mode[i] == S_IFREG) {
                if (fromBook != null) {
                    throw new IllegalArgumentException("a file among a slot's fds (its description is the book's)");
                }
                sp = StoredPair.parseFrom(Memfd.readSealed(f, 1 << 20)); // the last of several wins, as it always has
                f.close();
            }
        }
        Fd[] out = null;
        if (fromBook == null) {
            if (sp == null) {
                throw new IllegalArgumentException("no description among " + n + " fds");
            }
            out = order(sp, g, mode, ino);
        } else {
            String why = "no description in the pair book";
            for (StoredPair c : fromBook) {
                try {
                    out = order(c, g, mode, ino);
                    sp = c;
                    break;
                } catch (IllegalArgumentException x) {
                    why = "the book's description is another pair's: " + x.getMessage();
                }
            }
            if (out == null) {
                throw new IllegalArgumentException(why);
            }
        }
        if (sp.getPipeWriteEndsReopened()) {
            for (int r = 2; r <= 4; r += 2) {
                // the same pipe, bytes and all (fifo_open: a writer beside the stored read end); owned
                // by the entry (g) so that a pair dropped later closes it with the rest
                out[r + 1] = Fd.adopt(Native.openNumbered(procFd.get(), out[r].get(), Native.O_WRONLY | Native.O_NONBLOCK));
                g.add(out[r + 1]);
            }
        }
        for (int i = 0; i < 6; i++) {
            if (out[i] == null) {
                throw new IllegalArgumentException("fd " + i + " of 6 missing");
            }
            ordered.add(out[i]);
        }
        return sp;
    }

    /**
     * {@code g}'s fds (their modes and inodes) in the places {@code sp} gives them; the write ends
     * left empty when they are to be reopened. IllegalArgumentException if an fd is not the
     * pair's or a place stays empty. Takes nothing, so that another description can be tried.
     */
    private static Fd[] order(StoredPair sp, List<Fd> g, long[] mode, long[] ino) throws NativeIoException {
        Fd[] out = new Fd[6];
        boolean reopen = sp.getPipeWriteEndsReopened();
        for (int i = 0; i < g.size(); i++) {
            Fd f = g.get(i);
            if (mode[i] == S_IFREG) {
                continue; // the description
            }
            int slot = -1;
            if (mode[i] == Native.S_IFSOCK) {
                slot = ino[i] == sp.getInoA() ? 0 : ino[i] == sp.getInoB() ? 1 : -1;
            } else if (mode[i] == Native.S_IFIFO) {
                int base = ino[i] == sp.getInoPipeAToB() ? 2 : ino[i] == sp.getInoPipeBToA() ? 4 : -1;
                boolean writeEnd = base >= 0 && (Native.fcntl(f.get(), Native.F_GETFL, 0) & 3) == 1; // O_WRONLY
                slot = base < 0 || (reopen && writeEnd) ? -1 : base + (writeEnd ? 1 : 0);
            }
            if (slot < 0 || out[slot] != null) {
                throw new IllegalArgumentException("an fd that is not the pair's (mode " + Long.toOctalString(mode[i]) + ")");
            }
            out[slot] = f;
        }
        for (int i = 0; i < 6; i++) {
            if (out[i] == null && !(reopen && (i == 3 || i == 5))) {
                throw new IllegalArgumentException("fd " + i + " of 6 missing");
            }
        }
        return out;
    }
}
