package warren.fish.egress;

/**
 * The open addressing {@link PortTable} and {@link AddressTable} share, written once: linear
 * probing over a power-of-two array of slots, backward-shift deletion (no tombstones), growth past
 * half full and shrinking below one eighth (never under {@link #MIN_CAPACITY}). A subclass owns its
 * key array (primitive ints, or addresses) and writes its own lookup, the hot path, against it;
 * this class moves slots. Not thread-safe (one loop's).
 *
 * <pre>
 * slot i: keys[i] (the subclass's) + values[i]      free slot: !used(keys, i), values[i] == null
 * a key lives in its probe run: between home(key) and the first free slot after it
 * </pre>
 */
abstract class OpenTable {
    static final int MIN_CAPACITY = 8;

    /** The values by slot; the subclass's key array has the same length. */
    Object[] values;
    int size;

    /** Fibonacci hashing of an int into {@code mask}: spreads consecutive ports and addresses. */
    static int spread(int h, int mask) {
        h *= 0x9E3779B1;
        return (h ^ (h >>> 16)) & mask;
    }

    /** A new, empty key array of {@code capacity} slots, made the table's; returns the old one. */
    abstract Object swapKeys(int capacity);

    /** Slot {@code i} of the key array {@code keys} holds a key. */
    abstract boolean used(Object keys, int i);

    /** The home slot, under {@code mask}, of the key in slot {@code i} of {@code keys}. */
    abstract int home(Object keys, int i, int mask);

    /** Copies the key in slot {@code from} of {@code keys} into slot {@code to} of the table's keys. */
    abstract void copyKey(Object keys, int from, int to);

    /** Frees slot {@code i} of the table's keys. */
    abstract void clearKey(int i);

    /** The table's key array. */
    abstract Object keys();

    final void allocate(int capacity) {
        swapKeys(capacity);
        values = new Object[capacity];
    }

    /** The first free slot of the run starting at {@code home}. */
    final int freeSlot(int home) {
        Object keys = keys();
        int mask = values.length - 1;
        int i = home;
        while (used(keys, i)) {
            i = (i + 1) & mask;
        }
        return i;
    }

    /** Makes room for one more key (grows past half full); call before computing its home slot. */
    final void reserveOne() {
        if ((size + 1) * 2 > values.length) {
            rehash(values.length * 2);
        }
    }

    /** Stores {@code v} in the free slot {@code i} whose key the subclass has just set. */
    final void filled(int i, Object v) {
        values[i] = v;
        size++;
    }

    /** Empties slot {@code i}: later members of its probe run move back into the hole; may shrink. */
    final void removeAt(int i) {
        Object keys = keys();
        int mask = values.length - 1;
        int hole = i;
        for (int j = (i + 1) & mask; used(keys, j); j = (j + 1) & mask) {
            int home = home(keys, j, mask);
            if (((j - home) & mask) >= ((j - hole) & mask)) {
                copyKey(keys, j, hole);
                values[hole] = values[j];
                hole = j;
            }
        }
        clearKey(hole);
        values[hole] = null;
        size--;
        if (values.length > MIN_CAPACITY && size * 8 < values.length) {
            rehash(values.length / 2);
        }
    }

    private void rehash(int capacity) {
        Object[] oldValues = values;
        int cap = Math.max(MIN_CAPACITY, capacity);
        Object oldKeys = swapKeys(cap);
        values = new Object[cap];
        int mask = cap - 1;
        for (int i = 0; i < oldValues.length; i++) {
            if (used(oldKeys, i)) {
                int to = freeSlot(home(oldKeys, i, mask));
                copyKey(oldKeys, i, to);
                values[to] = oldValues[i];
            }
        }
    }

    final int size() {
        return size;
    }

    /** Slots allocated (for tests of the memory bound). */
    final int capacity() {
        return values.length;
    }

    /** A copy of the values (control path: snapshots, samples, pause and resume). */
    @SuppressWarnings("unchecked")
    final <V> java.util.List<V> valueList() {
        java.util.List<V> out = new java.util.ArrayList<>(size);
        for (Object v : values) {
            if (v != null) {
                out.add((V) v);
            }
        }
        return out;
    }

    final void clear() {
        allocate(MIN_CAPACITY);
        size = 0;
    }
}
