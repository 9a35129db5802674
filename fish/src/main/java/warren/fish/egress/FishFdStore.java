package warren.fish.egress;

import java.util.ArrayList;
import java.util.List;
import warren.daemon.TaskStore;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fish.conntrack.Ctnetlink;
import warren.handoff.v1.FishState;
import warren.handoff.v1.StoredTasks;
import warren.linux.net.Netns;
import warren.systemd.SdNotify;

/**
 * Crash survival through systemd's fd store (fdstore.proto's StoredTask, item {@link #ITEM}): the
 * TUN once, as extra {@link #TUN}, and each client's socket with its description while it lives
 * ({@link #put} again once its identity is known). After a crash {@link #recover} rebuilds a
 * FishState from what was stored and the egress namespace's conntrack.
 */
final class FishFdStore {
    /** The fd store item name of Fish's clients. */
    static final String ITEM = "fish.egress";
    /** The fd store name of fish0's fd. */
    static final String TUN = "x.tun";

    private final TaskStore store;

    /** Keeps {@code tun} in the fd store now (stored once: a second store of the same fd is a no-op), and clients as told. */
    FishFdStore(SdNotify notify, Fd tun) {
        this.store = new TaskStore(notify, ITEM);
        notify.fdStore(TUN, List.of(tun));
    }

    /** Stores (again) a client: its socket (borrowed) and its description. */
    void put(Client c) {
        if (c.call.task() == null) {
            return;
        }
        store.put(c.call, List.of(Fd.adopt(c.fd)), FishStateCodec.storedClient(c), false, "client");
    }

    /** Forgets an ended client. */
    void remove(Client c) {
        if (c.call.task() != null) {
            store.remove(c.call.task().number());
        }
    }

    /** Fish's state after a crash: what was stored, and the flows conntrack of {@code netnsPath} still has. */
    static FishState recover(StoredTasks stored, String netnsPath) throws Exception {
        List<Ctnetlink.Entry> entries = Netns.call(EgressNamespace.require(netnsPath), () -> {
            try (Ctnetlink ct = new Ctnetlink()) {
                List<Ctnetlink.Entry> all = new ArrayList<>(ct.dump(Native.AF_INET));
                all.addAll(ct.dump(Native.AF_INET6));
                return all;
            }
        });
        return FishStateCodec.fromFdStore(stored, ITEM, TUN, entries);
    }
}
