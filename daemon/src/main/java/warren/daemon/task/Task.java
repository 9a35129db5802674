package warren.daemon.task;

import warren.control.v1.TaskInfo;

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

    /**
     * The event loop this task's state lives on, or null for the control loop. List asks
     * {@link #state} and {@link #traffic} there; {@link #cancel} and {@link #stop} post there
     * themselves.
     */
    default warren.daemon.loop.EventLoop loop() {
        return null;
    }

    /**
     * Fills {@code info} with the task's traffic so far: bytes and packets each way ("out" = from
     * the socket handed in toward its destination) and its 5-tuples. Called on the task's
     * {@link #loop}; control path, so it may allocate. Default: nothing to tell.
     */
    default void traffic(TaskInfo.Builder info) {}
}
