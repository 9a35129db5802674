package warren.daemon;

import java.util.ArrayList;
import java.util.EnumMap;
import java.util.EnumSet;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import warren.daemon.config.Config;
import warren.daemon.control.ControlStateCodec;
import warren.daemon.handoff.HandoffItem;
import warren.daemon.handoff.Handoffable;
import warren.fdpass.Fd;
import warren.fdpass.SeqpacketListener;
import warren.handoff.v1.ControlConnection;
import warren.handoff.v1.ControlState;
import warren.handoff.v1.PendingCall;
import warren.systemd.ListenFds;

/**
 * Restart after a crash under systemd: what the crashed process kept in the fd store
 * (fdstore.proto, names {@link FdStoreNames}) comes back in LISTEN_FDS, and is turned into the
 * same items an upgrade hands over, so the same code rebuilds the daemon. This class knows only
 * the names and the control connections ({@code c<N>}, served again, their pending requests
 * answered after the restart); it groups the other entries by kind and hands each group to the
 * handler's {@link StoreRecovery} for that kind ({@link Handoffable#storeRecoveries}), which ties
 * each stored request to its connection and makes the handler's items. What nobody can use (a
 * name that is not a stored entry's, a kind nobody reads, an entry its recovery refuses) is
 * closed, said in the log and counted.
 */
final class FdStoreRecovery {
    private FdStoreRecovery() {}

    /** True if {@code fds} holds anything of a crashed predecessor (besides {@code listener}, which may be null). */
    static boolean present(List<ListenFds.Named> fds, ListenFds.Named listener) {
        for (ListenFds.Named n : fds) {
            if (n != listener && FdStoreNames.isStored(n.name())) {
                return true;
            }
        }
        return false;
    }

    /**
     * The control listener among LISTEN_FDS: the one named {@link FdStoreNames#LISTENER}, else the
     * first whose name is not a stored entry's, else the first listening SOCK_SEQPACKET socket
     * under a slot's name (a socket unit's {@code FileDescriptorName=} of 1-5 characters, such as
     * {@code API}, reads as one; a slot's entry never holds a listening socket); null if none.
     */
    static ListenFds.Named listener(List<ListenFds.Named> fds) {
        ListenFds.Named pick = null;
        for (ListenFds.Named n : fds) {
            if (n.name().equals(FdStoreNames.LISTENER)) {
                return n;
            }
            if (pick == null && !FdStoreNames.isStored(n.name())) {
                pick = n;
            }
        }
        if (pick != null) {
            return pick;
        }
        for (ListenFds.Named n : fds) {
            FdStoreNames.Name name = FdStoreNames.tryParse(n.name());
            if (name != null && name.kind() == FdStoreNames.Kind.SLOT && seqpacketListener(n.fd())) {
                return n;
            }
        }
        return null;
    }

    private static boolean seqpacketListener(warren.fdpass.Fd fd) {
        try {
            int s = fd.get();
            return warren.fdpass.libc.Native.getsockoptInt(s, warren.fdpass.libc.Native.SOL_SOCKET,
                    warren.fdpass.libc.Native.SO_ACCEPTCONN) == 1
                    && warren.fdpass.libc.Native.getsockoptInt(s, warren.fdpass.libc.Native.SOL_SOCKET,
                            warren.fdpass.libc.Native.SO_TYPE) == warren.fdpass.libc.Native.SOCK_SEQPACKET;
        } catch (Exception e) {
            return false; // not a socket
        }
    }

    /**
     * The stored entries among {@code named} (every fd but the listener's), grouped by name in
     * the order they came, by kind; an fd whose name is not a stored entry's is closed, and
     * counted in {@code dropped}.
     */
    static Map<FdStoreNames.Kind, List<StoreRecovery.Entry>> group(List<ListenFds.Named> named, int listenerFd,
            int[] dropped) {
        Map<String, StoreRecovery.Entry> byName = new LinkedHashMap<>();
        String lastName = null;
        StoreRecovery.Entry last = null;
        for (ListenFds.Named n : named) {
            if (n.fd().number() == listenerFd) {
                continue;
            }
            if (last != null && n.name().equals(lastName)) { // systemd hands an entry's fds back side by side
                last.fds().add(n.fd());
                continue;
            }
            FdStoreNames.Name name;
            try {
                name = FdStoreNames.parse(n.name());
            } catch (IllegalArgumentException e) {
                Log.warn(e.getMessage() + "; its fd " + n.fd().number() + " is closed");
                n.fd().close();
                dropped[0]++;
                continue;
            }
            last = byName.computeIfAbsent(name.toString(), k -> new StoreRecovery.Entry(name, new ArrayList<>(8)));
            lastName = n.name();
            last.fds().add(n.fd());
        }
        Map<FdStoreNames.Kind, List<StoreRecovery.Entry>> byKind = new EnumMap<>(FdStoreNames.Kind.class);
        for (StoreRecovery.Entry e : byName.values()) {
            byKind.computeIfAbsent(e.name().kind(), k -> new ArrayList<>()).add(e);
        }
        return byKind;
    }

