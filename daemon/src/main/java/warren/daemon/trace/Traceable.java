package warren.daemon.trace;

/**
 * A task a {@code Trace} request can watch. Packet tasks (a Bumblebee flow, a Fish client) keep
 * the {@link TraceRing} they are given in one field and copy each of their packets into it at
 * their four packet points while it is set; a byte-count task (a Splicer pair) only reports its
 * counts. Every method runs on the loop thread.
 */
public interface Traceable {
    /** True: packets go into a ring; false: the trace streams {@link #byteCounts} only. */
    default boolean tracesPackets() {
        return true;
    }

    /**
     * Starts copying this task's packets into {@code ring} (ignored by byte-count tasks). Returns
     * null when started, or why this task cannot be traced now (e.g. it is traced already).
     */
    String startTrace(TraceRing ring);

    /**
     * Stops copying into {@code ring}, if it is still the one set (the task may have ended and its
     * slot moved on to another task meanwhile). After this returns nothing is copied into it.
     */
    void stopTrace(TraceRing ring);

    /** Byte-count tasks: bytes moved a to b and b to a so far, into {@code out[0]} and {@code out[1]}. */
    default void byteCounts(long[] out) {
    }
}
