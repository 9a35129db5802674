package warren.fish.conntrack;

import java.net.Inet4Address;
import java.net.InetAddress;
import java.net.UnknownHostException;
import java.util.List;
import jnr.ffi.Pointer;
import warren.fdpass.Fd;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Layout;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.linux.netlink.NetlinkAttributes;
import warren.linux.netlink.NetlinkMessage;

/**
 * The conntrack table over netlink (NETLINK_NETFILTER, subsystem ctnetlink), from Java: create an
 * entry with create-exclusive semantics (NLM_F_CREATE | NLM_F_EXCL: the exact tuple or EEXIST,
 * never a silent rewrite), read one back, delete one. Messages are built by {@link NetlinkMessage}
 * and the kernel's answers read here, each matched to its request by sequence number. One socket
 * per instance, in the network namespace of the thread that opened it; not thread-safe.
 *
 * <p><b>Batches</b> (issue 15): {@link #batch()} appends many requests (create-exclusive, delete),
 * each its own netlink message with its own sequence number and NLM_F_ACK, to one preallocated
 * buffer, writes them with one write(2) and reads their answers together (recvmmsg(2)), each
 * answer kept for its request: one that fails (EEXIST, ENOENT, ...) fails alone, exactly as the
 * same request on its own would. ctnetlink handles the messages of one write in order, one by
 * one, and has queued every answer before the write returns ({@link Batch}).
 *
 * <pre>
 * nlmsghdr (16)  type = NFNL_SUBSYS_CTNETLINK &lt;&lt; 8 | IPCTNL_MSG_CT_{NEW,GET,DELETE}
 * nfgenmsg (4)   u8 family, u8 version (0), be16 res_id (0)
 * attributes     CTA_TUPLE_ORIG { CTA_TUPLE_IP { CTA_IP_V4_SRC/DST | CTA_IP_V6_SRC/DST },
 *                                 CTA_TUPLE_PROTO { CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT
 *                                                   | CTA_PROTO_ICMP_ID/TYPE/CODE } }
 *                CTA_TUPLE_REPLY { same }, CTA_TIMEOUT (be32 s), CTA_STATUS (be32),
 *                CTA_PROTOINFO { CTA_PROTOINFO_TCP { CTA_PROTOINFO_TCP_STATE (u8),
 *                                CTA_PROTOINFO_TCP_WSCALE_ORIGINAL/REPLY (u8),
 *                                CTA_PROTOINFO_TCP_FLAGS_ORIGINAL/REPLY ({u8 flags, u8 mask}) } },
 *                CTA_MARK (be32), CTA_ID (be32, read back only)
 * </pre>
 * Values inside ctnetlink attributes are big-endian (network order).
 */
public final class Ctnetlink implements AutoCloseable {
    private static final int NETLINK_NETFILTER = 12;
    private static final int NFNL_SUBSYS_CTNETLINK = 1;
    private static final int MSG_NEW = 0;
    private static final int MSG_GET = 1;
    private static final int MSG_DELETE = 2;
    private static final int NLM_F_EXCL = NetlinkMessage.NLM_F_EXCL;
    private static final int NLM_F_CREATE = NetlinkMessage.NLM_F_CREATE;
    private static final int NFGENMSG_SIZE = 4;
    private static final int BUF = 8192;
    private static final int SOL_NETLINK = 270;
    /** Answers to failed requests without a copy of the request (Linux 4.3+). */
    private static final int NETLINK_CAP_ACK = 10;
    /** ETIME: ctnetlink's answer to a change of an entry being deleted (IPS_DYING). */
    private static final int ETIME = 62;

    static final int CTA_TUPLE_ORIG = 1;
    static final int CTA_TUPLE_REPLY = 2;
    static final int CTA_STATUS = 3;
    static final int CTA_PROTOINFO = 4;
    static final int CTA_TIMEOUT = 7;
    static final int CTA_MARK = 8;
    static final int CTA_ID = 12;
    static final int NLM_F_DUMP = NetlinkMessage.NLM_F_DUMP;
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
    static final int CTA_PROTOINFO_TCP_WSCALE_ORIGINAL = 2;
    static final int CTA_PROTOINFO_TCP_WSCALE_REPLY = 3;
    static final int CTA_PROTOINFO_TCP_FLAGS_ORIGINAL = 4;
    static final int CTA_PROTOINFO_TCP_FLAGS_REPLY = 5;
    /**
     * The TCP tracking flags a replacement entry keeps (IP_CT_TCP_FLAG_WINDOW_SCALE, SACK_PERM,
     * CLOSE_INIT, BE_LIBERAL): what the handshake taught the kernel and the sequence numbers of
     * the next packets cannot. Not MAXACK_SET and the like: they vouch for window data
     * (td_maxack, ...) a new entry has not got, and would make the next packets look out of window.
     */
    static final int TCP_FLAGS_KEPT = 0x01 | 0x02 | 0x04 | 0x08;

