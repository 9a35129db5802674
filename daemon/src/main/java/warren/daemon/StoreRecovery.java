package warren.daemon;

import java.util.List;
import java.util.Set;
import warren.daemon.handoff.HandoffItem;
import warren.fdpass.Fd;
import warren.handoff.v1.PendingCall;

/**
 * Reads some kinds of systemd fd store entries back after a crash into the handoff items its
 * handler adopts, as if an upgrade in place had handed them over. {@link FdStoreRecovery} groups
 * the entries by {@link FdStoreNames.Kind}, reads the control connections (its own kind) itself,
 * and gives every other kind's entries to the recovery that lists it, in the order the handler
 * lists its recoveries ({@code Handoffable.storeRecoveries}). An entry no recovery reads is closed
 * and counted. The writer of a kind and its recovery live together (TaskStore, RelayStore).
 */
public interface StoreRecovery {
    /** The kinds of entries this reads (no two recoveries of a handler read the same kind). */
    Set<FdStoreNames.Kind> kinds();

    /**
     * Turns {@code entries} into items through {@code into}. The fds are taken: each is handed on
     * in an item, closed, or dropped with its entry ({@link Into#drop}). Throwing fails the whole
     * recovery (for a state that cannot be read at all, not for one bad entry).
     */
    void recover(List<Entry> entries, Into into) throws Exception;

    /** One stored entry: its name and every fd stored under it, in systemd's order (not the writer's). */
    record Entry(FdStoreNames.Name name, List<Fd> fds) {
        @Override
        public String toString() {
            return name.toString();
        }
    }

    /** What a recovery reports to: the control connections that came back, the items, the drops. */
    interface Into {
        /** Now, as the stored start times are (Unix nanoseconds). */
        long nowUnixNanos();

        /**
         * Ties a stored request to the control connection it came on, so that its answer reaches
         * it (or, {@code answered}, keeps it as a task whose answer was sent before the crash).
         * Its ref becomes its task number, its age is counted from its start. False if it cannot
         * be served: not answered and its connection was gone before the crash. A request that an
         * earlier entry tied already is not added twice (true).
         */
        boolean call(long connection, PendingCall call, boolean answered);

        /**
         * The pair books stored ({@code book}, warren.daemon.PairBook; usually one), whose slots
         * describe the slot-named pairs: read, not taken (the daemon keeps the first).
         */
        default List<Fd> pairBooks() {
            return List.of();
        }

        /** An item for the handler's adopt. */
        void item(HandoffItem item);

        /** Closes every fd of {@code entry}, says why in the log and counts it as dropped. */
        void drop(Entry entry, String why);

        /** For the log line once recovered: {@code n} {@code what} (e.g. "pairs") resume. */
        void resumed(String what, int n);
    }

    /**
     * What a handler reads unless it says otherwise: this module's two stores, relay pairs
     * ({@code p<TASK>}, warren.daemon.relay.RelayStore) first, then tasks and extras
     * ({@code t<TASK>}, {@code x.<NAME>}, {@link TaskStore}), so that a request kept both as a
     * pair and as a task (Bumblebee's downgrade) waits for its pair's answer.
     */
    static List<StoreRecovery> standard() {
        return List.of(warren.daemon.relay.RelayStore.RECOVERY, TaskStore.RECOVERY);
    }
}
