package warren.daemon.handoff;

import java.util.List;
import java.util.function.BiConsumer;
import java.util.function.LongFunction;
import java.util.function.ToLongFunction;
import warren.daemon.control.Call;
import warren.daemon.task.Task;

/**
 * A request handler whose state can move to a successor process (upgrade in place). The daemon
 * plumbing pauses and hands over the control server itself; this is the handler's part.
 *
 * <p>With N event loops ({@code threads}) the upgrade coordinator drives a handler loop by loop,
 * through the {@code *Loop} methods, each called on the loop it names:
 * <ol>
 *   <li>{@link #pauseLoop} on every loop: from then on nothing of the handler's state there moves
 *       (ends its tasks posted to the control loop before have arrived when step 2 runs);</li>
 *   <li>on loop 0, in one go: the control server pauses and is exported (which numbers the calls),
 *       then {@link #exportLoop}(0);</li>
 *   <li>{@link #exportLoop} on loops 1..N-1;</li>
 *   <li>after a failure {@link #resumeLoop} on every loop (loop 0 last, with the control server);
 *       after the commit {@link #abandonLoop} on every loop (loop 0 last).</li>
 * </ol>
 * The defaults keep a single-loop handler as it was: everything happens on loop 0, in
 * {@link #pauseAndExport}, {@link #resume} and {@link #abandon}, in the same loop task as the
 * control server's part. {@link #adopt} and {@link #startAdopted} run before the successor's
 * loops do, on its main thread: the handler may touch every loop's state then.
 */
public interface Handoffable {
    /** The state layout this build writes. */
    int stateVersion();

    /** The layouts this build can read. */
    List<Integer> acceptsStateVersions();

    /** Pauses every task at a clean point and returns its items (fds borrowed). Loop thread. */
    List<HandoffItem> pauseAndExport(ToLongFunction<Call> callRef) throws Exception;

    /** Step 1 on loop {@code index} (see above). Default: nothing (a single-loop handler pauses in export). */
    default void pauseLoop(int index) throws Exception {}

    /** Steps 2 and 3: the paused state of loop {@code index}, as items (fds borrowed). */
    default List<HandoffItem> exportLoop(int index, ToLongFunction<Call> callRef) throws Exception {
        return index == 0 ? pauseAndExport(callRef) : List.of();
    }

    /** The handoff failed: loop {@code index} carries on. */
    default void resumeLoop(int index) throws Exception {
        if (index == 0) {
            resume();
        }
    }

    /** The handoff committed: loop {@code index} forgets its part without touching it. */
    default void abandonLoop(int index) {
        if (index == 0) {
            abandon();
        }
    }

    /**
     * Pre-copy (handoff protocol 2), on loop {@code index} while it serves on: the next chunk of
     * its long-lived tasks not copied yet, as items whose fds are duplicates owned by the items
     * (about {@code maxFds} at most; the sender closes them once sent), each task named for the
     * successor by {@code taskRef} (its task number: the ref its call will have at the pause). The
     * handler then tracks what starts, ends or changes, so that {@link #exportLoop} at the pause
     * returns only that (the delta). Empty when all is copied. Default: nothing is pre-copied.
     */
    default List<HandoffItem> preCopyLoop(int index, ToLongFunction<Call> taskRef, int maxFds) throws Exception {
        return List.of();
    }

    /**
     * True if this handler pre-copies ({@link #preCopyLoop}, {@link #preAdopt}): its warm-up then
     * rehearses that path, with {@link #rehearsalItems} (which then carry pre-copy keys) given to
     * {@link #preAdopt} and an empty delta to {@link #adopt}.
     */
    default boolean preCopies() {
        return !preCopyItems().isEmpty();
    }

    /**
     * The names of the items {@link #preCopyLoop} returns and {@link #preAdopt} takes. A successor
     * lists them in its hello ({@code Hello.pre_copies}, with the control server's); the old
     * process pre-copies this handler's tasks only if its successor lists every one of them, and
     * otherwise hands them over whole at the pause (an older build whose handler pre-adopts less).
     * Default: none.
     */
    default List<String> preCopyItems() {
        return List.of();
    }

    /**
     * The pre-copy was given up before any pause (the successor refused, died or hung): loop
     * {@code index} forgets what it copied and tracks nothing. ({@link #resumeLoop} after a failed
     * pause forgets it too.)
     */
    default void preCopyAbortedLoop(int index) {}

    /**
     * In the successor, before its loops run: builds the tasks of one pre-copy chunk, paused
     * (registered in their loops' paused groups), taking the fds it uses; their calls come with the
     * items of {@link #adopt}, which also carry what ended or changed since. Throwing refuses the
     * handoff (then {@link #abandon} closes what was built). Default: refuses any pre-copied item.
     */
    default void preAdopt(int stateVersion, List<HandoffItem> items) throws Exception {
        if (!items.isEmpty()) {
            throw new IllegalArgumentException("this daemon takes no pre-copied item (" + items.get(0).name() + ")");
        }
    }

    /**
     * Pre-copy, in the successor after each chunk's {@link #preAdopt}, before the pause: ties each
     * pre-adopted task whose call was pre-copied too ({@code calls}: a ref to its pre-built call,
     * or null) to that call with {@code attach} (ControlServer.preAdoptTask), so that
     * {@link #adopt} at the pause ties only the tasks begun or changed since. A task left untied
     * here is tied in {@link #adopt}, as before. Default: nothing (every task is tied in adopt).
     */
    default void preAttach(LongFunction<Call> calls, BiConsumer<Call, Task> attach) throws Exception {}

    /** The handoff failed: carry on. Loop thread. */
    void resume() throws Exception;

    /** The handoff committed: forget everything without touching it. Loop thread. */
    void abandon();

    /**
     * In the successor, before its loop runs: rebuild the tasks from {@code items} (paused), tie
     * each to its call with {@code adoptTask}. Throwing refuses the handoff.
     */
    void adopt(int stateVersion, List<HandoffItem> items, LongFunction<Call> calls, BiConsumer<Call, Task> adoptTask)
            throws Exception;

    /** In the successor, after the commit: start moving again. */
    void startAdopted() throws Exception;

    /**
     * True if this handler keeps its live tasks in systemd's fd store (systemd.fd_store) so that a
     * restarted process rebuilds them through {@link #adopt}; the daemon then stores its control
     * connections too.
     */
    default boolean survivesCrashes() {
        return false;
    }

    /**
     * How this handler's entries in systemd's fd store are read back after a crash, in this order
     * ({@link warren.daemon.StoreRecovery}; the control connections are the daemon's own). Default:
     * {@link warren.daemon.StoreRecovery#standard()}, relay pairs then tasks and extras. An entry
     * of a kind none of them reads is closed and counted as dropped.
     */
    default List<warren.daemon.StoreRecovery> storeRecoveries() {
        return warren.daemon.StoreRecovery.standard();
    }

    /**
     * Items describing {@code n} synthetic tasks over {@code fds} (2 per task, owned by the items),
     * each tied to call ref {@code i + 1}: a warm-up runs adopt, pause, export and abandon on them
     * in a throwaway daemon so that this code is compiled before a real handoff pauses anything.
     * Empty if the handler has nothing worth rehearsing.
     */
    default List<HandoffItem> rehearsalItems(int n, List<warren.fdpass.Fd> fds) {
        return List.of();
    }
}
