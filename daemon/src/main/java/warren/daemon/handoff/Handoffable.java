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
 */
public interface Handoffable {
    /** The state layout this build writes. */
    int stateVersion();

    /** The layouts this build can read. */
    List<Integer> acceptsStateVersions();

    /** Pauses every task at a clean point and returns its items (fds borrowed). Loop thread. */
    List<HandoffItem> pauseAndExport(ToLongFunction<Call> callRef) throws Exception;

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
     * Items describing {@code n} synthetic tasks over {@code fds} (2 per task, owned by the items),
     * each tied to call ref {@code i + 1}: a warm-up runs adopt, pause, export and abandon on them
     * in a throwaway daemon so that this code is compiled before a real handoff pauses anything.
     * Empty if the handler has nothing worth rehearsing.
     */
    default List<HandoffItem> rehearsalItems(int n, List<warren.fdpass.Fd> fds) {
        return List.of();
    }
}
