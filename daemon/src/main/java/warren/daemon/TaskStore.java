package warren.daemon;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import warren.daemon.control.Call;
import warren.daemon.handoff.HandoffItem;
import warren.fdpass.Fd;
import warren.fdpass.Memfd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.handoff.v1.StoredTask;
import warren.handoff.v1.StoredTasks;
import warren.systemd.SdNotify;

/**
 * Other daemons' tasks in systemd's fd store (fdstore.proto), both ways. Writing: a task's fds and
 * a sealed memfd with its {@code StoredTask} under {@code t<TASK>} ({@link FdStoreNames#task});
 * storing a task again supersedes the earlier description (a higher version; systemd keeps one
 * copy of each fd). Reading after a crash ({@link #RECOVERY}): the tasks and the handler's extras
 * ({@code x.<NAME>}) become one item {@link #RECOVERED_ITEM}, a {@code StoredTasks}.
 */
public final class TaskStore {
    private final SdNotify notify;
    private static final Log.Limited NOT_STORED = Log.every("fdstore.task_not_stored");

    private final String item;
    private long version;
    /** Tasks this process has stored and not removed (any thread). */
    private final java.util.Set<Long> stored = java.util.concurrent.ConcurrentHashMap.newKeySet();

    /** @param item the handler's item the stored tasks belong to, e.g. "fish.egress" */
    public TaskStore(SdNotify notify, String item) {
        this.notify = notify;
        this.item = item;
    }

    /**
     * Stores (again) the task of {@code call} with {@code fds} (borrowed) and the handler's own
     * description {@code payload}; {@code answered}: no answer is due any more. {@code what}
     * names the task in a log line if it cannot be stored.
     */
    public void put(Call call, List<Fd> fds, com.google.protobuf.ByteString payload, boolean answered, String what) {
        long task = call.task().number();
        try {
            // checked as a task first goes in (a task stored again only refreshes its description);
            // its fds, this description and one earlier version's (a task stored again keeps it)
            String refused = stored.contains(task) ? null : call.fdStoreRefusal(fds.size() + 2);
            if (refused != null) {
                NOT_STORED.warn("fd store: " + what + " of task " + task + " not stored: " + refused
                        + "; a crash would end it (docs/systemd.md, \"Size the store\")");
                return;
            }
            StoredTask.Builder st = StoredTask.newBuilder().setCall(call.describe()).setConnection(call.connection())
                    .setItem(item).setPayload(payload).setAnswered(answered)
                    .setVersion(version = Math.max(version + 1, System.currentTimeMillis() * 1000)); // newer than a predecessor's
            for (Fd fd : fds) {
                st.addInos(Native.fstat(fd.get())[3]);
            }
            if (putDescribed(notify, FdStoreNames.task(task), fds, st.build().toByteArray())) {
                stored.add(task);
            } else {
                NOT_STORED.warn("fd store: " + what + " of task " + task + " not stored; a crash would end it");
            }
        } catch (Exception e) {
            NOT_STORED.warn("fd store: cannot store the " + what + " of task " + task + ": " + e.getMessage());
        }
    }

    /** Forgets a task (FDSTOREREMOVE), once its answer is queued. */
    public void remove(long task) {
        stored.remove(task);
        notify.fdStoreRemove(FdStoreNames.task(task));
    }

    /** {@code fds} (borrowed) and a sealed memfd holding {@code description}, under {@code name}. */
    public static boolean putDescribed(SdNotify notify, String name, List<Fd> fds, byte[] description)
            throws NativeIoException, warren.fdpass.FdPassException {
        try (Fd memfd = Memfd.createSealed("warren-" + name, description)) {
            List<Fd> all = new ArrayList<>(fds);
            all.add(memfd);
            return notify.fdStore(name, all);
        }
    }

    // ---- after a crash

    /** The item the handler is given after a crash: StoredTasks, fds = the extras (in order), then each task's. */
    public static final String RECOVERED_ITEM = "fdstore";

    /**
     * Reads {@code t<TASK>} and {@code x.<NAME>} entries back into one item {@link #RECOVERED_ITEM}:
     * StoredTasks.extras names each extra fd (an entry of several fds: its name once per fd).
     */
    public static final StoreRecovery RECOVERY = new StoreRecovery() {
        @Override
        public Set<FdStoreNames.Kind> kinds() {
            return Set.of(FdStoreNames.Kind.TASK, FdStoreNames.Kind.EXTRA);
        }

        @Override
        public void recover(List<Entry> entries, Into into) throws Exception {
            recoverTasks(entries, into);
        }
    };

    private static void recoverTasks(List<StoreRecovery.Entry> entries, StoreRecovery.Into into) throws Exception {
        List<String> extras = new ArrayList<>();
        List<Fd> extraFds = new ArrayList<>();
        Map<String, StoredTasks.Builder> byItem = new LinkedHashMap<>();
        Map<String, List<Fd>> fdsByItem = new LinkedHashMap<>();
        int tasks = 0;
        for (StoreRecovery.Entry e : entries) {
            if (e.name().kind() == FdStoreNames.Kind.EXTRA) {
                for (Fd f : e.fds()) { // several fds under one name: the name once per fd, in systemd's order
                    extras.add(e.name().toString());
                    extraFds.add(f);
                }
                continue;
            }
            StoredTask best = null;
            List<Fd> taskFds = new ArrayList<>();
            String unreadable = null;
            for (Fd f : e.fds()) {
                if ((Native.fstat(f.get())[0] & 0xF000) == 0x8000) { // S_IFREG: a description
                    try {
                        StoredTask st = StoredTask.parseFrom(Memfd.readSealed(f, 1 << 20));
                        if (best == null || st.getVersion() > best.getVersion()) {
                            best = st;
                        }
                    } catch (Exception x) {
                        unreadable = x.getMessage();
                    }
                    f.close(); // systemd keeps its copy
                } else {
                    taskFds.add(f);
                }
            }
            if (best == null) {
                into.drop(e, unreadable == null ? "no description" : "an unreadable description (" + unreadable + ")");
                continue;
            }
            if (best.getInosCount() > 0) {
                taskFds = byInode(taskFds, best.getInosList());
            }
            if (taskFds == null || taskFds.isEmpty()) {
                into.drop(e, "not the fds its description names");
                continue;
            }
            if (!into.call(best.getConnection(), best.getCall(), best.getAnswered())) {
                into.drop(e, "its connection " + best.getConnection() + " was gone before the crash");
                continue;
            }
            byItem.computeIfAbsent(best.getItem(), k -> StoredTasks.newBuilder()).addTasks(best).addFdCounts(taskFds.size());
            fdsByItem.computeIfAbsent(best.getItem(), k -> new ArrayList<>()).addAll(taskFds);
            tasks++;
        }
        into.resumed("other tasks", tasks);
        if (extras.isEmpty() && byItem.isEmpty()) {
            return;
        }
        StoredTasks.Builder all = StoredTasks.newBuilder().addAllExtras(extras);
        List<Fd> fds = new ArrayList<>(extraFds);
        for (Map.Entry<String, StoredTasks.Builder> t : byItem.entrySet()) {
            all.addAllTasks(t.getValue().getTasksList()).addAllFdCounts(t.getValue().getFdCountsList());
            fds.addAll(fdsByItem.get(t.getKey()));
        }
        into.item(new HandoffItem(RECOVERED_ITEM, all.build().toByteArray(), fds));
    }

    /** {@code fds} in the order of {@code inos}, or null if they do not match. */
    private static List<Fd> byInode(List<Fd> fds, List<Long> inos) throws NativeIoException {
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
}