    /** Builds the daemon from the store (serving once this returns); closes what it cannot use. */
    static Daemon recover(DaemonSpec spec, Config config, SeqpacketListener listener, List<ListenFds.Named> named,
            Started started) throws Exception {
        long tListed = System.nanoTime();
        int[] dropped = {0};
        Map<FdStoreNames.Kind, List<StoreRecovery.Entry>> byKind = group(named, listener.fd().number(), dropped);
        List<StoreRecovery.Entry> all = new ArrayList<>();
        byKind.values().forEach(all::addAll);
        long tBuild = System.nanoTime();
        Daemon d;
        try {
            d = Daemon.forSuccessor(spec, config, listener, "");
        } catch (Exception e) {
            closeAll(all);
            throw e;
        }
        long tDaemon = System.nanoTime();
        long tRead;
        Recovering into = new Recovering(listener.fd(), byKind.remove(FdStoreNames.Kind.CONNECTION),
                byKind.remove(FdStoreNames.Kind.BOOK));
        into.store = d.notifier();
        Handoffable h;
        try {
            h = Upgrade.handoffable(d, Upgrade.STATE_VERSIONS.get(0));
            Set<FdStoreNames.Kind> read = EnumSet.noneOf(FdStoreNames.Kind.class);
            for (StoreRecovery r : h.storeRecoveries()) {
                List<StoreRecovery.Entry> mine = new ArrayList<>();
                for (FdStoreNames.Kind k : r.kinds()) {
                    if (k == FdStoreNames.Kind.CONNECTION || k == FdStoreNames.Kind.BOOK || !read.add(k)) {
                        throw new IllegalStateException("two readers of fd store entries of kind " + k);
                    }
                    List<StoreRecovery.Entry> es = byKind.remove(k);
                    if (es != null) {
                        mine.addAll(es);
                    }
                }
                r.recover(mine, into);
            }
            for (List<StoreRecovery.Entry> es : byKind.values()) {
                for (StoreRecovery.Entry e : es) {
                    into.drop(e, "nothing in " + spec.name() + " reads " + e.name().kind() + " entries");
                }
            }
            tRead = System.nanoTime();
            Upgrade.adoptInto(d, h, Upgrade.STATE_VERSIONS.get(0), into.controlState(), into.controlFds, into.items,
                    tBuild);
        } catch (Exception e) {
            d.discard();
            into.closeAll();
            closeAll(all); // what a recovery took and neither handed on nor dropped (a detached fd stays its new owner's)
            throw e;
        }
        long tAdopted = System.nanoTime();
        for (int slot : into.stuck) {
            d.pairBook().mark(slot);
        }
        d.server().start();
        h.startAdopted();
        long tStarted = System.nanoTime();
        StringBuilder what = new StringBuilder(into.connections.size() + " control connections");
        into.resumed.forEach((k, v) -> what.append(", ").append(v).append(' ').append(k));
        int closed = dropped[0] + into.dropped;
        Log.info("recovered after a crash from systemd's fd store: " + what + (closed > 0 ? ", " + closed + " dropped" : "")
                + "; " + started.phases(tListed, tBuild, tDaemon, tRead, tAdopted, tStarted, named.size()));
        return d;
    }

    /**
     * When a restarted process reached its main and had its configuration (System.nanoTime()), for
     * the "recovered" line's phases: with the journal's time of systemd's "Starting" line, an
     * operator sees where the time from the fork to serving again went (the JVM's own start is
     * the rest; docs/systemd.md, "Crash survival").
     */
    record Started(long mainNanos, long configuredNanos) {
        String phases(long listed, long grouped, long daemon, long read, long adopted, long started, int fds) {
            return String.format(java.util.Locale.ROOT,
                    "config read %.1f ms after main, %d stored fds listed in %.1f ms and grouped in %.1f ms, daemon built in %.1f ms, "
                            + "entries read in %.1f ms, "
                            + "adopted in %.1f ms, started in %.1f ms: serving %.1f ms after main",
                    (configuredNanos - mainNanos) / 1e6, fds, (listed - configuredNanos) / 1e6, (grouped - listed) / 1e6,
                    (daemon - grouped) / 1e6,
                    (read - daemon) / 1e6, (adopted - read) / 1e6, (started - adopted) / 1e6, (started - mainNanos) / 1e6);
        }
    }

    private static void closeAll(List<StoreRecovery.Entry> entries) {
        for (StoreRecovery.Entry e : entries) {
            Fd.closeAll(e.fds());
        }
    }