    /** IPS_CONFIRMED | IPS_SEEN_REPLY | IPS_ASSURED: what an established flow's entry carries. */
    public static final int STATUS_ESTABLISHED = 0x8 | 0x2 | 0x4;
    /**
     * IPS_FIXED_TIMEOUT: the kernel's packet path never refreshes the entry's timeout (else the
     * first packet it tracks sets TCP's 5-day established timeout). Nor does ctnetlink: it refuses
     * a new timeout while the bit is set (EPERM) and never clears a status bit, see
     * {@link #refreshFixed}.
     */
    public static final int IPS_FIXED_TIMEOUT = 0x400;
    public static final int TCP_CONNTRACK_SYN_SENT = 1;
    public static final int TCP_CONNTRACK_ESTABLISHED = 3;
    public static final int TCP_CONNTRACK_FIN_WAIT = 4;
    public static final int TCP_CONNTRACK_CLOSE_WAIT = 5;
    public static final int TCP_CONNTRACK_LAST_ACK = 6;
    public static final int TCP_CONNTRACK_TIME_WAIT = 7;
    public static final int TCP_CONNTRACK_CLOSE = 8;

    /** What {@link #refreshFixed} found and did. */
    public enum Refresh {
        /** The entry carries the new fixed timeout (it was replaced: same tuples, state and mark). */
        REFRESHED,
        /**
         * The entry on the tuple had no IPS_FIXED_TIMEOUT (the flow's own packets made it anew
         * after the reservation had gone, e.g. deleted by someone else): it now carries the bit,
         * the timeout and the mark, as a reservation does.
         */
        RECLAIMED,
        /**
         * No entry holds the tuple any more (it expired, was deleted, or the kernel dropped a
         * closed connection's entry), or another owner's does: nothing was changed or created.
         */
        GONE
    }

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

    /**
     * An entry as read back: its two tuples, timeout (s), status bits, TCP state (-1 if none),
     * mark, id (CTA_ID), and the TCP window scales and tracking flags of each direction (-1 if none).
     */
    public record Entry(Tuple original, Tuple reply, int timeout, int status, int tcpState, int mark, int id,
            int wscaleOriginal, int wscaleReply, int flagsOriginal, int flagsReply) {}

    private final Fd fd;
    /** Where answers are read (a request's own, a GET's entry, a dump's parts). */
    private final Pointer rx = Native.allocate(BUF);
    private final NetlinkMessage msg = new NetlinkMessage(512);
    private final Batch batch;
    /** The sequence number of the last request (a single request's is the one its answer carries). */
    private int seq;

    public Ctnetlink() throws NativeIoException {
        fd = Fd.adopt(Native.socket(Native.AF_NETLINK, Native.SOCK_RAW | Native.SOCK_CLOEXEC, NETLINK_NETFILTER));
        try {
            // an error's answer without a copy of the request (36 bytes, like an ACK): a batch's
            // answers take less of the receive buffer; nothing here reads the copy
            Native.setsockoptInt(fd.get(), SOL_NETLINK, NETLINK_CAP_ACK, 1);
        } catch (NativeIoException e) {
            // an old kernel: the answers are longer, a batch's slots still hold them
        }
        try {
            batch = new Batch();
        } catch (RuntimeException | Error e) {
            fd.close();
            throw e;
        }
    }

    /** nlmsghdr (ACK asked) + nfgenmsg {family, version 0, res_id 0}, as a new message of {@code m}. */
    private static void begin(NetlinkMessage m, int seq, int msgType, int flags, int family) {
        m.begin((NFNL_SUBSYS_CTNETLINK << 8) | msgType,
                NetlinkMessage.NLM_F_REQUEST | NetlinkMessage.NLM_F_ACK | flags, seq, NFGENMSG_SIZE).familyU8(0, family);
    }

