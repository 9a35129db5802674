package warren.bumblebee.nat;

import java.net.InetAddress;
import java.nio.ByteBuffer;

/**
 * The NAT's address plan: where the listeners are, which pool address and port range a slot
 * translates to, and back from an address to its slot (computed, no lookup table).
 *
 * <pre>
 *  listener   198.19.255.254:8080   [fd00:b::1]:8080      (local addresses on bb0)
 *  NAT pool   198.19.0.0/17 -> bb0  fd00:b:1::/112 -> bb0 (slot i = pool address i + 1; its port
 *             moves on at every reuse of the slot, 10000-59999)
 * </pre>
 * The environment configures these addresses and routes in its namespace; the slot table and the
 * two packet paths compute with them.
 */
public final class AddressPlan {
    public static final int LISTEN_PORT = 8080;
    public static final byte[] LISTEN4 = {(byte) 198, 19, (byte) 255, (byte) 254};
    public static final byte[] LISTEN6 = addr6(0xb, 0, 1);
    public static final byte[] POOL4 = {(byte) 198, 19, 0, 0};
    public static final int POOL4_PREFIX = 17;
    public static final byte[] POOL6 = addr6(0xb, 1, 0);
    public static final int POOL6_PREFIX = 112;
    /** The first NAT port; each reuse of a slot takes the next one, wrapping after {@link #NAT_PORTS}. */
    public static final int FIRST_NAT_PORT = 10000;
    public static final int NAT_PORTS = 50000;

    private AddressPlan() {}

    private static byte[] addr6(int group2, int group3, int last) {
        byte[] a = new byte[16];
        a[0] = (byte) 0xfd;
        a[3] = (byte) group2;
        a[5] = (byte) group3;
        a[14] = (byte) (last >>> 8);
        a[15] = (byte) last;
        return a;
    }

    /** Writes slot {@code i}'s pool address (4 or 16 bytes) into {@code out} at {@code off}. */
    public static void poolAddress(int version, int slot, ByteBuffer out, int off) {
        int v = slot + 1;
        if (version == 4) {
            out.put(off, (byte) 198).put(off + 1, (byte) 19).put(off + 2, (byte) (v >>> 8)).put(off + 3, (byte) v);
        } else {
            for (int i = 0; i < 16; i++) {
                out.put(off + i, (byte) 0);
            }
            out.put(off, (byte) 0xfd).put(off + 3, (byte) 0xb).put(off + 5, (byte) 1);
            out.put(off + 14, (byte) (v >>> 8)).put(off + 15, (byte) v);
        }
    }

    /** Slot {@code i}'s pool address as a new array (control path). */
    static byte[] poolAddress(int version, int slot) {
        ByteBuffer a = ByteBuffer.allocate(16);
        poolAddress(version, slot, a, 0);
        byte[] out = new byte[version == 4 ? 4 : 16];
        a.get(0, out);
        return out;
    }

    /**
     * The slot (below {@code slots}) whose pool address is the 4 or 16 bytes at {@code off}, or -1.
     * No allocation.
     */
    public static int slotOf(int version, ByteBuffer b, int off, int slots) {
        int v;
        if (version == 4) {
            if ((b.get(off) & 0xFF) != 198 || b.get(off + 1) != 19 || (b.get(off + 2) & 0x80) != 0) {
                return -1;
            }
            v = ((b.get(off + 2) & 0xFF) << 8) | (b.get(off + 3) & 0xFF);
        } else {
            for (int i = 0; i < 14; i++) {
                int want = i == 0 ? 0xfd : i == 3 ? 0xb : i == 5 ? 1 : 0;
                if ((b.get(off + i) & 0xFF) != want) {
                    return -1;
                }
            }
            v = ((b.get(off + 14) & 0xFF) << 8) | (b.get(off + 15) & 0xFF);
        }
        return v >= 1 && v <= slots ? v - 1 : -1;
    }

    /** The same for an address object (the peer of an accepted socket). */
    public static int slotOf(InetAddress a, int slots) {
        byte[] raw = a.getAddress();
        return slotOf(raw.length == 4 ? 4 : 6, ByteBuffer.wrap(raw), 0, slots);
    }

    /** The listener's address of IP {@code version} (shared; do not modify). */
    static byte[] listen(int version) {
        return version == 4 ? LISTEN4 : LISTEN6;
    }
}
