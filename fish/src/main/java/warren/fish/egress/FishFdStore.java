package warren.fish.egress;

import java.util.ArrayList;
import java.util.List;
import warren.daemon.TaskStore;
import warren.daemon.loop.EventLoop;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fish.conntrack.Ctnetlink;
import warren.handoff.v1.FishState;
import warren.handoff.v1.StoredTasks;
import warren.linux.net.Netns;
import warren.systemd.SdNotify;

/**
 * Crash survival through systemd's fd store (fdstore.proto's StoredTask, item {@link #ITEM}):
 * fish0's queues once, as extras named by queue index ({@link #queueName}: {@link #TUN} for
 * queue 0, as before there were queues), and each client's socket with its description while it lives
 * ({@link #put} again once its identity is known). After a crash {@link #recover} rebuilds a
 * FishState from what was stored and the egress namespace's conntrack.
 */
final class FishFdStore {
    /** The fd store item name of Fish's clients. */
    static final String ITEM = "fish.egress";
    /** The fd store name of fish0's fd. */
    static final String TUN = warren.daemon.FdStoreNames.indexedExtra("tun", 0);

    private final TaskStore store;
    /** The control loop: a client on another loop is stored and forgotten there, in the order asked. */
    private final EventLoop control;

    /**
     * Keeps {@code queues} in the fd store now (stored once: a second store of the same fd is a
     * no-op), and clients as told.
     */
    FishFdStore(SdNotify notify, Fd[] queues, EventLoop control) {
        this.store = new TaskStore(notify, ITEM);
        this.control = control;
        for (int k = 0; k < queues.length; k++) {
            notify.fdStore(queueName(k), List.of(queues[k]));
        }
    }

    /** The fd store name of fish0's queue {@code k}. */
    static String queueName(int k) {
        return warren.daemon.FdStoreNames.indexedExtra("tun", k);
    }

    /** Stores (again) a client: its socket (borrowed) and its description. On the client's loop. */
    void put(Client c) {
        if (c.call.task() == null) {
            return;
        }
        com.google.protobuf.ByteString d = FishStateCodec.storedClient(c); // read here, where the client lives
        if (control.inLoop() || !control.started()) {
            store.put(c.call, List.of(Fd.adopt(c.fd)), d, false, "client");
            return;
        }
        // stored by the control loop: a copy of the socket, since the client may end (and close it) meanwhile
        Fd copy;
        try {
            copy = Fd.adopt(Native.fcntl(c.fd, Native.F_DUPFD_CLOEXEC, 0));
        } catch (warren.fdpass.libc.NativeIoException e) {
            warren.daemon.Log.warn("tenant '" + c.tenant + "' not kept in the fd store: " + e.getMessage());
            return;
        }
        control.execute(() -> {
            try (copy) {
                store.put(c.call, List.of(copy), d, false, "client");
            }
        });
    }

    /** Forgets an ended client. On the client's loop. */
    void remove(Client c) {
        if (c.call.task() != null) {
            long task = c.call.task().number();
            onControl(() -> store.remove(task));
        }
    }

    private void onControl(Runnable r) {
        if (control.inLoop() || !control.started()) {
            r.run();
        } else {
            control.execute(r);
        }
    }

    /**
     * Fish's state after a crash: what was stored, and the flows conntrack of {@code netnsPath}
     * still has; one FishState per stored queue in index order (each naming its queue's fd among
     * the item's), the clients in the first.
     */
    static List<FishState> recover(StoredTasks stored, String netnsPath) throws Exception {
        List<Ctnetlink.Entry> entries = Netns.call(EgressNamespace.require(netnsPath), () -> {
            try (Ctnetlink ct = new Ctnetlink()) {
                List<Ctnetlink.Entry> all = new ArrayList<>(ct.dump(Native.AF_INET));
                all.addAll(ct.dump(Native.AF_INET6));
                return all;
            }
        });
        List<FishState> out = new ArrayList<>();
        out.add(FishStateCodec.fromFdStore(stored, ITEM, TUN, entries));
        for (int k = 1; stored.getExtrasList().contains(queueName(k)); k++) {
            out.add(FishState.newBuilder().setFormat(FishStateCodec.FORMAT)
                    .setFdTun(stored.getExtrasList().indexOf(queueName(k))).build());
        }
        return out;
    }
}
