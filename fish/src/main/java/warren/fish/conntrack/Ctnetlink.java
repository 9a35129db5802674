package warren.fish.conntrack;

import java.net.Inet4Address;
import java.net.InetAddress;
import java.util.List;
import java.net.UnknownHostException;
import jnr.ffi.Pointer;
import warren.fdpass.Fd;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * The conntrack table over netlink (NETLINK_NETFILTER, subsystem ctnetlink), from Java: create an
 * entry with create-exclusive semantics (NLM_F_CREATE | NLM_F_EXCL: the exact tuple or EEXIST,
 * never a silent rewrite), read one back, delete one. One socket per instance, in the network
 * namespace of the thread that opened it; not thread-safe.
 *
 * <pre>
 * nlmsghdr (16)  type = NFNL_SUBSYS_CTNETLINK &lt;&lt; 8 | IPCTNL_MSG_CT_{NEW,GET,DELETE}
 * nfgenmsg (4)   u8 family, u8 version (0), be16 res_id (0)
 * attributes     CTA_TUPLE_ORIG { CTA_TUPLE_IP { CTA_IP_V4_SRC/DST | CTA_IP_V6_SRC/DST },
 *                                 CTA_TUPLE_PROTO { CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT
 *                                                   | CTA_PROTO_ICMP_ID/TYPE/CODE } }
 *                CTA_TUPLE_REPLY { same }, CTA_TIMEOUT (be32 s), CTA_STATUS (be32),
 *                CTA_PROTOINFO { CTA_PROTOINFO_TCP { CTA_PROTOINFO_TCP_STATE (u8) } }
 * </pre>
 * Values inside ctnetlink attributes are big-endian (network order).
 */
public final class Ctnetlink implements AutoCloseable {
    private static final int NETLINK_NETFILTER = 12;
    private static final int NFNL_SUBSYS_CTNETLINK = 1;
    private static final int MSG_NEW = 0;
    private static final int MSG_GET = 1;
    private static final int MSG_DELETE = 2;
    private static final int NLMSG_ERROR = 2;
    private static final int NLM_F_REQUEST = 1;
    private static final int NLM_F_ACK = 4;
    private static final int NLM_F_EXCL = 0x200;
    private static final int NLM_F_CREATE = 0x400;
    private static final int NLA_F_NESTED = 0x8000;

    static final int CTA_TUPLE_ORIG = 1;
    static final int CTA_TUPLE_REPLY = 2;
    static final int CTA_STATUS = 3;
    static final int CTA_PROTOINFO = 4;
    static final int CTA_TIMEOUT = 7;
    static final int CTA_MARK = 8;
    static final int NLMSG_DONE = 3;
    static final int NLM_F_DUMP = 0x300;
    static final int CTA_TUPLE_IP = 1;
    static final int CTA_TUPLE_PROTO = 2;
    static final int CTA_IP_V4_SRC = 1;
    static final int CTA_IP_V4_DST = 2;
    static final int CTA_IP_V6_SRC = 3;
    static final int CTA_IP_V6_DST = 4;
    static final int CTA_PROTO_NUM = 1;
    static final int CTA_PROTO_SRC_PORT = 2;
    static final int CTA_PROTO_DST_PORT = 3;
    static final int CTA_PROTO_ICMP_ID = 4;
    static final int CTA_PROTO_ICMP_TYPE = 5;
    static final int CTA_PROTO_ICMP_CODE = 6;
    static final int CTA_PROTO_ICMPV6_ID = 7;
    static final int CTA_PROTO_ICMPV6_TYPE = 8;
    static final int CTA_PROTO_ICMPV6_CODE = 9;
    static final int CTA_PROTOINFO_TCP = 1;
    static final int CTA_PROTOINFO_TCP_STATE = 1;

    /** IPS_CONFIRMED | IPS_SEEN_REPLY | IPS_ASSURED: what an established flow's entry carries. */
    public static final int STATUS_ESTABLISHED = 0x8 | 0x2 | 0x4;
    /**
     * IPS_FIXED_TIMEOUT: the kernel's packet path never refreshes the entry's timeout (else the
     * first packet it tracks sets TCP's 5-day established timeout); only its owner does, and
     * ctnetlink refuses a new timeout while the bit is set (EPERM), see {@link #refreshFixed}.
     */
    public static final int IPS_FIXED_TIMEOUT = 0x400;
    public static final int TCP_CONNTRACK_ESTABLISHED = 3;
    public static final int TCP_CONNTRACK_SYN_SENT = 1;

    /** One direction of a conntrack entry: protocol, addresses and ports (ICMP: id, type, code). */
    public record Tuple(int protocol, InetAddress src, InetAddress dst, int srcPort, int dstPort) {
        public Tuple reversed() {
            return new Tuple(protocol, dst, src, dstPort, srcPort);
        }