    /**
     * The control state being rebuilt (the listener, the stored connections and the requests tied
     * to them) and the handler's items, as the recoveries report them.
     */
    static final class Recovering implements StoreRecovery.Into {
        final Map<Long, ControlConnection.Builder> connections = new TreeMap<>();
        final List<Fd> controlFds = new ArrayList<>();
        final List<HandoffItem> items = new ArrayList<>();
        final Map<String, Integer> resumed = new LinkedHashMap<>();
        private final List<PendingCall> detached = new ArrayList<>();
        /** The stored pair books (one, unless something stored another), for the relay recovery and the daemon. */
        private final List<Fd> books = new ArrayList<>();
        private boolean bookHandedOn;
        private final Set<Long> tied = new HashSet<>();
        private final long nowUnixNanos;
        private long maxConnection;
        private long maxTask;
        int dropped;
        /** Slots of dropped entries whose removal could not be sent: the daemon's pair book keeps them taken. */
        final List<Integer> stuck = new ArrayList<>();
        /** Where a dropped entry is removed from too (systemd's copies of its fds), or null. */
        warren.systemd.SdNotify store;

        /**
         * {@code listener}: a view (the daemon owns it); {@code stored}: the {@code c<N>} entries, or
         * null; {@code books}: the {@code book} entry, or null.
         */
        Recovering(Fd listener, List<StoreRecovery.Entry> stored, List<StoreRecovery.Entry> books) {
            java.time.Instant now = java.time.Instant.now();
            this.nowUnixNanos = now.getEpochSecond() * 1_000_000_000L + now.getNano();
            controlFds.add(Fd.adopt(listener.get())); // ControlStateCodec.LISTENER_FD; a view, never closed here
            if (books != null) {
                for (StoreRecovery.Entry e : books) {
                    this.books.addAll(e.fds());
                }
            }
            if (stored == null) {
                return;
            }
            for (StoreRecovery.Entry e : stored) {
                List<Fd> fds = e.fds();
                for (int i = 0; i < fds.size() - 1; i++) {
                    fds.get(i).close(); // two sockets under one name: the newest is kept
                }
                long number = e.name().number();
                connections.put(number, ControlStateCodec.connection(number, controlFds.size()));
                controlFds.add(fds.get(fds.size() - 1));
                maxConnection = Math.max(maxConnection, number);
            }
        }

        @Override
        public long nowUnixNanos() {
            return nowUnixNanos;
        }

        @Override
        public boolean call(long connection, PendingCall call, boolean answered) {
            ControlConnection.Builder cb = connections.get(connection);
            if (cb == null && !answered) {
                return false;
            }
            long task = call.getTask();
            maxTask = Math.max(maxTask, task);
            if (!tied.add(task)) {
                return true; // the same request kept twice (Bumblebee's downgrade: a pair and a flow): one call
            }
            PendingCall c = ControlStateCodec.stored(call, nowUnixNanos);
            if (answered) {
                detached.add(c); // answered before the crash: only the task goes on
            } else {
                cb.addCalls(c);
            }
            return true;
        }

        @Override
        public List<Fd> pairBooks() {
            return books;
        }

        @Override
        public void item(HandoffItem item) {
            items.add(item);
        }

        @Override
        public void drop(StoreRecovery.Entry entry, String why) {
            Log.warn("fd store: " + entry + ": " + why + "; its fds are closed and the entry removed");
            Fd.closeAll(entry.fds());
            // systemd holds copies of them until told: kept, a dropped pair's sockets stayed open and
            // its peers waited forever for bytes or an end (the soak's stalled Splicer flows)
            if (store != null && !store.fdStoreRemove(entry.name().toString())
                    && entry.name().kind() == FdStoreNames.Kind.SLOT) {
                stuck.add((int) entry.name().number()); // still stored: its slot stays taken
            }
            dropped++;
        }

        @Override
        public void resumed(String what, int n) {
            resumed.merge(what, n, Integer::sum);
        }

        /** The control item's state: the listener, the connections with their calls, the numbers to go on from. */
        ControlState controlState() {
            ControlState.Builder cs = ControlStateCodec.head(maxConnection + 1, maxTask + 1, 0, Map.of(), Map.of(), "", 0);
            for (ControlConnection.Builder cb : connections.values()) {
                cs.addConnections(cb);
            }
            if (!books.isEmpty() && !bookHandedOn) { // the daemon writes on into the first; the pairs are read
                bookHandedOn = true;
                cs.setFdPairBook(controlFds.size() + 1);
                controlFds.add(books.get(0));
                Fd.closeAll(books.subList(1, books.size())); // systemd keeps its copies (no slot names them any more)
            }
            return cs.addAllDetached(detached).build();
        }

        /** After a failure: every fd taken so far but the listener's. */
        void closeAll() {
            Fd.closeAll(controlFds.subList(1, controlFds.size()));
            Fd.closeAll(books);
            for (HandoffItem it : items) {
                Fd.closeAll(it.fds());
            }
        }
    }
}
