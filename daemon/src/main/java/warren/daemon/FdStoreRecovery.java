package warren.daemon;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import jnr.ffi.Pointer;
import warren.daemon.config.Config;
import warren.daemon.handoff.HandoffItem;
import warren.daemon.handoff.Handoffable;
import warren.fdpass.Fd;
import warren.fdpass.Memfd;
import warren.fdpass.SeqpacketListener;
import warren.fdpass.libc.Native;
import warren.handoff.v1.ControlConnection;
import warren.handoff.v1.ControlState;
import warren.handoff.v1.RelayDirection;
import warren.handoff.v1.RelayPair;
import warren.handoff.v1.RelayState;
import warren.handoff.v1.StoredPair;
import warren.systemd.ListenFds;

/**
 * Restart after a crash under systemd: what the crashed process kept in the fd store
 * (fdstore.proto) comes back in LISTEN_FDS, and is turned into the same items an upgrade hands
 * over, so the same code rebuilds the daemon. Each pair resumes with the bytes its pinned pipes
 * held (counted from the restart on: {@code counts_partial}); each control connection is served
 * again and gets its pairs' final answers. A pair whose connection is gone is closed (nobody is
 * left to hand its sockets back to), and said so in the log.
 */
final class FdStoreRecovery {
    private static final long FIONREAD = 0x541B;

    private FdStoreRecovery() {}

    /**
     * A pair's fds as systemd returned them (any order) -> {StoredPair, [a, b, a->b r, a->b w,
     * b->a r, b->a w]}; the description memfd is closed (systemd keeps its copy).
     */
    private static Object[] sort(List<Fd> g) throws Exception {
        StoredPair sp = null;
        for (Fd f : g) {
            if ((Native.fstat(f.get())[0] & 0xF000) == 0x8000) { // S_IFREG: the memfd
                sp = StoredPair.parseFrom(Memfd.readSealed(f, 1 << 20));
            }
        }
        if (sp == null) {
            throw new IllegalArgumentException("no description among " + g.size() + " fds");
        }
        Fd[] out = new Fd[6];
        for (Fd f : g) {
            long[] st = Native.fstat(f.get());
            int type = (int) (st[0] & 0xF000);
            int slot = -1;
            if (type == Native.S_IFSOCK) {
                slot = st[3] == sp.getInoA() ? 0 : st[3] == sp.getInoB() ? 1 : -1;
            } else if (type == Native.S_IFIFO) {
                boolean writeEnd = (Native.fcntl(f.get(), Native.F_GETFL, 0) & 3) == 1; // O_WRONLY
                int base = st[3] == sp.getInoPipeAToB() ? 2 : st[3] == sp.getInoPipeBToA() ? 4 : -1;
                slot = base < 0 ? -1 : base + (writeEnd ? 1 : 0);
            } else if (type == 0x8000) {
                f.close();
                continue;
            }
            if (slot < 0 || out[slot] != null) {
                throw new IllegalArgumentException("an fd that is not the pair's (mode " + Long.toOctalString(st[0]) + ")");
            }
            out[slot] = f;
        }
        List<Fd> ordered = new ArrayList<>(6);
        for (int i = 0; i < 6; i++) {
            if (out[i] == null) {
                throw new IllegalArgumentException("fd " + i + " of 6 missing");
            }
            ordered.add(out[i]);
        }
        return new Object[] {sp, ordered};
    }

    /** {@code fds} in the order of {@code inos}, or null if they do not match. */
    private static List<Fd> byInode(List<Fd> fds, List<Long> inos) throws Exception {
        if (fds.size() != inos.size()) {
            return null;
        }
        Fd[] out = new Fd[fds.size()];
        for (Fd f : fds) {
            int i = inos.indexOf(Native.fstat(f.get())[3]);
            if (i < 0 || out[i] != null) {
                return null;
            }
            out[i] = f;
        }
        return new ArrayList<>(List.of(out));
    }

    /** True if {@code fds} holds anything of a crashed predecessor. */
    static boolean present(List<ListenFds.Named> fds) {
        for (ListenFds.Named n : fds) {
            if (n.name().matches("[cpt][0-9]+") || n.name().startsWith("x.")) {
                return true;
            }
        }
        return false;
    }