        @Override
        public String toString() {
            return protocol + " " + src.getHostAddress() + ":" + srcPort + " -> " + dst.getHostAddress() + ":" + dstPort;
        }
    }

    /** An entry as read back: its two tuples, timeout (s), status bits and TCP state (-1 if none). */
    public record Entry(Tuple original, Tuple reply, int timeout, int status, int tcpState, int mark) {}

    private final Fd fd;
    private final Pointer buf = Native.allocate(8192);
    private int len;
    private int seq;

    public Ctnetlink() throws NativeIoException {
        fd = Fd.adopt(Native.socket(Native.AF_NETLINK, Native.SOCK_RAW | Native.SOCK_CLOEXEC, NETLINK_NETFILTER));
    }

    private void begin(int msg, int flags, int family) {
        buf.setMemory(0, 512, (byte) 0);
        buf.putShort(4, (short) ((NFNL_SUBSYS_CTNETLINK << 8) | msg));
        buf.putShort(6, (short) (NLM_F_REQUEST | NLM_F_ACK | flags));
        buf.putInt(8, ++seq);
        buf.putByte(16, (byte) family);
        len = 20;
    }

    private int nestStart(int type) {
        int at = len;
        buf.putShort(len + 2, (short) (type | NLA_F_NESTED));
        len += 4;
        return at;
    }

    private void nestEnd(int at) {
        buf.putShort(at, (short) (len - at));
    }

    private void attr(int type, byte[] data) {
        buf.putShort(len, (short) (4 + data.length));
        buf.putShort(len + 2, (short) type);
        buf.put(len + 4, data, 0, data.length);
        len += (4 + data.length + 3) & ~3;
    }

    private void attrU8(int type, int v) {
        attr(type, new byte[] {(byte) v});
    }

    private void attrBe16(int type, int v) {
        attr(type, new byte[] {(byte) (v >>> 8), (byte) v});
    }

    private void attrBe32(int type, int v) {
        attr(type, new byte[] {(byte) (v >>> 24), (byte) (v >>> 16), (byte) (v >>> 8), (byte) v});
    }

    private void tuple(int type, Tuple t) {
        int outer = nestStart(type);
        int ip = nestStart(CTA_TUPLE_IP);
        boolean v4 = t.src() instanceof Inet4Address;
        attr(v4 ? CTA_IP_V4_SRC : CTA_IP_V6_SRC, t.src().getAddress());
        attr(v4 ? CTA_IP_V4_DST : CTA_IP_V6_DST, t.dst().getAddress());
        nestEnd(ip);
        int proto = nestStart(CTA_TUPLE_PROTO);
        attrU8(CTA_PROTO_NUM, t.protocol());
        if (t.protocol() == 1 || t.protocol() == 58) {
            boolean v6 = t.protocol() == 58;
            attrBe16(v6 ? CTA_PROTO_ICMPV6_ID : CTA_PROTO_ICMP_ID, t.srcPort());
            attrU8(v6 ? CTA_PROTO_ICMPV6_TYPE : CTA_PROTO_ICMP_TYPE, t.dstPort() >>> 8);
            attrU8(v6 ? CTA_PROTO_ICMPV6_CODE : CTA_PROTO_ICMP_CODE, t.dstPort() & 0xFF);
        } else {
            attrBe16(CTA_PROTO_SRC_PORT, t.srcPort());
            attrBe16(CTA_PROTO_DST_PORT, t.dstPort());
        }
        nestEnd(proto);
        nestEnd(outer);
    }

    private static int family(Tuple t) {
        return t.src() instanceof Inet4Address ? Native.AF_INET : Native.AF_INET6;
    }

    /**
     * Creates the entry {@code original} / {@code reply} with create-exclusive semantics.
     * Returns false if an entry with either tuple exists already (EEXIST): the caller tries another
     * port. TCP entries are made ESTABLISHED-like with {@code tcpState}.
     */
    public boolean createExclusive(Tuple original, Tuple reply, int timeoutSeconds, int tcpState)
            throws NativeIoException {
        return createExclusive(original, reply, timeoutSeconds, tcpState, 0);
    }

    /** As above, with a conntrack mark (0: none). */
    public boolean createExclusive(Tuple original, Tuple reply, int timeoutSeconds, int tcpState, int mark)
            throws NativeIoException {
        return createExclusive(original, reply, timeoutSeconds, tcpState, mark, 0);
    }

