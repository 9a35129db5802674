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

    /** True if {@code fds} holds anything of a crashed predecessor. */
    static boolean present(List<ListenFds.Named> fds) {
        for (ListenFds.Named n : fds) {
            if (n.name().matches("[cp][0-9]+")) {
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
        for (ListenFds.Named n : named) {
            if (n.name().matches("c[0-9]+")) {
                conns.put(Long.parseLong(n.name().substring(1)), n.fd());
            } else if (n.name().matches("p[0-9]+")) {
                pairs.computeIfAbsent(Long.parseLong(n.name().substring(1)), k -> new ArrayList<>()).add(n.fd());
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
                    if (Native.LIBC.ioctl(g.get(dir.getPipeR()).get(), FIONREAD, n) == 0) {
                        inPipe = n.getInt(0);
                    }
                    dir.setPipeR(base + dir.getPipeR()).setPipeW(base + dir.getPipeW());
                }
                dir.setRead(inPipe).setWritten(0); // counted from here; the pipe's bytes still go out
            }
            rf.addAll(g);
            relays.computeIfAbsent(sp.getItem(), k -> RelayState.newBuilder().setFormat(1)).addPairs(rp);
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
        Log.info("recovered after a crash from systemd's fd store: " + conns.size() + " control connections, "
                + resumed + " pairs resumed" + (closed > 0 ? ", " + closed + " closed" : ""));
        return made[0];
    }
}
