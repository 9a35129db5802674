package warren.daemon.task;

/**
 * What the plumbing may ask of a running task. Both requests are asynchronous: the task answers
 * its request (exactly once, through its {@code Call}) when it has wound down.
 */
public interface Task {
    /** The caller (or another connection) cancelled it: end with reason CANCELLED. */
    void cancel();

    /** The daemon is stopping: finish or hand back what it holds, with reason SHUTDOWN. */
    void stop();

    /** A short state for List, e.g. "splicing", "half-closed". */
    default String state() {
        return "running";
    }
}