    /** As above, with extra status bits (e.g. {@link #IPS_FIXED_TIMEOUT}). */
    public boolean createExclusive(Tuple original, Tuple reply, int timeoutSeconds, int tcpState, int mark, int status)
            throws NativeIoException {
        begin(MSG_NEW, NLM_F_CREATE | NLM_F_EXCL, family(original));
        tuple(CTA_TUPLE_ORIG, original);
        tuple(CTA_TUPLE_REPLY, reply);
        attrBe32(CTA_TIMEOUT, timeoutSeconds);
        attrBe32(CTA_STATUS, STATUS_ESTABLISHED | status);
        if (mark != 0) {
            attrBe32(CTA_MARK, mark);
        }
        if (original.protocol() == 6) {
            int pi = nestStart(CTA_PROTOINFO);
            int tcp = nestStart(CTA_PROTOINFO_TCP);
            attrU8(CTA_PROTOINFO_TCP_STATE, tcpState);
            nestEnd(tcp);
            nestEnd(pi);
        }
        int err = request(false);
        if (err == Errno.EEXIST) {
            return false;
        }
        if (err != 0) {
            throw new NativeIoException("ctnetlink", err, "create " + original);
        }
        return true;
    }

    /** The entry whose original tuple is {@code t}, or null. */
    public Entry get(Tuple t) throws NativeIoException {
        begin(MSG_GET, 0, family(t));
        tuple(CTA_TUPLE_ORIG, t);
        int err = request(true);
        if (err == Errno.ENOENT) {
            return null;
        }
        if (err != 0) {
            throw new NativeIoException("ctnetlink", err, "get " + t);
        }
        return lastEntry;
    }

    /**
     * Sets a new timeout on a fixed-timeout entry: the bit is cleared (a change of the timeout
     * is refused while it is set), then the timeout and the bit are set in one message (ctnetlink
     * applies CTA_TIMEOUT before CTA_STATUS). False if the entry has gone.
     */
    public boolean refreshFixed(Tuple original, int timeoutSeconds) throws NativeIoException {
        begin(MSG_NEW, 0, family(original)); // no NLM_F_CREATE: an update of the existing entry
        tuple(CTA_TUPLE_ORIG, original);
        attrBe32(CTA_STATUS, STATUS_ESTABLISHED);
        int err = request(false);
        if (err == 0) {
            begin(MSG_NEW, 0, family(original));
            tuple(CTA_TUPLE_ORIG, original);
            attrBe32(CTA_TIMEOUT, timeoutSeconds);
            attrBe32(CTA_STATUS, STATUS_ESTABLISHED | IPS_FIXED_TIMEOUT);
            err = request(false);
        }
        if (err == Errno.ENOENT) {
            return false;
        }
        if (err != 0) {
            throw new NativeIoException("ctnetlink", err, "refresh " + original);
        }
        return true;
    }

    /** Deletes the entry whose original tuple is {@code t}; false if there was none. */
    public boolean delete(Tuple t) throws NativeIoException {
        begin(MSG_DELETE, 0, family(t));
        tuple(CTA_TUPLE_ORIG, t);
        int err = request(false);
        if (err == Errno.ENOENT) {
            return false;
        }
        if (err != 0) {
            throw new NativeIoException("ctnetlink", err, "delete " + t);
        }
        return true;
    }

    private Entry lastEntry;
    private List<Entry> dumped;

    /** Every entry of {@code family} (Native.AF_INET or AF_INET6) in this namespace. */
    public List<Entry> dump(int family) throws NativeIoException {
        begin(MSG_GET, NLM_F_DUMP, family);
        List<Entry> out = new java.util.ArrayList<>();
        dumped = out;
        try {
            int err = request(true);
            if (err != 0) {
                throw new NativeIoException("ctnetlink", err, "dump");
            }
            return out;
        } finally {
            dumped = null;
        }
    }

    /** Sends the request, reads until its ACK; returns the errno (0 for success). */
    private int request(boolean expectEntry) throws NativeIoException {
        buf.putInt(0, len);
        lastEntry = null;
        if (Native.ioResult("write", Native.write(fd.get(), buf, len)) != len) {
            throw new NativeIoException("sendmsg", Errno.EIO, "ctnetlink");
        }
        while (true) {
            long n = Native.ioResult("read", Native.read(fd.get(), buf, 8192));
            int off = 0;
            while (off + 16 <= n) {
                int mlen = buf.getInt(off);
                int type = buf.getShort(off + 4) & 0xFFFF;
                int mseq = buf.getInt(off + 8);
                if (mlen < 16) {
                    break;
                }
                if (mseq == seq) {
                    if (type == NLMSG_ERROR) {
                        return -buf.getInt(off + 16);
                    }
                    if (type == NLMSG_DONE) {
                        return 0; // the end of a dump
                    }
                    if (expectEntry && (type & 0xFF) == MSG_NEW) {
                        lastEntry = parseEntry(off + 20, off + mlen);
                        if (dumped != null && lastEntry.original() != null) {
                            dumped.add(lastEntry);
                        }
                    }
                }
                off += (mlen + 3) & ~3;
            }
        }
    }

