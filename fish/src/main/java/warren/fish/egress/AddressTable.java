package warren.fish.egress;

import java.util.List;

/**
 * Values by IP address (4 or 16 bytes), an {@link OpenTable}: a reply read from fish0 finds its
 * soft-unicast IP without a scan and without allocating ({@link #get(byte[], int)} reads the
 * address straight from the packet's key).
 */
final class AddressTable<V> extends OpenTable {
    private byte[][] keys;

    AddressTable() {
        allocate(MIN_CAPACITY);
    }

    private static int hash(byte[] a, int len, int mask) {
        int h = len;
        for (int i = 0; i < len; i++) {
            h = h * 31 + a[i];
        }
        return spread(h, mask);
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

    /** The slot of the address made of the first {@code len} bytes of {@code a}, or -1. */
    private int find(byte[] a, int len) {
        byte[][] ks = keys;
        int mask = ks.length - 1;
        for (int i = hash(a, len, mask); ks[i] != null; i = (i + 1) & mask) {
            if (same(ks[i], a, len)) {
                return i;
            }
        }
        return -1;
    }

    /** The value of the address made of the first {@code len} bytes of {@code a}, or null. */
    @SuppressWarnings("unchecked")
    V get(byte[] a, int len) {
        int i = find(a, len);
        return i < 0 ? null : (V) values[i];
    }

    V get(byte[] a) {
        return get(a, a.length);
    }

    /** Adds {@code v} under {@code address} (which must not be there yet). */
    void put(byte[] address, V v) {
        if (find(address, address.length) >= 0) {
            throw new IllegalStateException("address already present");
        }
        reserveOne();
        int i = freeSlot(hash(address, address.length, keys.length - 1));
        keys[i] = address.clone();
        filled(i, v);
    }

    /** Removes {@code address}; true if it was there. */
    boolean remove(byte[] address) {
        int i = find(address, address.length);
        if (i < 0) {
            return false;
        }
        removeAt(i);
        return true;
    }

    /** A copy of the values (control path: snapshots, samples, pause and resume). */
    List<V> values() {
        return valueList();
    }

    /** Each address with its value (control path: copies). */
    @SuppressWarnings("unchecked")
    void forEach(java.util.function.BiConsumer<byte[], V> each) {
        for (int i = 0; i < keys.length; i++) {
            if (keys[i] != null) {
                each.accept(keys[i], (V) values[i]);
            }
        }
    }

    @Override
    Object swapKeys(int capacity) {
        byte[][] old = keys;
        keys = new byte[capacity][];
        return old;
    }

    @Override
    Object keys() {
        return keys;
    }

    @Override
    boolean used(Object ks, int i) {
        return ((byte[][]) ks)[i] != null;
    }

    @Override
    int home(Object ks, int i, int mask) {
        byte[] k = ((byte[][]) ks)[i];
        return hash(k, k.length, mask);
    }

    @Override
    void copyKey(Object ks, int from, int to) {
        keys[to] = ((byte[][]) ks)[from];
    }

    @Override
    void clearKey(int i) {
        keys[i] = null;
    }
}
