package warren.bumblebee.nat;

import java.util.ArrayList;
import java.util.List;
import warren.bumblebee.env.Environment;
import warren.daemon.handoff.HandoffItem;
import warren.fdpass.Fd;
import warren.fdpass.libc.NativeIoException;
import warren.handoff.v1.BumblebeeState;

/**
 * A successor's side of Bumblebee's pre-copy, from the first chunk to the delta: the
 * predecessor's environment (namespace, TUN queues, listeners: loop 0's first chunk) and the
 * chunks not placed yet. Chunks are placed ({@link Nat#preAdopt}) as soon as the tables exist; the
 * handler builds them when the environment has come, unless this process runs more loops than the
 * predecessor had TUN queues: attaching queues (and steering) to the device the predecessor still
 * serves would send it packets nobody reads, so then the chunks are kept aside, their fds still
 * the receiver's (closed by it if the handoff fails), and placed at the pause. Placed flows whose
 * calls were pre-copied are tied to them and their tasks after each chunk ({@link #attach}); the
 * pause ties only the rest and what the delta brings ({@link #adoptDelta}). Main thread, before
 * the loops run.
 */
public final class PreAdoption {
    private record Chunk(BumblebeeState state, List<Fd> fds) {}

    private final int slots;
    private final List<Chunk> aside = new ArrayList<>();
    /** Flows placed whose call is not tied yet ({@link #attach}), until the delta ties them. */
    private final List<Flow> unattached = new ArrayList<>();
    private Environment env;
    private int queues;
    private int placed;
    private int chunks;
    private int attached;

    /** For a table of {@code slots} slots (bumblebee.slots, which must not change across an upgrade). */
    public PreAdoption(int slots) {
        this.slots = slots;
    }

    /**
     * One chunk's items: each table part ({@link FlowStore#ITEM}, pre_copy) kept for placing; the
     * environment taken (moved out of its fds) from the part that carries it, with every queue
     * from {@link FlowStore#QUEUES_ITEM}. Refuses another item, a second environment, flows before
     * the environment (unless {@code haveTables}: a warm-up's rehearsal on a daemon of its own),
     * a table of another size.
     */
    public void add(List<HandoffItem> items, boolean haveTables) throws com.google.protobuf.InvalidProtocolBufferException,
            NativeIoException {
        HandoffItem queueItem = null;
        List<Chunk> parts = new ArrayList<>();
        Chunk withEnv = null;
        for (HandoffItem it : items) {
            if (it.name().equals(FlowStore.QUEUES_ITEM)) {
                if (queueItem != null) {
                    throw new IllegalArgumentException("two " + FlowStore.QUEUES_ITEM + " items in a chunk");
                }
                queueItem = it;
                continue;
            }
            if (!it.name().equals(FlowStore.ITEM)) {
                throw new IllegalArgumentException("unknown pre-copied item " + it.name());
            }
            BumblebeeState st = BumblebeeState.parseFrom(it.payload());
            if (!st.getPreCopy()) {
                throw new IllegalArgumentException("a pre-copied Bumblebee table without pre_copy");
            }
            if (st.getSlots() != slots) {
                throw new IllegalArgumentException("the running table has " + Integer.toUnsignedLong(st.getSlots())
                        + " slots, bumblebee.slots here is " + slots + ": keep it while upgrading in place");
            }
            Chunk c = new Chunk(st, it.fds());
            if (st.hasFdNetns() || st.hasFdTun() || st.hasFdListen4() || st.hasFdListen6()) {
                if (env != null || withEnv != null) {
                    throw new IllegalArgumentException("the environment was pre-copied twice");
                }
                withEnv = c;
            }
            parts.add(c);
        }
        if (withEnv != null) {
            env = environment(withEnv, queueItem);
        } else if (queueItem != null) {
            throw new IllegalArgumentException(FlowStore.QUEUES_ITEM + " without the environment");
        }
        if (env == null && !parts.isEmpty() && !haveTables) {
            throw new IllegalArgumentException("pre-copied flows before the environment");
        }
        aside.addAll(parts);
        chunks++;
    }

