package warren.daemon;

import java.util.ArrayList;
import java.util.List;
import warren.daemon.control.Call;
import warren.fdpass.Fd;
import warren.fdpass.Memfd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.handoff.v1.StoredTask;
import warren.systemd.SdNotify;

/**
 * The writing side of {@link FdStoreRecovery}'s {@code t<TASK>} entries (fdstore.proto): a
 * task's fds and a sealed memfd with its {@code StoredTask}, in systemd's fd store. Storing a task
 * again supersedes the earlier description (a higher version; systemd keeps one copy of each fd).
 */
public final class TaskStore {
    private final SdNotify notify;
    private static final Log.Limited NOT_STORED = Log.every("fdstore.task_not_stored");

    private final String item;
    private long version;

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
            StoredTask.Builder st = StoredTask.newBuilder().setCall(call.describe()).setConnection(call.connection())
                    .setItem(item).setPayload(payload).setAnswered(answered)
                    .setVersion(version = Math.max(version + 1, System.currentTimeMillis() * 1000)); // newer than a predecessor's
            for (Fd fd : fds) {
                st.addInos(Native.fstat(fd.get())[3]);
            }
            if (!putDescribed(notify, "t" + task, fds, st.build().toByteArray())) {
                NOT_STORED.warn("fd store: " + what + " of task " + task + " not stored; a crash would end it");
            }
        } catch (Exception e) {
            NOT_STORED.warn("fd store: cannot store the " + what + " of task " + task + ": " + e.getMessage());
        }
    }

    /** Forgets a task (FDSTOREREMOVE), once its answer is queued. */
    public void remove(long task) {
        notify.fdStoreRemove("t" + task);
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
}