    /** A request of its own in {@link #msg}, with the next sequence number. */
    private void begin(int msgType, int flags, int family) {
        begin(msg.reset(), ++seq, msgType, flags, family);
    }

    private void tuple(int type, Tuple t) {
        tuple(msg, type, t);
    }

    private static void tuple(NetlinkMessage msg, int type, Tuple t) {
        int outer = msg.nestStart(type);
        int ip = msg.nestStart(CTA_TUPLE_IP);
        boolean v4 = t.src() instanceof Inet4Address;
        msg.attr(v4 ? CTA_IP_V4_SRC : CTA_IP_V6_SRC, t.src().getAddress());
        msg.attr(v4 ? CTA_IP_V4_DST : CTA_IP_V6_DST, t.dst().getAddress());
        msg.nestEnd(ip);
        int proto = msg.nestStart(CTA_TUPLE_PROTO);
        msg.attrU8(CTA_PROTO_NUM, t.protocol());
        if (t.protocol() == 1 || t.protocol() == 58) {
            boolean v6 = t.protocol() == 58;
            msg.attrBe16(v6 ? CTA_PROTO_ICMPV6_ID : CTA_PROTO_ICMP_ID, t.srcPort());
            msg.attrU8(v6 ? CTA_PROTO_ICMPV6_TYPE : CTA_PROTO_ICMP_TYPE, t.dstPort() >>> 8);
            msg.attrU8(v6 ? CTA_PROTO_ICMPV6_CODE : CTA_PROTO_ICMP_CODE, t.dstPort() & 0xFF);
        } else {
            msg.attrBe16(CTA_PROTO_SRC_PORT, t.srcPort());
            msg.attrBe16(CTA_PROTO_DST_PORT, t.dstPort());
        }
        msg.nestEnd(proto);
        msg.nestEnd(outer);
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
        return create(original, reply, timeoutSeconds, tcpState, mark, status, -1, -1, -1, -1);
    }

    /**
     * A create-exclusive request (NLM_F_CREATE | NLM_F_EXCL: the exact tuples or EEXIST) as a new
     * message of {@code msg} with sequence number {@code seq}, ended. At most {@link #MAX_REQUEST} bytes.
     */
    private static void encodeCreate(NetlinkMessage msg, int seq, Tuple original, Tuple reply, int timeoutSeconds,
            int tcpState, int mark, int status, int wscaleOriginal, int wscaleReply, int flagsOriginal, int flagsReply) {
        begin(msg, seq, MSG_NEW, NLM_F_CREATE | NLM_F_EXCL, family(original));
        tuple(msg, CTA_TUPLE_ORIG, original);
        tuple(msg, CTA_TUPLE_REPLY, reply);
        msg.attrBe32(CTA_TIMEOUT, timeoutSeconds);
        msg.attrBe32(CTA_STATUS, STATUS_ESTABLISHED | status);
        if (mark != 0) {
            msg.attrBe32(CTA_MARK, mark);
        }
        if (original.protocol() == 6) {
            int pi = msg.nestStart(CTA_PROTOINFO);
            int tcp = msg.nestStart(CTA_PROTOINFO_TCP);
            msg.attrU8(CTA_PROTOINFO_TCP_STATE, tcpState);
            if (flagsOriginal >= 0 && flagsReply >= 0) { // applied before the scales, which need WINDOW_SCALE on both
                msg.attr(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, new byte[] {(byte) (flagsOriginal & TCP_FLAGS_KEPT), (byte) TCP_FLAGS_KEPT});
                msg.attr(CTA_PROTOINFO_TCP_FLAGS_REPLY, new byte[] {(byte) (flagsReply & TCP_FLAGS_KEPT), (byte) TCP_FLAGS_KEPT});
            }
            if (wscaleOriginal >= 0 && wscaleReply >= 0) {
                msg.attrU8(CTA_PROTOINFO_TCP_WSCALE_ORIGINAL, wscaleOriginal);
                msg.attrU8(CTA_PROTOINFO_TCP_WSCALE_REPLY, wscaleReply);
            }
            msg.nestEnd(tcp);
            msg.nestEnd(pi);
        }
        msg.end();
    }

