package warren.fish.egress;

import java.util.Arrays;

/**
 * Which loop owns the client of a (soft-unicast IP, port): an immutable snapshot, replaced (copy
 * on write) by the control loop whenever a client starts or ends and published through one
 * volatile field ({@link Egress}); a loop that read a reply whose flow is not its own looks the
 * owner up here (a volatile read and two array probes, no lock, no allocation) and hands the
 * packet over. Replies to flows of a loop's own clients never get here.
 *
 * <pre>
 * per soft-unicast IP: int[] {first0, last0, loop0, first1, last1, loop1, ...} sorted by first
 * (ranges of one IP never overlap: the control loop refuses an overlapping Egress)
 * </pre>
 */
final class Owners {
    static final Owners EMPTY = new Owners(new AddressTable<>());

    private final AddressTable<int[]> byIp;

    private Owners(AddressTable<int[]> byIp) {
        this.byIp = byIp;
    }

    /** The loop of the client whose range holds {@code port} on the IP made of {@code a[0, len)}, or -1. */
    int loopOf(byte[] a, int len, int port) {
        int[] r = byIp.get(a, len);
        if (r == null) {
            return -1;
        }
        int lo = 0;
        int hi = r.length / 3 - 1;
        while (lo <= hi) {
            int mid = (lo + hi) >>> 1;
            if (port < r[mid * 3]) {
                hi = mid - 1;
            } else if (port > r[mid * 3 + 1]) {
                lo = mid + 1;
            } else {
                return r[mid * 3 + 2];
            }
        }
        return -1;
    }

    /** This snapshot plus a client of {@code [first, last]} on {@code ip} living on {@code loop}. */
    Owners with(byte[] ip, int first, int last, int loop) {
        AddressTable<int[]> t = copy();
        int[] r = t.get(ip);
        int[] n = r == null ? new int[3] : Arrays.copyOf(r, r.length + 3);
        int at = n.length - 3;
        while (at > 0 && n[at - 3] > first) {
            System.arraycopy(n, at - 3, n, at, 3);
            at -= 3;
        }
        n[at] = first;
        n[at + 1] = last;
        n[at + 2] = loop;
        t.remove(ip);
        t.put(ip, n);
        return new Owners(t);
    }

    /** This snapshot without the client of {@code [first, last]} on {@code ip}. */
    Owners without(byte[] ip, int first, int last) {
        AddressTable<int[]> t = copy();
        int[] r = t.get(ip);
        if (r == null) {
            return this;
        }
        int[] n = new int[r.length];
        int k = 0;
        for (int i = 0; i < r.length; i += 3) {
            if (r[i] != first || r[i + 1] != last) {
                n[k++] = r[i];
                n[k++] = r[i + 1];
                n[k++] = r[i + 2];
            }
        }
        t.remove(ip);
        if (k > 0) {
            t.put(ip, Arrays.copyOf(n, k));
        }
        return new Owners(t);
    }

    private AddressTable<int[]> copy() {
        AddressTable<int[]> t = new AddressTable<>();
        byIp.forEach(t::put);
        return t;
    }
}
