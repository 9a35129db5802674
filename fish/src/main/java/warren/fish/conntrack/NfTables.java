package warren.fish.conntrack;

import java.nio.charset.StandardCharsets;
import jnr.ffi.Pointer;
import warren.fdpass.Fd;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * Fish's own nftables table, which keeps the kernel's connection tracking active in the egress
 * namespace. The kernel tracks connections in a namespace only while something there needs it
 * (an nftables or iptables rule using conntrack, NAT); in a namespace with no rules a real
 * connection from a soft-unicast IP has no conntrack entry, so Fish's create-exclusive reservation
 * of that 5-tuple would succeed and hand the port out twice. Creating a rule with a {@code ct}
 * expression takes a reference on the namespace's conntrack hooks (nf_ct_netns_get) for as long
 * as the rule exists.
 *
 * <pre>
 * table inet warren_fish_PID {            flags owner: the kernel deletes it when this socket closes
 *     comment "..."                         (Fish stopped, or died: nothing is left behind)
 *     chain conntrack {                     a regular chain no rule jumps to: never evaluated,
 *         ct state established,related,new,untracked    so no per-packet cost of its own
 *     }
 * }
 * </pre>
 * Built over NETLINK_NETFILTER (subsystem NFNL_SUBSYS_NFTABLES) in one batch: BATCH_BEGIN,
 * NEWTABLE (NFTA_TABLE_FLAGS = NFT_TABLE_F_OWNER, Linux 5.12+), NEWCHAIN, NEWRULE (ct load state,
 * bitwise, cmp), BATCH_END; every message but the batch markers asks for an ACK. The table's name
 * carries the pid because an owned table cannot be taken over: during an upgrade in place the
 * successor makes its own before the predecessor's goes. Not thread-safe; in the namespace of the
 * thread that opened it.
 */
public final class NfTables implements AutoCloseable {
    private static final int NETLINK_NETFILTER = 12;
    private static final int NFNL_SUBSYS_NFTABLES = 10;
    private static final int NFNL_MSG_BATCH_BEGIN = 0x10;
    private static final int NFNL_MSG_BATCH_END = 0x11;
    private static final int NFT_MSG_NEWTABLE = 0;
    private static final int NFT_MSG_NEWCHAIN = 3;
    private static final int NFT_MSG_NEWRULE = 6;
    private static final int NLMSG_ERROR = 2;
    private static final int NLM_F_REQUEST = 1;
    private static final int NLM_F_ACK = 4;
    private static final int NLM_F_EXCL = 0x200;
    private static final int NLM_F_CREATE = 0x400;
    private static final int NLM_F_APPEND = 0x800;
    private static final int NLA_F_NESTED = 0x8000;
    private static final int NFPROTO_INET = 1;
    private static final int NFTA_TABLE_NAME = 1;
    private static final int NFTA_TABLE_FLAGS = 2;
    private static final int NFTA_TABLE_USERDATA = 6;
    private static final int NFT_TABLE_F_OWNER = 2;
    private static final int NFTNL_UDATA_TABLE_COMMENT = 0;
    private static final int NFTA_CHAIN_TABLE = 1;
    private static final int NFTA_CHAIN_NAME = 3;
    private static final int NFTA_RULE_TABLE = 1;
    private static final int NFTA_RULE_CHAIN = 2;
    private static final int NFTA_RULE_EXPRESSIONS = 4;
    private static final int NFTA_LIST_ELEM = 1;
    private static final int NFTA_EXPR_NAME = 1;
    private static final int NFTA_EXPR_DATA = 2;
    private static final int NFTA_CT_DREG = 1;
    private static final int NFTA_CT_KEY = 2;
    private static final int NFT_CT_STATE = 0;
    private static final int NFTA_BITWISE_SREG = 1;
    private static final int NFTA_BITWISE_DREG = 2;
    private static final int NFTA_BITWISE_LEN = 3;
    private static final int NFTA_BITWISE_MASK = 4;
    private static final int NFTA_BITWISE_XOR = 5;
    private static final int NFTA_CMP_SREG = 1;
    private static final int NFTA_CMP_OP = 2;
    private static final int NFTA_CMP_DATA = 3;
    private static final int NFT_CMP_NEQ = 1;
    private static final int NFTA_DATA_VALUE = 1;
    private static final int NFT_REG_1 = 1;
    /** established (2) | related (4) | new (8) | untracked (64), as nft's "ct state" bits. */
    private static final int CT_STATES = 0x4e;
    public static final String CHAIN = "conntrack";

    private final Fd fd;
    private final String table;
    private final Pointer buf = Native.allocate(4096);
    private int len;
    private int msgStart;
    private int seq = (int) (System.nanoTime() & 0x3FFFFFFF);
    private int firstSeq;

    private NfTables(String table) throws NativeIoException {
        this.table = table;
        this.fd = Fd.adopt(Native.socket(Native.AF_NETLINK, Native.SOCK_RAW | Native.SOCK_CLOEXEC, NETLINK_NETFILTER));
    }

    /**
     * Creates table {@code name} (owned by the returned object's socket) with its conntrack rule,
     * in the calling thread's namespace; EEXIST if a table of that name is there already.
     */
    public static NfTables keepConntrackActive(String name, String comment) throws NativeIoException {
        NfTables t = new NfTables(name);
        try {
            t.create(comment);
            return t;
        } catch (NativeIoException | RuntimeException e) {
            t.close();
            throw e;
        }
    }

    public String table() {
        return table;
    }

