package warren.fish.egress;

import warren.packet.FlowKey;

/**
 * The new flows of one client's read batch, leased together ({@link PortLeases#leaseAll}): each
 * flow's key, and once leased, its flow or why it has none. Preallocated per client path; the
 * flow keys are copied in, so nothing is allocated here per packet or per batch.
 *
 * <pre>
 * entry i: PENDING --port claimed, create-exclusive answered 0--> LEASED (flows[i])
 *          PENDING --EEXIST--> PENDING (the next port, next round)
 *          PENDING --no port left of the range--> EXHAUSTED
 *          PENDING --any other answer, or no answer--> FAILED (errors[i])
 * </pre>
 * An entry lives until the next read batch ({@link #clear}): a later packet of the batch whose flow
 * failed is refused with the same outcome, not leased again in the same batch.
 */
final class NewFlows {
    static final int PENDING = 0;
    static final int LEASED = 1;
    static final int EXHAUSTED = 2;
    static final int FAILED = 3;

    final FlowKey[] keys;
    final Flow[] flows;
    final int[] outcome;
    final Exception[] errors;
    // leaseAll's working state: where each entry's walk over its range started and how far it went,
    // and its request in the current conntrack batch
    final int[] start;
    final int[] tried;
    final int[] request;
    int count;

    NewFlows(int capacity) {
        keys = new FlowKey[capacity];
        for (int i = 0; i < capacity; i++) {
            keys[i] = new FlowKey();
        }
        flows = new Flow[capacity];
        outcome = new int[capacity];
        errors = new Exception[capacity];
        start = new int[capacity];
        tried = new int[capacity];
        request = new int[capacity];
    }

    /** Forgets the last batch's entries (and the flows and errors they point at). */
    void clear() {
        for (int i = 0; i < count; i++) {
            flows[i] = null;
            errors[i] = null;
        }
        count = 0;
    }

    boolean full() {
        return count == keys.length;
    }

    /** A new entry for {@code key} (copied), PENDING; its index. */
    int add(FlowKey key) {
        keys[count].copyFrom(key);
        outcome[count] = PENDING;
        flows[count] = null;
        errors[count] = null;
        return count++;
    }

    /** The entry of {@code key}, or -1. */
    int indexOf(FlowKey key) {
        for (int i = 0; i < count; i++) {
            if (keys[i].matches(key)) {
                return i;
            }
        }
        return -1;
    }
}
