package warren.daemon.trace;

import java.nio.ByteBuffer;

/**
 * The bounded, preallocated region one trace copies its task's packets into. The task's packet
 * paths call {@link #copy} on the loop thread (behind one field check: no trace, no call); the
 * trace's session drains it on the same thread every {@link TraceSession#DRAIN_MILLIS}. A packet
 * that does not fit is dropped and counted; once {@code max_packets} are in, the rest are not
 * copied (not a drop: the trace is done).
 *
 * <p>Records are packed from offset 0 and the session takes them all at each drain, so the region
 * is a bump allocator that starts over at every drain (no wrap-around, no partial reads):
 * <pre>
 *  0                   8               12      14     15     16
 *  +-------------------+---------------+-------+------+------+---------------------------+
 *  | System.nanoTime() | original len  | kept  | point|  0   | kept bytes of the packet  |
 *  +-------------------+---------------+-------+------+------+---------------------------+
 *  big-endian; kept = min(original len, snaplen) &lt;= 65,535; point = CLIENT_IN .. CLIENT_OUT
 * </pre>
 * Per packet: one clock read, 16 header bytes and one bulk copy from the packet's (direct)
 * buffer into this heap region; no allocation.
 */
public final class TraceRing {
    /** From the client, as read from its socket (side CLIENT, not inbound). */
    public static final int CLIENT_IN = 0;
    /** From the client, as translated and written on (side TRANSLATED, not inbound). */
    public static final int TRANSLATED_OUT = 1;
    /** Toward the client, as read on the translated side (side TRANSLATED, inbound). */
    public static final int TRANSLATED_IN = 2;
    /** Toward the client, as written to its socket (side CLIENT, inbound). */
    public static final int CLIENT_OUT = 3;

    static final int HEADER = 16;
    static final int AT_NANOS = 0;
    static final int AT_LENGTH = 8;
    static final int AT_KEPT = 12;
    static final int AT_POINT = 14;
    /** The largest packet a record holds: an IP packet is at most 65,535 bytes. */
    static final int MAX_PACKET = 65_535;

    private final ByteBuffer region;
    private int used;
    private int snaplen = MAX_PACKET;
    private long budget;
    private long dropped;

    /** A region of {@code bytes} (at least one largest record), allocated once. */
    TraceRing(int bytes) {
        if (bytes < HEADER + MAX_PACKET) {
            throw new IllegalArgumentException("a trace ring of " + bytes + " bytes cannot hold one packet");
        }
        region = ByteBuffer.allocate(bytes);
    }

    /** Ready for a new trace: empty, counts at 0. */
    void reset(int snaplen, long maxPackets) {
        this.snaplen = Math.min(Math.max(1, snaplen), MAX_PACKET);
        this.budget = maxPackets;
        this.used = 0;
        this.dropped = 0;
    }

    /**
     * Copies the packet {@code from[offset, offset + length)} seen at {@code point}. The hot path
     * of a traced task; {@code from}'s position and limit are not used or changed.
     */
    public void copy(ByteBuffer from, int offset, int length, int point) {
        if (budget <= 0) {
            return;
        }
        int kept = Math.min(length, snaplen);
        int at = used;
        if (region.capacity() - at < HEADER + kept) {
            dropped++;
            return;
        }
        region.putLong(at + AT_NANOS, System.nanoTime()).putInt(at + AT_LENGTH, length)
                .putShort(at + AT_KEPT, (short) kept).put(at + AT_POINT, (byte) point).put(at + AT_POINT + 1, (byte) 0);
        region.put(at + HEADER, from, offset, kept);
        used = at + HEADER + kept;
        budget--;
    }

    /** Packets dropped for want of room since {@link #reset}. */
    long dropped() {
        return dropped;
    }

    /** Bytes of records waiting to be drained. */
    int used() {
        return used;
    }

    /** The records (read them up to {@link #used}, then {@link #clear}). */
    ByteBuffer region() {
        return region;
    }

    /** Forgets the drained records; the next packet goes to offset 0. */
    void clear() {
        used = 0;
    }

    int capacity() {
        return region.capacity();
    }
}