    private void create(String comment) throws NativeIoException {
        len = 0;
        buf.setMemory(0, 4096, (byte) 0);
        message(NFNL_MSG_BATCH_BEGIN, 0, 0); // res_id carries the subsystem
        buf.putByte(msgStart + 16, (byte) 0); // AF_UNSPEC
        buf.putShort(msgStart + 18, Short.reverseBytes((short) NFNL_SUBSYS_NFTABLES)); // be16
        end();
        firstSeq = seq + 1;
        message(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, NFPROTO_INET);
        string(NFTA_TABLE_NAME, table);
        be32(NFTA_TABLE_FLAGS, NFT_TABLE_F_OWNER);
        byte[] c = (comment + "\0").getBytes(StandardCharsets.UTF_8);
        byte[] udata = new byte[2 + c.length];
        udata[0] = NFTNL_UDATA_TABLE_COMMENT;
        udata[1] = (byte) c.length;
        System.arraycopy(c, 0, udata, 2, c.length);
        attr(NFTA_TABLE_USERDATA, udata);
        end();
        message(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, NFPROTO_INET);
        string(NFTA_CHAIN_TABLE, table);
        string(NFTA_CHAIN_NAME, CHAIN);
        end();
        message(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK, NFPROTO_INET);
        string(NFTA_RULE_TABLE, table);
        string(NFTA_RULE_CHAIN, CHAIN);
        int exprs = nest(NFTA_RULE_EXPRESSIONS);
        expression("ct", () -> {
            be32(NFTA_CT_DREG, NFT_REG_1);
            be32(NFTA_CT_KEY, NFT_CT_STATE);
        });
        expression("bitwise", () -> {
            be32(NFTA_BITWISE_SREG, NFT_REG_1);
            be32(NFTA_BITWISE_DREG, NFT_REG_1);
            be32(NFTA_BITWISE_LEN, 4);
            value(NFTA_BITWISE_MASK, CT_STATES);
            value(NFTA_BITWISE_XOR, 0);
        });
        expression("cmp", () -> {
            be32(NFTA_CMP_SREG, NFT_REG_1);
            be32(NFTA_CMP_OP, NFT_CMP_NEQ);
            value(NFTA_CMP_DATA, 0);
        });
        nestEnd(exprs);
        end();
        int lastSeq = seq;
        message(NFNL_MSG_BATCH_END, 0, 0);
        buf.putShort(msgStart + 18, Short.reverseBytes((short) NFNL_SUBSYS_NFTABLES)); // be16
        end();
        if (Native.ioResult("write", Native.write(fd.get(), buf, len)) != len) {
            throw new NativeIoException("sendmsg", Errno.EIO, "nf_tables batch");
        }
        awaitAcks(firstSeq, lastSeq);
    }

    /** One ACK or error per message of the batch; the first error is thrown once all have come. */
    private void awaitAcks(int from, int to) throws NativeIoException {
        int pending = to - from + 1;
        int error = 0;
        while (pending > 0) {
            long n = Native.ioResult("read", Native.read(fd.get(), buf, 4096));
            if (n < 0) {
                throw new NativeIoException("recvmsg", Native.errno(), "nf_tables batch");
            }
            for (int off = 0; off + 16 <= n; ) {
                int mlen = buf.getInt(off);
                if (mlen < 16 || off + mlen > n) {
                    break;
                }
                int mseq = buf.getInt(off + 8);
                if ((buf.getShort(off + 4) & 0xFFFF) == NLMSG_ERROR && mseq >= from && mseq <= to) {
                    pending--;
                    int err = -buf.getInt(off + 16);
                    if (err != 0 && error == 0) {
                        error = err;
                    }
                }
                off += (mlen + 3) & ~3;
            }
        }
        if (error != 0) {
            throw new NativeIoException("nf_tables", error, "table inet " + table
                    + (error == Errno.EOPNOTSUPP ? " (owned tables need Linux 5.12 or later)" : ""));
        }
    }

    // ---- message building (nlmsghdr 16, nfgenmsg 4, attributes)

    private void message(int type, int flags, int family) {
        msgStart = len;
        buf.putShort(len + 4, (short) type);
        buf.putShort(len + 6, (short) (NLM_F_REQUEST | flags));
        buf.putInt(len + 8, ++seq);
        buf.putByte(len + 16, (byte) family);
        len += 20;
    }

    private void end() {
        buf.putInt(msgStart, len - msgStart);
    }

    private void attr(int type, byte[] data) {
        buf.putShort(len, (short) (4 + data.length));
        buf.putShort(len + 2, (short) type);
        buf.put(len + 4, data, 0, data.length);
        len += (4 + data.length + 3) & ~3;
    }

    private void string(int type, String s) {
        attr(type, (s + "\0").getBytes(StandardCharsets.UTF_8));
    }

    private void be32(int type, int v) {
        attr(type, new byte[] {(byte) (v >>> 24), (byte) (v >>> 16), (byte) (v >>> 8), (byte) v});
    }

    /** NFTA_DATA_VALUE of a 32-bit register value, in host order as the register holds it. */
    private void value(int type, int v) {
        int at = nest(type);
        byte[] host = new byte[4];
        java.nio.ByteBuffer.wrap(host).order(java.nio.ByteOrder.nativeOrder()).putInt(v);
        attr(NFTA_DATA_VALUE, host);
        nestEnd(at);
    }

    private int nest(int type) {
        int at = len;
        buf.putShort(len + 2, (short) (type | NLA_F_NESTED));
        len += 4;
        return at;
    }

    private void nestEnd(int at) {
        buf.putShort(at, (short) (len - at));
    }

    private void expression(String name, Runnable data) {
        int elem = nest(NFTA_LIST_ELEM);
        string(NFTA_EXPR_NAME, name);
        int d = nest(NFTA_EXPR_DATA);
        data.run();
        nestEnd(d);
        nestEnd(elem);
    }

    /** Closes the socket: the kernel deletes the owned table, and conntrack stays active only if others need it. */
    @Override
    public void close() {
        fd.close();
    }
}