    /** The predecessor's namespace, queues and listeners, moved out of a chunk's fds (checked first). */
    private static Environment environment(Chunk c, HandoffItem queueItem) throws NativeIoException {
        BumblebeeState st = c.state();
        List<Fd> fds = c.fds();
        int[] at = {st.getFdNetns(), st.getFdTun(), st.getFdListen4(), st.getFdListen6()};
        if (!st.hasFdNetns() || !st.hasFdTun() || !st.hasFdListen4() || !st.hasFdListen6()) {
            throw new IllegalArgumentException("a pre-copied environment without its namespace, TUN or listeners");
        }
        java.util.BitSet used = new java.util.BitSet();
        for (int i : at) {
            long u = Integer.toUnsignedLong(i);
            if (u >= fds.size() || used.get((int) u) || !fds.get((int) u).isOpen()) {
                throw new IllegalArgumentException("environment fd index " + u + " of " + fds.size() + " (or twice)");
            }
            used.set((int) u);
        }
        List<Fd> queues = new ArrayList<>();
        queues.add(fds.get(st.getFdTun()).transfer());
        if (queueItem != null) {
            List<Fd> all = queueItem.fds();
            for (int k = 1; k < all.size(); k++) {
                queues.add(all.get(k).transfer());
            }
            if (!all.isEmpty()) {
                all.get(0).close(); // queue 0 came as fd_tun too
            }
        }
        return Environment.adopt(fds.get(st.getFdNetns()).transfer(), queues, fds.get(st.getFdListen4()).transfer(),
                fds.get(st.getFdListen6()).transfer(), st.getMtu(), st.getSlots());
    }

    /** The predecessor's environment (null until loop 0's first chunk came). */
    public Environment environment() {
        return env;
    }

    /** Its number of TUN queues. */
    public int queues() {
        return env == null ? 0 : env.queues();
    }

    /** Places every chunk kept so far into the tables of {@code nats} ({@link Nat#preAdopt}). */
    public void placeInto(Nat[] nats) throws NativeIoException {
        while (!aside.isEmpty()) {
            Chunk c = aside.get(0);
            placed += Nat.preAdopt(nats, c.state(), c.fds(), unattached);
            aside.remove(0);
        }
    }

    /**
     * After each chunk's placement, before the pause: the placed flows whose calls were
     * pre-copied get them and their tasks now ({@code calls}: ControlServer.preCopiedCall;
     * {@code attach}: ControlServer.preAdoptTask), so the pause does not ({@link Nat#preAttach}).
     * Returns the flows tied by this call.
     */
    public int attach(java.util.function.LongFunction<warren.daemon.control.Call> calls,
            java.util.function.BiConsumer<warren.daemon.control.Call, warren.daemon.task.Task> attach) {
        int n = Nat.preAttach(unattached, calls, attach);
        attached += n;
        return n;
    }

    /**
     * The pause: places what was kept aside ({@link #placeInto}: nothing when the tables were
     * built during the pre-copy), then applies the delta ({@link Nat#adoptDelta}), visiting the
     * delta's flows and those still without a call, not the table; {@code tasked} says whether a
     * call tied in the pre-copy still has its task (the state at the pause did not name it gone).
     * Returns the flows and relay pairs visited.
     */
    public long adoptDelta(Nat[] nats, List<HandoffItem> items,
            java.util.function.LongFunction<warren.daemon.control.Call> calls,
            java.util.function.BiConsumer<warren.daemon.control.Call, warren.daemon.task.Task> adoptTask,
            java.util.function.Predicate<warren.daemon.control.Call> tasked) throws Exception {
        placeInto(nats);
        return Nat.adoptDelta(nats, items, calls, adoptTask, unattached, tasked);
    }

    /** Flows tied to their calls in the pre-copy so far. */
    public int attached() {
        return attached;
    }

    /** Placed flows still without their call (tied at the pause). */
    public int unattached() {
        return unattached.size();
    }

    /** Flows placed so far. */
    public int placed() {
        return placed;
    }

    /** Chunks received so far. */
    public int chunks() {
        return chunks;
    }
}
