package warren.linux.netlink;

import jnr.ffi.Pointer;

/**
 * A cursor over the attributes between two offsets of a received buffer, bounds-checked: an
 * attribute shorter than its header or running past the end stops the walk (hostile or truncated
 * bytes are not read).
 *
 * <pre>
 * for (NetlinkAttributes a = new NetlinkAttributes(buf, from, to); a.next(); ) {
 *     switch (a.type()) { case X -> x = a.u32(); case Y -> y = a.nested(); ... }
 * }
 * </pre>
 *
 * {@link #type()} is masked with {@link NetlinkMessage#NLA_TYPE_MASK}. Multi-byte getters are host
 * order unless big-endian is in the name; a payload too short for a getter reads as 0.
 */
public final class NetlinkAttributes {
    private final Pointer buf;
    private final int end;
    private int at = -1;
    private int next;
    private int len;
    private int type;

    public NetlinkAttributes(Pointer buf, int from, int to) {
        this.buf = buf;
        this.next = from;
        this.end = to;
    }

    /** Moves to the next attribute; false at the end (or at a malformed one). */
    public boolean next() {
        if (next + NetlinkMessage.NLA_HDRLEN > end) {
            return false;
        }
        int l = buf.getShort(next) & 0xFFFF;
        if (l < NetlinkMessage.NLA_HDRLEN || next + l > end) {
            next = end;
            return false;
        }
        at = next;
        len = l;
        type = buf.getShort(at + 2) & NetlinkMessage.NLA_TYPE_MASK;
        next = at + NetlinkMessage.align(l);
        return true;
    }

    public int type() {
        return type;
    }

    /** Offset of the payload in the buffer. */
    public int payload() {
        return at + NetlinkMessage.NLA_HDRLEN;
    }

    public int payloadLength() {
        return len - NetlinkMessage.NLA_HDRLEN;
    }

    /** The attributes nested in this one. */
    public NetlinkAttributes nested() {
        return new NetlinkAttributes(buf, payload(), at + len);
    }

    /** The payload's first byte; 0 if it is empty. */
    public int u8() {
        return payloadLength() < 1 ? 0 : buf.getByte(payload()) & 0xFF;
    }

    /** The payload as a host-order u32; 0 if it is shorter. */
    public int u32() {
        return payloadLength() < 4 ? 0 : buf.getInt(payload());
    }

    /** The payload as a big-endian u16; 0 if it is shorter. */
    public int be16() {
        return payloadLength() < 2 ? 0 : Short.reverseBytes(buf.getShort(payload())) & 0xFFFF;
    }

    /** The payload as a big-endian u32; 0 if it is shorter. */
    public int be32() {
        return payloadLength() < 4 ? 0 : Integer.reverseBytes(buf.getInt(payload()));
    }

    /** The payload from {@code skip} bytes in, copied. */
    public byte[] bytes(int skip) {
        byte[] v = new byte[Math.max(0, payloadLength() - skip)];
        buf.get(payload() + skip, v, 0, v.length);
        return v;
    }

    public byte[] bytes() {
        return bytes(0);
    }
}