    /** As above, with the TCP window scales and tracking flags of each direction (-1: not sent). */
    private boolean create(Tuple original, Tuple reply, int timeoutSeconds, int tcpState, int mark, int status,
            int wscaleOriginal, int wscaleReply, int flagsOriginal, int flagsReply) throws NativeIoException {
        msg.reset();
        encodeCreate(msg, ++seq, original, reply, timeoutSeconds, tcpState, mark, status, wscaleOriginal, wscaleReply,
                flagsOriginal, flagsReply);
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
     * How many times {@link #refreshFixed} replaces an entry that a packet in flight made between
     * its delete and its create in the reply's orientation before it takes that one over as it is.
     * Measured (CtnetlinkTest, a server streaming 1,400-byte writes over loopback, 2,000 refreshes):
     * ~5 % of refreshes meet such an entry, ~0.3 % twice in a row, ~0.1 % three times (one
     * replacement's gap invites the next packet as the first did). The next refresh of a flow left
     * reversed puts it right.
     */
    static final int REPLACE_ATTEMPTS = 8;

    /**
     * Gives the fixed-timeout entry holding {@code original} (in either direction) a new timeout
     * of {@code timeoutSeconds}, keeping IPS_FIXED_TIMEOUT, so that the kernel's packet path still
     * never sets its own (TCP established: 5 days), and leaves it in the flow's orientation:
     * {@code original} as its original tuple.
     *
     * <p>ctnetlink cannot do that to the entry itself (since the check came with the conntrack
     * BPF kfuncs, Linux 6.0; seen on 6.18): an update's
     * CTA_TIMEOUT goes to {@code __nf_ct_change_timeout}, which answers EPERM while the entry has
     * IPS_FIXED_TIMEOUT, and an update's CTA_STATUS ({@code nf_ct_change_status_common}) only ever
     * sets bits, so the bit cannot be cleared first. The entry is therefore replaced: read back,
     * deleted by its CTA_ID (ENOENT if it went or became another meanwhile), and created again
     * exclusively with the same tuples, TCP state, window scales and tracking flags, mark and
     * Fish's status bits, and the new timeout (TCP's window edges start afresh from the next
     * packets, as for an entry Fish makes).
     *
     * <p>The tuple is free between the two messages. A packet of the flow in flight there makes
     * an entry on it (EEXIST for the create): one from the client's side has the flow's
     * orientation and is taken over (bit, timeout, mark set on it), as an entry without the bit on
     * the tuple always is ({@link Refresh#RECLAIMED}). One from the server's side (a busy download
     * makes this likely) has the reply's orientation: its original tuple is the server's, which a
     * recovery after a crash and an operator's {@code conntrack -L --dport SERVER_PORT} look for
     * in vain. Such an entry is replaced again, up to {@link #REPLACE_ATTEMPTS} times, and only
     * then taken over as it is (readers accept both orientations: {@code FishStateCodec.fromFdStore},
     * {@code EgressNamespace.removeStale}).
     *
     * @param mark the mark a reservation carries, set on an entry that has none (an entry's own
     *     mark is kept: a successor recovers its flows by it)
     */
    public Refresh refreshFixed(Tuple original, int timeoutSeconds, int mark) throws NativeIoException {
        Entry e = get(original);
        Refresh made = Refresh.REFRESHED;
        for (int attempt = 0; ; attempt++) {
            if (e == null) {
                return Refresh.GONE;
            }
            int keepMark = e.mark() != 0 ? e.mark() : mark;
            boolean same = original.equals(e.original()); // else the entry holds it as its reply tuple
            boolean fixed = (e.status() & IPS_FIXED_TIMEOUT) != 0;
            if (!fixed && !same && attempt >= REPLACE_ATTEMPTS) {
                return takeOver(original, timeoutSeconds, keepMark) ? made : Refresh.GONE;
            }
            if (!fixed && same) {
                return takeOver(original, timeoutSeconds, keepMark) ? (attempt == 0 ? Refresh.RECLAIMED : made)
                        : Refresh.GONE;
            }
            if (fixed && attempt > 0) {
                return Refresh.GONE; // another owner's fixed entry made on the tuple in between
            }
            if (attempt == 0 && !fixed) {
                made = Refresh.RECLAIMED; // an entry of the flow's packets in the reply's orientation
            }
            begin(MSG_DELETE, 0, family(original));
            tuple(CTA_TUPLE_ORIG, e.original());
            msg.attrBe32(CTA_ID, e.id());
            int err = request(false);
            if (err == Errno.ENOENT) {
                return Refresh.GONE;
            }
            if (err != 0) {
                throw new NativeIoException("ctnetlink", err, "refresh (delete) " + original);
            }
            Tuple other = same ? e.reply() : e.original();
            if (create(original, other, timeoutSeconds, e.tcpState(), keepMark,
                    IPS_FIXED_TIMEOUT, same ? e.wscaleOriginal() : e.wscaleReply(), same ? e.wscaleReply() : e.wscaleOriginal(),
                    same ? e.flagsOriginal() : e.flagsReply(), same ? e.flagsReply() : e.flagsOriginal())) {
                return made;
            }
            e = get(original); // EEXIST: a packet in flight made an entry on the tuple in between
        }
    }

    /**
     * Makes the entry without IPS_FIXED_TIMEOUT that holds {@code original} a reservation: one
     * update whose CTA_TIMEOUT ctnetlink applies before its CTA_STATUS sets the bit. False if it
     * has gone (ENOENT) or is being deleted (ETIME).
     */
    private boolean takeOver(Tuple original, int timeoutSeconds, int mark) throws NativeIoException {
        begin(MSG_NEW, 0, family(original)); // no NLM_F_CREATE: an update of the existing entry
        tuple(CTA_TUPLE_ORIG, original);
        msg.attrBe32(CTA_TIMEOUT, timeoutSeconds);
        msg.attrBe32(CTA_STATUS, STATUS_ESTABLISHED | IPS_FIXED_TIMEOUT);
        if (mark != 0) {
            msg.attrBe32(CTA_MARK, mark);
        }
        int err = request(false);
        if (err == Errno.ENOENT || err == ETIME) {
            return false;
        }
        if (err != 0) {
            throw new NativeIoException("ctnetlink", err, "refresh (take over) " + original);
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

    /**
     * Sends the request in {@link #msg} (sequence number {@link #seq}) and reads until its answer:
     * the NLMSG_ERROR carrying its sequence number (error 0 = ACK, else -errno), or a dump's
     * NLMSG_DONE; a GET's entry and a dump's parts come before it. Messages of other sequence
     * numbers (a late answer to an earlier request) are skipped. Returns the errno (0 for success).
     *
     * <pre>
     * nlmsghdr (16)   0 u32 len  4 u16 type  6 u16 flags  8 u32 seq  12 u32 pid
     * nlmsgerr        16 i32 error (0 or -errno), then the request's nlmsghdr (NETLINK_CAP_ACK: no more)
     * </pre>
     */
    private int request(boolean expectEntry) throws NativeIoException {
        msg.end();
        lastEntry = null;
        int len = msg.length();
        if (Native.ioResult("write", Native.write(fd.get(), msg.buffer(), len)) != len) {
            throw new NativeIoException("sendmsg", Errno.EIO, "ctnetlink");
        }
        while (true) {
            long n = Native.ioResult("read", Native.read(fd.get(), rx, BUF));
            for (int off = 0; off + NetlinkMessage.NLMSG_HDRLEN <= n; ) {
                int mlen = rx.getInt(off);
                if (mlen < NetlinkMessage.NLMSG_HDRLEN || off + mlen > n) {
                    break;
                }
                int type = rx.getShort(off + 4) & 0xFFFF;
                if (rx.getInt(off + 8) == seq) {
                    if (type == NetlinkMessage.NLMSG_ERROR) {
                        return mlen >= ERROR_ANSWER ? -rx.getInt(off + NetlinkMessage.NLMSG_HDRLEN) : Errno.EIO;
                    }
                    if (type == NetlinkMessage.NLMSG_DONE) {
                        return 0; // the end of a dump
                    }
                    if (expectEntry && (type & 0xFF) == MSG_NEW) {
                        int payload = off + NetlinkMessage.NLMSG_HDRLEN + NFGENMSG_SIZE;
                        lastEntry = parseEntry(payload, off + mlen);
                        if (dumped != null && lastEntry.original() != null) {
                            dumped.add(lastEntry);
                        }
                    }
                }
                off += NetlinkMessage.align(mlen);
            }
        }
    }

    // ---- batches

    /** The longest request a batch appends: an IPv6 TCP create with every attribute is 244 bytes. */
    static final int MAX_REQUEST = 320;
    /** Requests one {@link Batch} holds. */
    public static final int BATCH_MAX = 1024;
    /** Requests per write: their answers, all queued at once, take ~48 KiB of the receive buffer. */
    public static final int CHUNK_REQUESTS = 64;
    private static final int CHUNK_BYTES = CHUNK_REQUESTS * 256;
    /** An answer's slot: 36 bytes with NETLINK_CAP_ACK, an error's copy of the request (<= 320) without. */
    private static final int ANSWER_SLOT = 512;
    private static final int UNANSWERED = -1;

    /** This socket's batch (one, preallocated): see {@link Batch}. */
    public Batch batch() {
        return batch;
    }

    /**
     * Requests sent together: {@link #begin}, then {@link #create} / {@link #delete} for each (its
     * index in the batch is returned), {@link #send}, then {@link #answer} of each index: 0 if it
     * was done, else its errno (EEXIST: a create's tuple is taken; ENOENT: a delete found nothing).
     * Each request is a netlink message of its own, with its own sequence number and NLM_F_ACK;
     * answers are matched to requests by sequence number, so they may come in any number of reads.
     *
     * <p>Requests go out in chunks of at most {@link #CHUNK_REQUESTS} (or {@link #CHUNK_BYTES}), one
     * write(2) each; a chunk is sent when the next request does not fit it (from {@code create} or
     * {@code delete}) and by {@code send}. ctnetlink (nfnetlink_rcv, netlink_rcv_skb) handles the
     * messages of a write in order, each answered, and has queued every answer on this socket
     * before the write returns; the answers of a chunk are then read without blocking, up to 64
     * per recvmmsg(2). A chunk's answers fit the socket's receive buffer with room to spare (an
     * answer takes about 768 bytes of it; rmem_default is 208 KiB). Should an answer be lost all
     * the same (the kernel then reports ENOBUFS on the socket), the requests left unanswered get
     * ENOBUFS (EIO if the socket reported nothing): they may or may not have been done. A write
     * that fails gives its errno to every request of its chunk; nothing here throws.
     *
     * <p>Requests are in the kernel's order: a delete appended before a create that reuses its
     * tuple is done before the create is looked at. No allocation but a request's encoding (the
     * addresses of its tuples). Not thread-safe, like its socket.
     */
    public final class Batch {
        private final NetlinkMessage out = new NetlinkMessage(CHUNK_BYTES);
        // recvmmsg(2) of up to CHUNK_REQUESTS answers into slots of ANSWER_SLOT bytes; every piece of
        // native memory the mmsghdr array points at is held here (jnr frees memory nothing refers to)
        private final Pointer slots = Native.allocate(CHUNK_REQUESTS * ANSWER_SLOT);
        private final Pointer iovs = Native.allocate(CHUNK_REQUESTS * Layout.IOVEC_SIZE);
        private final Pointer mmsg = Native.allocate(CHUNK_REQUESTS * Layout.MMSGHDR_SIZE);
        /** Each request's errno once answered, {@link #UNANSWERED} before. */
        private final int[] errno = new int[BATCH_MAX];
        /** The sequence number of each request of the chunk being filled. */
        private final int[] seqs = new int[CHUNK_REQUESTS];
        private int count;
        /** Index of the first request not sent yet. */
        private int unsent;
        private int writes;

        private Batch() {
            for (int i = 0; i < CHUNK_REQUESTS; i++) {
                long iov = (long) i * Layout.IOVEC_SIZE;
                iovs.putAddress(iov + Layout.IOV_BASE, slots.address() + (long) i * ANSWER_SLOT);
                iovs.putLong(iov + Layout.IOV_LEN, ANSWER_SLOT);
                long m = (long) i * Layout.MMSGHDR_SIZE;
                mmsg.putAddress(m + Layout.MSG_IOV, iovs.address() + iov);
                mmsg.putLong(m + Layout.MSG_IOVLEN, 1);
            }
        }

        /** Forgets the last batch (its requests and answers). */
        public void begin() {
            count = 0;
            unsent = 0;
            writes = 0;
            out.reset();
        }

        /**
         * Appends {@code createExclusive(original, reply, timeoutSeconds, tcpState, mark, status)};
         * its index. Its answer: 0 (made), EEXIST (either tuple is taken), another errno.
         */
        public int create(Tuple original, Tuple reply, int timeoutSeconds, int tcpState, int mark, int status) {
            int i = room();
            seqs[i - unsent] = ++seq;
            encodeCreate(out, seq, original, reply, timeoutSeconds, tcpState, mark, status, -1, -1, -1, -1);
            return i;
        }

        /** Appends {@code delete(t)}; its index. Its answer: 0 (deleted), ENOENT (no entry), another errno. */
        public int delete(Tuple t) {
            int i = room();
            seqs[i - unsent] = ++seq;
            Ctnetlink.begin(out, seq, MSG_DELETE, 0, family(t));
            tuple(out, CTA_TUPLE_ORIG, t);
            out.end();
            return i;
        }

        /** Room for one more request: the chunk sent first if full. Its index. */
        private int room() {
            if (count == BATCH_MAX) {
                throw new IllegalStateException("a ctnetlink batch holds " + BATCH_MAX + " requests");
            }
            if (count - unsent == CHUNK_REQUESTS || out.length() + MAX_REQUEST > CHUNK_BYTES) {
                sendChunk();
            }
            errno[count] = UNANSWERED;
            return count++;
        }

        /** Sends every request appended and not sent yet, reads their answers. */
        public void send() {
            sendChunk();
        }

        /** The answer to request {@code i} (after {@link #send}): 0 if it was done, else the errno. */
        public int answer(int i) {
            return errno[i];
        }

        /** Requests appended since {@link #begin}. */
        public int size() {
            return count;
        }

        /** write(2)s made since {@link #begin}: one per chunk. */
        public int writes() {
            return writes;
        }

        private void sendChunk() {
            int first = unsent;
            int n = count - first;
            if (n == 0) {
                return;
            }
            unsent = count;
            int len = out.length();
            long w = Native.write(fd.get(), out.buffer(), len);
            out.reset();
            writes++;
            if (w != len) {
                settle(first, n, w < 0 ? (int) -w : Errno.EIO);
                return;
            }
            int pending = n;
            boolean lost = false;
            while (pending > 0) {
                int got = Native.recvmmsg(fd.get(), mmsg, CHUNK_REQUESTS, Native.MSG_DONTWAIT);
                if (got == -Errno.ENOBUFS) {
                    lost = true; // the socket overflowed: an answer was dropped (the error is reported once)
                    continue;
                }
                if (got == Native.WOULD_BLOCK) { // every answer is queued before the write returns: the missing ones were lost
                    settle(first, n, lost ? Errno.ENOBUFS : Errno.EIO);
                    return;
                }
                if (got < 0) {
                    settle(first, n, -got);
                    return;
                }
                for (int k = 0; k < got; k++) {
                    pending -= take(k * ANSWER_SLOT, mmsg.getInt((long) k * Layout.MMSGHDR_SIZE + Layout.MMSG_LEN), first, n);
                }
            }
        }

        /**
         * The answers in one datagram of {@code len} bytes at {@code at} of the answers' slots, for
         * requests {@code [first, first + n)}; how many.
         */
        private int take(int at, int len, int first, int n) {
            Pointer p = slots;
            int taken = 0;
            for (int off = at; off + ERROR_ANSWER <= at + len; ) {
                int mlen = p.getInt(off);
                if (mlen < NetlinkMessage.NLMSG_HDRLEN) {
                    break;
                }
                if ((p.getShort(off + 4) & 0xFFFF) == NetlinkMessage.NLMSG_ERROR) {
                    int k = request(p.getInt(off + 8), n);
                    if (k >= 0 && errno[first + k] == UNANSWERED) {
                        errno[first + k] = -p.getInt(off + NetlinkMessage.NLMSG_HDRLEN);
                        taken++;
                    }
                }
                off += NetlinkMessage.align(mlen); // a truncated answer ends the datagram (off passes its end)
            }
            return taken;
        }

        /** The index in the chunk of the request numbered {@code mseq}, or -1 (an earlier request's answer). */
        private int request(int mseq, int n) {
            int k = mseq - seqs[0]; // consecutive, unless a single request took a number in between
            if (k >= 0 && k < n && seqs[k] == mseq) {
                return k;
            }
            for (k = 0; k < n; k++) {
                if (seqs[k] == mseq) {
                    return k;
                }
            }
            return -1;
        }

        /** Every request of {@code [first, first + n)} still unanswered gets {@code err}. */
        private void settle(int first, int n, int err) {
            for (int i = first; i < first + n; i++) {
                if (errno[i] == UNANSWERED) {
                    errno[i] = err;
                }
            }
        }
    }

    /** nlmsghdr + the error field of nlmsgerr: the shortest answer that says how a request went. */
    private static final int ERROR_ANSWER = NetlinkMessage.NLMSG_HDRLEN + 4;

    private Entry parseEntry(int from, int to) {
        Tuple orig = null;
        Tuple reply = null;
        int timeout = 0;
        int status = 0;
        int mark = 0;
        int id = 0;
        int[] tcp = {-1, -1, -1, -1, -1}; // state, wscale orig/reply, flags orig/reply
        for (NetlinkAttributes a = new NetlinkAttributes(rx, from, to); a.next(); ) {
            switch (a.type()) {
                case CTA_TUPLE_ORIG -> orig = parseTuple(a.nested());
                case CTA_TUPLE_REPLY -> reply = parseTuple(a.nested());
                case CTA_TIMEOUT -> timeout = a.be32();
                case CTA_STATUS -> status = a.be32();
                case CTA_PROTOINFO -> parseTcp(a.nested(), tcp);
                case CTA_MARK -> mark = a.be32();
                case CTA_ID -> id = a.be32();
                default -> { }
            }
        }
        return new Entry(orig, reply, timeout, status, tcp[0], mark, id, tcp[1], tcp[2], tcp[3], tcp[4]);
    }

    /** CTA_PROTOINFO_TCP's state, window scales and flags (the flags byte of {u8 flags, u8 mask}) into {@code out}. */
    private static void parseTcp(NetlinkAttributes protoinfo, int[] out) {
        while (protoinfo.next()) {
            if (protoinfo.type() == CTA_PROTOINFO_TCP) {
                for (NetlinkAttributes b = protoinfo.nested(); b.next(); ) {
                    switch (b.type()) {
                        case CTA_PROTOINFO_TCP_STATE -> out[0] = b.u8();
                        case CTA_PROTOINFO_TCP_WSCALE_ORIGINAL -> out[1] = b.u8();
                        case CTA_PROTOINFO_TCP_WSCALE_REPLY -> out[2] = b.u8();
                        case CTA_PROTOINFO_TCP_FLAGS_ORIGINAL -> out[3] = b.u8();
                        case CTA_PROTOINFO_TCP_FLAGS_REPLY -> out[4] = b.u8();
                        default -> { }
                    }
                }
            }
        }
    }

    private static Tuple parseTuple(NetlinkAttributes tuple) {
        byte[] src = null;
        byte[] dst = null;
        int proto = 0;
        int sport = 0;
        int dport = 0;
        while (tuple.next()) {
            int type = tuple.type();
            for (NetlinkAttributes b = tuple.nested(); b.next(); ) {
                int btype = b.type();
                if (type == CTA_TUPLE_IP) {
                    if (btype == CTA_IP_V4_SRC || btype == CTA_IP_V6_SRC) {
                        src = b.bytes();
                    } else if (btype == CTA_IP_V4_DST || btype == CTA_IP_V6_DST) {
                        dst = b.bytes();
                    }
                } else if (type == CTA_TUPLE_PROTO) {
                    switch (btype) {
                        case CTA_PROTO_NUM -> proto = b.u8();
                        case CTA_PROTO_SRC_PORT, CTA_PROTO_ICMP_ID, CTA_PROTO_ICMPV6_ID -> sport = b.be16();
                        case CTA_PROTO_DST_PORT -> dport = b.be16();
                        case CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMPV6_TYPE -> dport = (dport & 0xFF) | (b.u8() << 8);
                        case CTA_PROTO_ICMP_CODE, CTA_PROTO_ICMPV6_CODE -> dport = (dport & 0xFF00) | b.u8();
                        default -> { }
                    }
                }
            }
        }
        try {
            return src == null || dst == null ? null
                    : new Tuple(proto, InetAddress.getByAddress(src), InetAddress.getByAddress(dst), sport, dport);
        } catch (UnknownHostException e) {
            return null;
        }
    }

    @Override
    public void close() {
        fd.close();
    }
}
