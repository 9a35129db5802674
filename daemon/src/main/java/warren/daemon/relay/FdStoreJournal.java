package warren.daemon.relay;

import java.util.ArrayList;
import java.util.List;
import warren.daemon.Log;
import warren.daemon.task.TaskRegistry;
import warren.fdpass.Fd;
import warren.handoff.v1.StoredPair;
import warren.systemd.SdNotify;

/**
 * Keeps each live pair in systemd's fd store (fdstore.proto): at start its two sockets, its two
 * pinned pipes and a sealed memfd describing it, under the name {@code p<task>}; removed once its
 * answer is queued. After a crash systemd hands them back and the daemon resumes the pair with
 * whatever its pipes held. One sd_notify per pair start and end; nothing per byte.
 */
public final class FdStoreJournal implements Relay.Journal {
    private final SdNotify notify;
    private final Relay relay;
    private final String item;
    private final java.util.concurrent.Executor removeOn;
    private volatile boolean warned;

    public FdStoreJournal(SdNotify notify, Relay relay, String item) {
        this(notify, relay, item, Runnable::run);
    }

    /**
     * For a relay on another loop than the control loop: a pair's entry is removed through
     * {@code removeOn} (the control loop's execute), which runs it after the pair's answer, posted
     * there before, has been queued: a crash in between recovers the pair, never loses it.
     */
    public FdStoreJournal(SdNotify notify, Relay relay, String item, java.util.concurrent.Executor removeOn) {
        this.notify = notify;
        this.relay = relay;
        this.item = item;
        this.removeOn = removeOn;
    }

    @Override
    public void started(Pair p) {
        TaskRegistry.Record r = p.call.task();
        List<Fd> fds = new ArrayList<>(6);
        StoredPair sp = StoredPair.newBuilder().setPair(relay.pairState(p, fds, System.nanoTime()))
                .setCall(p.call.describe()).setConnection(p.call.connection()).setItem(item)
                .setInoA(ino(fds.get(0))).setInoB(ino(fds.get(1)))
                .setInoPipeAToB(fds.size() > 2 ? ino(fds.get(2)) : 0).setInoPipeBToA(fds.size() > 4 ? ino(fds.get(4)) : 0)
                .build();
        try {
            if (!warren.daemon.TaskStore.putDescribed(notify, "p" + r.number(), fds, sp.toByteArray()) && !warned) {
                warned = true;
                Log.warn("fd store: pair of task " + r.number() + " not stored (FileDescriptorStoreMax= full?);"
                        + " a crash would lose such pairs");
            }
        } catch (Exception e) {
            Log.warn("fd store: cannot describe the pair of task " + r.number() + ": " + e.getMessage());
        }
    }

    private static long ino(Fd fd) {
        try {
            return warren.fdpass.libc.Native.fstat(fd.get())[3];
        } catch (warren.fdpass.libc.NativeIoException e) {
            return 0;
        }
    }

    @Override
    public void ended(Pair p) {
        long task = p.taskNumber();
        if (task != 0) {
            removeOn.execute(() -> notify.fdStoreRemove("p" + task));
        }
    }
}