    private Entry parseEntry(int from, int to) {
        Tuple orig = null;
        Tuple reply = null;
        int timeout = 0;
        int status = 0;
        int tcpState = -1;
        int mark = 0;
        for (int a = from; a + 4 <= to; ) {
            int alen = buf.getShort(a) & 0xFFFF;
            int type = buf.getShort(a + 2) & 0x7FFF;
            if (alen < 4 || a + alen > to) {
                break;
            }
            switch (type) {
                case CTA_TUPLE_ORIG: orig = parseTuple(a + 4, a + alen); break;
                case CTA_TUPLE_REPLY: reply = parseTuple(a + 4, a + alen); break;
                case CTA_TIMEOUT: timeout = be32(a + 4); break;
                case CTA_STATUS: status = be32(a + 4); break;
                case CTA_PROTOINFO: tcpState = parseTcpState(a + 4, a + alen); break;
                case CTA_MARK: mark = be32(a + 4); break;
                default: break;
            }
            a += (alen + 3) & ~3;
        }
        return new Entry(orig, reply, timeout, status, tcpState, mark);
    }

    private int parseTcpState(int from, int to) {
        for (int a = from; a + 4 <= to; ) {
            int alen = buf.getShort(a) & 0xFFFF;
            int type = buf.getShort(a + 2) & 0x7FFF;
            if (alen < 4) {
                break;
            }
            if (type == CTA_PROTOINFO_TCP) {
                for (int b = a + 4; b + 4 <= a + alen; ) {
                    int blen = buf.getShort(b) & 0xFFFF;
                    if (blen < 4) {
                        break;
                    }
                    if ((buf.getShort(b + 2) & 0x7FFF) == CTA_PROTOINFO_TCP_STATE) {
                        return buf.getByte(b + 4) & 0xFF;
                    }
                    b += (blen + 3) & ~3;
                }
            }
            a += (alen + 3) & ~3;
        }
        return -1;
    }

    private Tuple parseTuple(int from, int to) {
        byte[] src = null;
        byte[] dst = null;
        int proto = 0;
        int sport = 0;
        int dport = 0;
        for (int a = from; a + 4 <= to; ) {
            int alen = buf.getShort(a) & 0xFFFF;
            int type = buf.getShort(a + 2) & 0x7FFF;
            if (alen < 4) {
                break;
            }
            for (int b = a + 4; b + 4 <= a + alen; ) {
                int blen = buf.getShort(b) & 0xFFFF;
                int btype = buf.getShort(b + 2) & 0x7FFF;
                if (blen < 4) {
                    break;
                }
                if (type == CTA_TUPLE_IP) {
                    byte[] v = new byte[blen - 4];
                    buf.get(b + 4, v, 0, v.length);
                    if (btype == CTA_IP_V4_SRC || btype == CTA_IP_V6_SRC) {
                        src = v;
                    } else if (btype == CTA_IP_V4_DST || btype == CTA_IP_V6_DST) {
                        dst = v;
                    }
                } else if (type == CTA_TUPLE_PROTO) {
                    switch (btype) {
                        case CTA_PROTO_NUM: proto = buf.getByte(b + 4) & 0xFF; break;
                        case CTA_PROTO_SRC_PORT: case CTA_PROTO_ICMP_ID: case CTA_PROTO_ICMPV6_ID:
                            sport = be16(b + 4); break;
                        case CTA_PROTO_DST_PORT: dport = be16(b + 4); break;
                        case CTA_PROTO_ICMP_TYPE: case CTA_PROTO_ICMPV6_TYPE:
                            dport = (dport & 0xFF) | ((buf.getByte(b + 4) & 0xFF) << 8); break;
                        case CTA_PROTO_ICMP_CODE: case CTA_PROTO_ICMPV6_CODE:
                            dport = (dport & 0xFF00) | (buf.getByte(b + 4) & 0xFF); break;
                        default: break;
                    }
                }
                b += (blen + 3) & ~3;
            }
            a += (alen + 3) & ~3;
        }
        try {
            return src == null || dst == null ? null
                    : new Tuple(proto, InetAddress.getByAddress(src), InetAddress.getByAddress(dst), sport, dport);
        } catch (UnknownHostException e) {
            return null;
        }
    }

    private int be16(int off) {
        return ((buf.getByte(off) & 0xFF) << 8) | (buf.getByte(off + 1) & 0xFF);
    }

    private int be32(int off) {
        return (be16(off) << 16) | be16(off + 2);
    }

    @Override
    public void close() {
        fd.close();
    }
}
