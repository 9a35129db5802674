package warren.linux.netlink;

import java.nio.charset.StandardCharsets;
import jnr.ffi.Pointer;
import warren.fdpass.libc.Native;

/**
 * Writes netlink requests (netlink(7)) into one preallocated native buffer: the {@code nlmsghdr},
 * the family's fixed header (ifinfomsg, ifaddrmsg, rtmsg, nfgenmsg, ...) and attributes, nested
 * to any depth. Several messages may follow each other (an nfnetlink batch). Every byte of a
 * message is written, padding included, so nothing of an earlier request leaks into the next.
 *
 * <pre>
 * nlmsghdr (16)   0 u32 len  4 u16 type  6 u16 flags  8 u32 seq  12 u32 pid (0: the kernel)
 * family header   familyLength bytes, zeroed by {@link #begin}, set with the family* setters
 * nlattr / rtattr 0 u16 len (header + payload, unpadded)  2 u16 type (| NLA_F_NESTED)
 *                 4 payload, padded to 4 ({@link #align})
 * nested          an attribute whose payload is attributes: {@link #nestStart} ... {@link #nestEnd}
 * </pre>
 *
 * Usage: {@code begin(type, flags, seq, familyLength)}, family header and attributes, {@code
 * end()}; then {@link NetlinkSocket#exchange} sends {@code [0, length())}. Multi-byte values are
 * in host order unless the method says big-endian (ctnetlink and nf_tables want network order in
 * most attributes). Not thread-safe; control path only (addresses and strings are copied from
 * Java arrays).
 */
public final class NetlinkMessage {
    public static final int NLMSG_HDRLEN = 16;
    public static final int NLMSG_ERROR = 2;
    public static final int NLMSG_DONE = 3;
    public static final int NLM_F_REQUEST = 1;
    public static final int NLM_F_ACK = 4;
    public static final int NLM_F_EXCL = 0x200;
    public static final int NLM_F_CREATE = 0x400;
    public static final int NLM_F_APPEND = 0x800;
    public static final int NLM_F_DUMP = 0x300;
    public static final int NLA_F_NESTED = 0x8000;
    public static final int NLA_HDRLEN = 4;
    /** An attribute's type without NLA_F_NESTED and NLA_F_NET_BYTEORDER. */
    public static final int NLA_TYPE_MASK = 0x3FFF;

    private final Pointer buf;
    private final int capacity;
    private int len;
    private int start;

    public NetlinkMessage(int capacity) {
        this.capacity = capacity;
        this.buf = Native.allocate(capacity);
    }

    /** NLMSG_ALIGN / NLA_ALIGN: lengths round up to 4. */
    public static int align(int n) {
        return (n + 3) & ~3;
    }

    /** Forgets every message written so far (the next {@link #begin} writes at offset 0). */
    public NetlinkMessage reset() {
        len = 0;
        return this;
    }

    /**
     * Starts a message after the ones already written: its nlmsghdr (length set by {@link #end})
     * and a zeroed family header of {@code familyLength} bytes.
     */
    public NetlinkMessage begin(int type, int flags, int seq, int familyLength) {
        room(NLMSG_HDRLEN + align(familyLength));
        start = len;
        buf.setMemory(start, NLMSG_HDRLEN + align(familyLength), (byte) 0);
        buf.putShort(start + 4, (short) type);
        buf.putShort(start + 6, (short) flags);
        buf.putInt(start + 8, seq);
        len += NLMSG_HDRLEN + align(familyLength);
        return this;
    }

    /** Ends the current message: writes its nlmsg_len. */
    public NetlinkMessage end() {
        buf.putInt(start, len - start);
        return this;
    }

    // ---- the family header, at an offset from its start (after the nlmsghdr)

    public NetlinkMessage familyU8(int offset, int v) {
        buf.putByte(start + NLMSG_HDRLEN + offset, (byte) v);
        return this;
    }

    public NetlinkMessage familyBe16(int offset, int v) {
        buf.putShort(start + NLMSG_HDRLEN + offset, Short.reverseBytes((short) v));
        return this;
    }

    public NetlinkMessage familyU32(int offset, int v) {
        buf.putInt(start + NLMSG_HDRLEN + offset, v);
        return this;
    }

    // ---- attributes

    /** An attribute with {@code data} as payload. */
    public NetlinkMessage attr(int type, byte[] data) {
        header(type, data.length);
        buf.put(len + NLA_HDRLEN, data, 0, data.length);
        return advance(data.length);
    }

    /** A NUL-terminated string (NLA_NUL_STRING / NLA_STRING as nftables and iproute2 send it). */
    public NetlinkMessage attrString(int type, String s) {
        return attr(type, (s + "\0").getBytes(StandardCharsets.UTF_8));
    }

    public NetlinkMessage attrU8(int type, int v) {
        header(type, 1);
        buf.putByte(len + NLA_HDRLEN, (byte) v);
        return advance(1);
    }

    /** A u32 in host order (rtnetlink's ints, nf_tables register data). */
    public NetlinkMessage attrU32(int type, int v) {
        header(type, 4);
        buf.putInt(len + NLA_HDRLEN, v);
        return advance(4);
    }

    /** A big-endian (network order) u16. */
    public NetlinkMessage attrBe16(int type, int v) {
        header(type, 2);
        buf.putShort(len + NLA_HDRLEN, Short.reverseBytes((short) v));
        return advance(2);
    }

    /** A big-endian (network order) u32. */
    public NetlinkMessage attrBe32(int type, int v) {
        header(type, 4);
        buf.putInt(len + NLA_HDRLEN, Integer.reverseBytes(v));
        return advance(4);
    }

    /** Opens a nested attribute (type | NLA_F_NESTED); returns the mark for {@link #nestEnd}. */
    public int nestStart(int type) {
        room(NLA_HDRLEN);
        int at = len;
        buf.putShort(at, (short) 0);
        buf.putShort(at + 2, (short) (type | NLA_F_NESTED));
        len += NLA_HDRLEN;
        return at;
    }

    /** Closes the nested attribute opened at {@code mark}: its length covers what was written since. */
    public NetlinkMessage nestEnd(int mark) {
        buf.putShort(mark, (short) (len - mark));
        return this;
    }

    // ---- the result

    public Pointer buffer() {
        return buf;
    }

    /** Bytes written: every message so far. */
    public int length() {
        return len;
    }

    private void header(int type, int payload) {
        room(NLA_HDRLEN + align(payload));
        buf.putShort(len, (short) (NLA_HDRLEN + payload));
        buf.putShort(len + 2, (short) type);
        for (int p = NLA_HDRLEN + payload; p < NLA_HDRLEN + align(payload); p++) {
            buf.putByte(len + p, (byte) 0); // padding
        }
    }

    private NetlinkMessage advance(int payload) {
        len += NLA_HDRLEN + align(payload);
        return this;
    }

    private void room(int n) {
        if (len + n > capacity) {
            throw new IllegalStateException("netlink message longer than its " + capacity + "-byte buffer");
        }
    }
}
