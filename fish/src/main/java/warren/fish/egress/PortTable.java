package warren.fish.egress;

/**
 * The flows of one soft-unicast IP by (protocol index, port): an open-addressing hash table of
 * primitive int keys (linear probing, backward-shift deletion, so no tombstones), sized to the
 * ports in use: it starts at {@link #MIN_CAPACITY} slots, doubles past half full and halves below
 * one eighth. Lookups allocate nothing. Not thread-safe (the loop's).
 *
 * <pre>
 * key = protocol index (0 TCP, 1 UDP, 2 ICMP) &lt;&lt; 16 | port     keys[i] == EMPTY: slot i is free
 * memory = capacity x (4 + a reference) bytes, capacity &lt;= 4 x max(size, 2)
 * </pre>
 */
final class PortTable<V> {
    static final int MIN_CAPACITY = 8;
    private static final int EMPTY = -1;

    private int[] keys;
    private Object[] values;
    private int size;

    PortTable() {
        alloc(MIN_CAPACITY);
    }

    private void alloc(int capacity) {
        keys = new int[capacity];
        java.util.Arrays.fill(keys, EMPTY);
        values = new Object[capacity];
    }

    private static int key(int proto, int port) {
        return (proto << 16) | (port & 0xFFFF);
    }

    private static int hash(int key, int mask) {
        int h = key * 0x9E3779B1; // Fibonacci hashing spreads consecutive ports
        return (h ^ (h >>> 16)) & mask;
    }

    /** The value at (proto, port), or null. */
    @SuppressWarnings("unchecked")
    V get(int proto, int port) {
        int k = key(proto, port);
        int mask = keys.length - 1;
        for (int i = hash(k, mask); ; i = (i + 1) & mask) {
            int at = keys[i];
            if (at == k) {
                return (V) values[i];
            }
            if (at == EMPTY) {
                return null;
            }
        }
    }

    /** Puts {@code v} at (proto, port); false (nothing changed) if that slot is taken. */
    boolean put(int proto, int port, V v) {
        if (get(proto, port) != null) {
            return false;
        }
        if ((size + 1) * 2 > keys.length) {
            rehash(keys.length * 2);
        }
        insert(key(proto, port), v);
        size++;
        return true;
    }

    private void insert(int k, Object v) {
        int mask = keys.length - 1;
        int i = hash(k, mask);
        while (keys[i] != EMPTY) {
            i = (i + 1) & mask;
        }
        keys[i] = k;
        values[i] = v;
    }

    /** Removes (proto, port) if it holds {@code v}; true if it did. */
    boolean remove(int proto, int port, V v) {
        int k = key(proto, port);
        int mask = keys.length - 1;
        int i = hash(k, mask);
        while (keys[i] != k) {
            if (keys[i] == EMPTY) {
                return false;
            }
            i = (i + 1) & mask;
        }
        if (values[i] != v) {
            return false;
        }
        // backward shift: move later members of the probe run into the hole
        int hole = i;
        for (int j = (i + 1) & mask; keys[j] != EMPTY; j = (j + 1) & mask) {
            int home = hash(keys[j], mask);
            if (((j - home) & mask) >= ((j - hole) & mask)) {
                keys[hole] = keys[j];
                values[hole] = values[j];
                hole = j;
            }
        }
        keys[hole] = EMPTY;
        values[hole] = null;
        size--;
        if (keys.length > MIN_CAPACITY && size * 8 < keys.length) {
            rehash(keys.length / 2);
        }
        return true;
    }

    private void rehash(int capacity) {
        int[] oldKeys = keys;
        Object[] oldValues = values;
        alloc(Math.max(MIN_CAPACITY, capacity));
        for (int i = 0; i < oldKeys.length; i++) {
            if (oldKeys[i] != EMPTY) {
                insert(oldKeys[i], oldValues[i]);
            }
        }
    }

    int size() {
        return size;
    }

    /** Slots allocated (for tests of the memory bound). */
    int capacity() {
        return keys.length;
    }
}
