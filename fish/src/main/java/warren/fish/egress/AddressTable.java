package warren.fish.egress;

import java.util.ArrayList;
import java.util.List;

/**
 * Values by IP address (4 or 16 bytes): open addressing with linear probing and backward-shift
 * deletion, so a reply read from fish0 finds its soft-unicast IP without a scan and without
 * allocating ({@link #get(byte[], int)} reads the address straight from the packet's key). Grows
 * past half full, shrinks below one eighth. Not thread-safe (the loop's).
 */
final class AddressTable<V> {
    static final int MIN_CAPACITY = 8;

    private byte[][] keys;
    private Object[] values;
    private int size;

    AddressTable() {
        keys = new byte[MIN_CAPACITY][];
        values = new Object[MIN_CAPACITY];
    }

    private static int hash(byte[] a, int len, int mask) {
        int h = len;
        for (int i = 0; i < len; i++) {
            h = h * 31 + a[i];
        }
        h *= 0x9E3779B1;
        return (h ^ (h >>> 16)) & mask;
    }

    private static boolean same(byte[] key, byte[] a, int len) {
        if (key.length != len) {
            return false;
        }
        for (int i = 0; i < len; i++) {
            if (key[i] != a[i]) {
                return false;
            }
        }
        return true;
    }

    /** The value of the address made of the first {@code len} bytes of {@code a}, or null. */
    @SuppressWarnings("unchecked")
    V get(byte[] a, int len) {
        int mask = keys.length - 1;
        for (int i = hash(a, len, mask); keys[i] != null; i = (i + 1) & mask) {
            if (same(keys[i], a, len)) {
                return (V) values[i];
            }
        }
        return null;
    }

    V get(byte[] a) {
        return get(a, a.length);
    }

    /** Adds {@code v} under {@code address} (which must not be there yet). */
    void put(byte[] address, V v) {
        if (get(address) != null) {
            throw new IllegalStateException("address already present");
        }
        if ((size + 1) * 2 > keys.length) {
            rehash(keys.length * 2);
        }
        insert(address.clone(), v);
        size++;
    }

    private void insert(byte[] k, Object v) {
        int mask = keys.length - 1;
        int i = hash(k, k.length, mask);
        while (keys[i] != null) {
            i = (i + 1) & mask;
        }
        keys[i] = k;
        values[i] = v;
    }

    /** Removes {@code address}; true if it was there. */
    boolean remove(byte[] address) {
        int mask = keys.length - 1;
        int i = hash(address, address.length, mask);
        while (keys[i] != null && !same(keys[i], address, address.length)) {
            i = (i + 1) & mask;
        }
        if (keys[i] == null) {
            return false;
        }
        int hole = i;
        for (int j = (i + 1) & mask; keys[j] != null; j = (j + 1) & mask) {
            int home = hash(keys[j], keys[j].length, mask);
            if (((j - home) & mask) >= ((j - hole) & mask)) {
                keys[hole] = keys[j];
                values[hole] = values[j];
                hole = j;
            }
        }
        keys[hole] = null;
        values[hole] = null;
        size--;
        if (keys.length > MIN_CAPACITY && size * 8 < keys.length) {
            rehash(keys.length / 2);
        }
        return true;
    }

    private void rehash(int capacity) {
        byte[][] oldKeys = keys;
        Object[] oldValues = values;
        keys = new byte[Math.max(MIN_CAPACITY, capacity)][];
        values = new Object[keys.length];
        for (int i = 0; i < oldKeys.length; i++) {
            if (oldKeys[i] != null) {
                insert(oldKeys[i], oldValues[i]);
            }
        }
    }

    int size() {
        return size;
    }

    int capacity() {
        return keys.length;
    }

    /** A copy of the values (control path: snapshots, samples, pause and resume). */
    @SuppressWarnings("unchecked")
    List<V> values() {
        List<V> out = new ArrayList<>(size);
        for (int i = 0; i < keys.length; i++) {
            if (keys[i] != null) {
                out.add((V) values[i]);
            }
        }
        return out;
    }

    void clear() {
        keys = new byte[MIN_CAPACITY][];
        values = new Object[MIN_CAPACITY];
        size = 0;
    }
}