    /** Builds the daemon from the store (serving once this returns); closes what it cannot use. */
    static Daemon recover(DaemonSpec spec, Config config, SeqpacketListener listener, List<ListenFds.Named> named)
            throws Exception {
        Map<Long, Fd> conns = new TreeMap<>();
        Map<Long, List<Fd>> pairs = new LinkedHashMap<>();
        Map<Long, List<Fd>> tasks = new LinkedHashMap<>();
        Map<String, Fd> extras = new LinkedHashMap<>();
        for (ListenFds.Named n : named) {
            if (n.name().matches("c[0-9]+")) {
                conns.put(Long.parseLong(n.name().substring(1)), n.fd());
            } else if (n.name().matches("p[0-9]+")) {
                pairs.computeIfAbsent(Long.parseLong(n.name().substring(1)), k -> new ArrayList<>()).add(n.fd());
            } else if (n.name().matches("t[0-9]+")) {
                tasks.computeIfAbsent(Long.parseLong(n.name().substring(1)), k -> new ArrayList<>()).add(n.fd());
            } else if (n.name().startsWith("x.")) {
                extras.put(n.name(), n.fd());
            }
        }
        List<Fd> controlFds = new ArrayList<>();
        controlFds.add(listener.fd());
        ControlState.Builder cs = ControlState.newBuilder().setFormat(1).setFdListener(0);
        Map<Long, ControlConnection.Builder> byNumber = new TreeMap<>();
        for (Map.Entry<Long, Fd> c : conns.entrySet()) {
            byNumber.put(c.getKey(), ControlConnection.newBuilder().setNumber(c.getKey()).setFd(controlFds.size()));
            controlFds.add(c.getValue());
        }
        Map<String, RelayState.Builder> relays = new LinkedHashMap<>();
        Map<String, List<Fd>> relayFds = new LinkedHashMap<>();
        long maxTask = 0;
        int closed = 0;
        java.util.Set<Long> callsAdded = new java.util.HashSet<>();
        long nowUnix = java.time.Instant.now().getEpochSecond() * 1_000_000_000L + java.time.Instant.now().getNano();
        Pointer n = Native.allocate(8);
        for (Map.Entry<Long, List<Fd>> e : pairs.entrySet()) {
            List<Fd> g;
            StoredPair sp;
            try {
                Object[] sorted = sort(e.getValue());
                sp = (StoredPair) sorted[0];
                @SuppressWarnings("unchecked")
                List<Fd> ordered = (List<Fd>) sorted[1];
                g = ordered;
            } catch (Exception x) {
                Log.warn("fd store: p" + e.getKey() + " unusable (" + x.getMessage() + "); its fds are closed");
                Fd.closeAll(e.getValue());
                closed++;
                continue;
            }
            ControlConnection.Builder cb = byNumber.get(sp.getConnection());
            if (cb == null) {
                Log.warn("fd store: the pair of task " + e.getKey() + " belonged to connection " + sp.getConnection()
                        + ", which was gone before the crash; its sockets are closed");
                Fd.closeAll(g);
                closed++;
                continue;
            }
            long task = sp.getCall().getTask();
            maxTask = Math.max(maxTask, task);
            callsAdded.add(task);
            cb.addCalls(sp.getCall().toBuilder().setRef(task).setAgeNanos(Math.max(0, nowUnix - sp.getCall().getStartUnixNanos())));
            List<Fd> rf = relayFds.computeIfAbsent(sp.getItem(), k -> new ArrayList<>());
            RelayPair.Builder rp = sp.getPair().toBuilder().setCallRef(task).setCountsPartial(true)
                    .setAgeNanos(Math.max(0, nowUnix - sp.getPair().getStartUnixNanos()));
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
            relays.computeIfAbsent(sp.getItem(), k -> RelayState.newBuilder().setFormat(1)).addPairs(rp);
        }
        // other daemons' tasks (t<TASK>: one fd and its newest StoredTask), grouped by item
        Map<String, warren.handoff.v1.StoredTasks.Builder> stored = new LinkedHashMap<>();
        Map<String, List<Fd>> storedFds = new LinkedHashMap<>();
        for (Map.Entry<Long, List<Fd>> e : tasks.entrySet()) {
            warren.handoff.v1.StoredTask best = null;
            List<Fd> taskFds = new ArrayList<>();
            for (Fd f : e.getValue()) {
                if ((Native.fstat(f.get())[0] & 0xF000) == 0x8000) { // a description
                    try {
                        warren.handoff.v1.StoredTask st = warren.handoff.v1.StoredTask.parseFrom(Memfd.readSealed(f, 1 << 20));
                        if (best == null || st.getVersion() > best.getVersion()) {
                            best = st;
                        }
                    } catch (Exception x) {
                        Log.warn("fd store: t" + e.getKey() + ": an unreadable description (" + x.getMessage() + ")");
                    }
                    f.close();
                } else {
                    taskFds.add(f);
                }
            }
            ControlConnection.Builder cb = best == null ? null : byNumber.get(best.getConnection());
            if (best != null && best.getInosCount() > 0) {
                taskFds = byInode(taskFds, best.getInosList());
            }
            if (taskFds == null || taskFds.isEmpty() || (cb == null && (best == null || !best.getAnswered()))) {
                Log.warn("fd store: the task " + e.getKey() + (best == null ? " has no description"
                        : taskFds == null || taskFds.isEmpty() ? " has not its fds"
                        : "'s connection " + best.getConnection() + " was gone") + "; dropped");
                Fd.closeAll(e.getValue());
                closed++;
                continue;
            }
            long task = best.getCall().getTask();
            maxTask = Math.max(maxTask, task);
            warren.handoff.v1.PendingCall call = best.getCall().toBuilder().setRef(task)
                    .setAgeNanos(Math.max(0, nowUnix - best.getCall().getStartUnixNanos())).build();
            if (!callsAdded.add(task)) {
                // the same request as a relay pair of its own (Bumblebee's downgrade): one call
            } else if (best.getAnswered()) {
                cs.addDetached(call); // answered before the crash: only the task goes on
            } else {
                cb.addCalls(call);
            }
            stored.computeIfAbsent(best.getItem(), k -> warren.handoff.v1.StoredTasks.newBuilder()).addTasks(best)
                    .addFdCounts(taskFds.size());
            storedFds.computeIfAbsent(best.getItem(), k -> new ArrayList<>()).addAll(taskFds);
        }
        for (ControlConnection.Builder cb : byNumber.values()) {
            cs.addConnections(cb);
        }
        long maxConn = conns.isEmpty() ? 0 : ((TreeMap<Long, Fd>) conns).lastKey();
        cs.setNextClient(maxConn + 1).setNextTask(maxTask + 1);
        List<HandoffItem> items = new ArrayList<>();
        items.add(new HandoffItem("control", cs.build().toByteArray(), controlFds));
        for (Map.Entry<String, RelayState.Builder> r : relays.entrySet()) {
            items.add(new HandoffItem(r.getKey(), r.getValue().build().toByteArray(), relayFds.get(r.getKey())));
        }
        if (!extras.isEmpty() || !stored.isEmpty()) {
            // one item "fdstore" for the handler: StoredTasks with the extras' names and every task
            warren.handoff.v1.StoredTasks.Builder all = warren.handoff.v1.StoredTasks.newBuilder().addAllExtras(extras.keySet());
            List<Fd> fds = new ArrayList<>(extras.values());
            for (Map.Entry<String, warren.handoff.v1.StoredTasks.Builder> t : stored.entrySet()) {
                all.addAllTasks(t.getValue().getTasksList()).addAllFdCounts(t.getValue().getFdCountsList());
                fds.addAll(storedFds.get(t.getKey()));
            }
            items.add(new HandoffItem("fdstore", all.build().toByteArray(), fds));
        }
        Daemon[] made = new Daemon[1];
        Handoffable[] handler = new Handoffable[1];
        try {
            Upgrade.adoptAll(spec, config, Upgrade.STATE_VERSIONS.get(0), items, made, handler);
        } catch (Exception e) {
            if (made[0] != null) {
                made[0].discard();
            }
            for (HandoffItem it : items) {
                Fd.closeAll(it.fds());
            }
            throw e;
        }
        made[0].server().start();
        handler[0].startAdopted();
        int resumed = 0;
        for (RelayState.Builder r : relays.values()) {
            resumed += r.getPairsCount();
        }
        int others = 0;
        for (warren.handoff.v1.StoredTasks.Builder t : stored.values()) {
            others += t.getTasksCount();
        }
        Log.info("recovered after a crash from systemd's fd store: " + conns.size() + " control connections, "
                + resumed + " pairs, " + others + " other tasks" + (closed > 0 ? ", " + closed + " dropped" : ""));
        return made[0];
    }
}
