package warren.fish.egress;

/**
 * The flows of one soft-unicast IP by (protocol index, port): an {@link OpenTable} of primitive
 * int keys, sized to the ports in use. Lookups allocate nothing.
 *
 * <pre>
 * key = protocol index (0 TCP, 1 UDP, 2 ICMP) &lt;&lt; 16 | port     keys[i] == EMPTY: slot i is free
 * memory = capacity x (4 + a reference) bytes, capacity &lt;= 4 x max(size, 2)
 * </pre>
 */
final class PortTable<V> extends OpenTable {
    private static final int EMPTY = -1;

    private int[] keys;

    PortTable() {
        allocate(MIN_CAPACITY);
    }

    private static int key(int proto, int port) {
        return (proto << 16) | (port & 0xFFFF);
    }

    /** The slot holding {@code k}, or -1. */
    private int find(int k) {
        int[] ks = keys;
        int mask = ks.length - 1;
        for (int i = spread(k, mask); ; i = (i + 1) & mask) {
            int at = ks[i];
            if (at == k) {
                return i;
            }
            if (at == EMPTY) {
                return -1;
            }
        }
    }

    /** The value at (proto, port), or null. */
    @SuppressWarnings("unchecked")
    V get(int proto, int port) {
        int i = find(key(proto, port));
        return i < 0 ? null : (V) values[i];
    }

    /** Puts {@code v} at (proto, port); false (nothing changed) if that slot is taken. */
    boolean put(int proto, int port, V v) {
        int k = key(proto, port);
        if (find(k) >= 0) {
            return false;
        }
        reserveOne();
        int i = freeSlot(spread(k, keys.length - 1));
        keys[i] = k;
        filled(i, v);
        return true;
    }

    /** Removes (proto, port) if it holds {@code v}; true if it did. */
    boolean remove(int proto, int port, V v) {
        int i = find(key(proto, port));
        if (i < 0 || values[i] != v) {
            return false;
        }
        removeAt(i);
        return true;
    }

    @Override
    Object swapKeys(int capacity) {
        int[] old = keys;
        keys = new int[capacity];
        java.util.Arrays.fill(keys, EMPTY);
        return old;
    }

    @Override
    Object keys() {
        return keys;
    }

    @Override
    boolean used(Object ks, int i) {
        return ((int[]) ks)[i] != EMPTY;
    }

    @Override
    int home(Object ks, int i, int mask) {
        return spread(((int[]) ks)[i], mask);
    }

    @Override
    void copyKey(Object ks, int from, int to) {
        keys[to] = ((int[]) ks)[from];
    }

    @Override
    void clearKey(int i) {
        keys[i] = EMPTY;
    }
}
