package warren.daemon.control;

import java.util.BitSet;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import warren.fdpass.Fd;
import warren.handoff.v1.ControlConnection;
import warren.handoff.v1.ControlState;
import warren.handoff.v1.HistogramState;
import warren.handoff.v1.PendingCall;

/**
 * The control server's state in the handoff encoding (control_state.proto), both ways, as
 * FlowTableCodec is Bumblebee's: the state's head, a connection, a call ({@link #head},
 * {@link #connection}, {@link #call}), and the check of a handed-in state before any fd is
 * taken ({@link #check}). Used by {@link ControlServer#export}/{@link ControlServer#adoptConnections}
 * and by the daemon's fd store recovery, which builds the same state from stored connections.
 * Control path: it may allocate.
 */
public final class ControlStateCodec {
    /** ControlState.format this build writes and reads. */
    public static final int FORMAT = 1;
    /** The listener is always the state's first fd. */
    public static final int LISTENER_FD = 0;

    private ControlStateCodec() {}

    /**
     * A state's head: the listener at fd {@link #LISTENER_FD}, the numbers to go on from, the
     * counters and histograms carried on, the socket's path ("" for none), when it paused (0: never).
     */
    public static ControlState.Builder head(long nextClient, long nextTask, long tasksTotal, Map<String, Long> counters,
            Map<String, HistogramState> histograms, String socketPath, long pausedMonotonicNanos) {
        ControlState.Builder st = ControlState.newBuilder().setFormat(FORMAT).setFdListener(LISTENER_FD)
                .setNextClient(nextClient).setNextTask(nextTask).setTasksTotal(tasksTotal)
                .putAllCounters(counters).putAllHistograms(histograms);
        if (pausedMonotonicNanos != 0) {
            st.setPausedMonotonicNanos(pausedMonotonicNanos);
        }
        if (!socketPath.isEmpty()) {
            st.setSocketPath(socketPath);
        }
        return st;
    }

    /** Connection {@code number} whose socket is the state's fd {@code fd}; its calls are added to it. */
    public static ControlConnection.Builder connection(long number, int fd) {
        return ControlConnection.newBuilder().setNumber(number).setFd(fd);
    }

    /** A call with its task, named {@code ref} for other items, {@code ageNanos} after its start. */
    static PendingCall.Builder call(Call call, long ref, long ageNanos) {
        return call.describe().setRef(ref).setAgeNanos(ageNanos);
    }

    /**
     * A stored call (fd store: {@link Call#describe} as it was) as the state's: named by its task
     * number, its age counted from its start to {@code nowUnixNanos}.
     */
    public static PendingCall stored(PendingCall call, long nowUnixNanos) {
        return call.toBuilder().setRef(call.getTask())
                .setAgeNanos(Math.max(0, nowUnixNanos - call.getStartUnixNanos())).build();
    }

    /**
     * Refuses a state this build cannot read before any connection's fd is taken: its format; the
     * listener's index (uint32, read unsigned) in range and used once (its fd may be taken already:
     * the successor builds its server from it first); each connection's index in range, open and used
     * once; two connections with one number or two calls with one ref (adopting either would drop
     * the other's socket or answer on its behalf). Request ids are not checked: after a crash, a
     * request answered just before it and a newer one reusing its id may both come back.
     */
    static void check(ControlState st, List<Fd> fds) {
        if (st.getFormat() != FORMAT) {
            throw new IllegalArgumentException("control state format " + st.getFormat() + ", expected " + FORMAT);
        }
        BitSet used = new BitSet();
        long listener = Integer.toUnsignedLong(st.getFdListener());
        if (listener >= fds.size()) {
            throw new IllegalArgumentException("the listener: fd index " + listener + " of " + fds.size());
        }
        used.set((int) listener);
        Set<Long> numbers = new HashSet<>();
        Set<Long> refs = new HashSet<>();
        for (ControlConnection cc : st.getConnectionsList()) {
            checkIndex("connection " + cc.getNumber(), cc.getFd(), fds, used);
            if (!numbers.add(cc.getNumber())) {
                throw new IllegalArgumentException("two connections numbered " + cc.getNumber());
            }
            for (PendingCall pc : cc.getCallsList()) {
                checkRef(pc, refs);
            }
        }
        for (PendingCall pc : st.getDetachedList()) {
            checkRef(pc, refs);
        }
        if (st.getFdPairBook() != 0) {
            checkIndex("the pair book", st.getFdPairBook() - 1, fds, used);
        }
    }

    private static void checkIndex(String what, int index, List<Fd> fds, BitSet used) {
        long i = Integer.toUnsignedLong(index);
        if (i >= fds.size() || used.get((int) i) || !fds.get((int) i).isOpen()) {
            throw new IllegalArgumentException(what + ": fd index " + i + " out of range (" + fds.size()
                    + " fds), closed or used twice");
        }
        used.set((int) i);
    }

    private static void checkRef(PendingCall pc, Set<Long> refs) {
        if (!refs.add(pc.getRef())) {
            throw new IllegalArgumentException("two calls with ref " + pc.getRef());
        }
    }
}
