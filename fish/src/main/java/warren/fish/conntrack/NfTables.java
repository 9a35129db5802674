package warren.fish.conntrack;

import java.nio.charset.StandardCharsets;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.NativeIoException;
import warren.linux.netlink.NetlinkMessage;
import warren.linux.netlink.NetlinkSocket;

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
 * bitwise, cmp), BATCH_END, written by {@link NetlinkMessage}; every message but the batch markers
 * asks for an ACK, and {@link NetlinkSocket} reads them. The table's name
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
    private static final int NLM_F_ACK = NetlinkMessage.NLM_F_ACK;
    private static final int NLM_F_EXCL = NetlinkMessage.NLM_F_EXCL;
    private static final int NLM_F_CREATE = NetlinkMessage.NLM_F_CREATE;
    private static final int NLM_F_APPEND = NetlinkMessage.NLM_F_APPEND;
    private static final int NFGENMSG_SIZE = 4;
    private static final int BUF = 4096;
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

    private final NetlinkSocket socket;
    private final String table;
    private final NetlinkMessage msg = new NetlinkMessage(BUF);

    private NfTables(String table) throws NativeIoException {
        this.table = table;
        this.socket = new NetlinkSocket(NETLINK_NETFILTER, BUF, (int) (System.nanoTime() & 0x3FFFFFFF));
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
        msg.reset();
        batchMarker(NFNL_MSG_BATCH_BEGIN); // res_id carries the subsystem
        int firstSeq = message(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK);
        msg.attrString(NFTA_TABLE_NAME, table);
        msg.attrBe32(NFTA_TABLE_FLAGS, NFT_TABLE_F_OWNER);
        byte[] c = (comment + "\0").getBytes(StandardCharsets.UTF_8);
        byte[] udata = new byte[2 + c.length];
        udata[0] = NFTNL_UDATA_TABLE_COMMENT;
        udata[1] = (byte) c.length;
        System.arraycopy(c, 0, udata, 2, c.length);
        msg.attr(NFTA_TABLE_USERDATA, udata);
        msg.end();
        message(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK);
        msg.attrString(NFTA_CHAIN_TABLE, table);
        msg.attrString(NFTA_CHAIN_NAME, CHAIN);
        msg.end();
        int lastSeq = message(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK);
        msg.attrString(NFTA_RULE_TABLE, table);
        msg.attrString(NFTA_RULE_CHAIN, CHAIN);
        int exprs = msg.nestStart(NFTA_RULE_EXPRESSIONS);
        expression("ct", () -> {
            msg.attrBe32(NFTA_CT_DREG, NFT_REG_1);
            msg.attrBe32(NFTA_CT_KEY, NFT_CT_STATE);
        });
        expression("bitwise", () -> {
            msg.attrBe32(NFTA_BITWISE_SREG, NFT_REG_1);
            msg.attrBe32(NFTA_BITWISE_DREG, NFT_REG_1);
            msg.attrBe32(NFTA_BITWISE_LEN, 4);
            value(NFTA_BITWISE_MASK, CT_STATES);
            value(NFTA_BITWISE_XOR, 0);
        });
        expression("cmp", () -> {
            msg.attrBe32(NFTA_CMP_SREG, NFT_REG_1);
            msg.attrBe32(NFTA_CMP_OP, NFT_CMP_NEQ);
            value(NFTA_CMP_DATA, 0);
        });
        msg.nestEnd(exprs);
        msg.end();
        batchMarker(NFNL_MSG_BATCH_END);
        // one ACK or error per message of the batch; the first error is thrown once all have come
        int error = socket.exchange(msg, firstSeq, lastSeq, null, "nf_tables batch");
        if (error != 0) {
            throw new NativeIoException("nf_tables", error, "table inet " + table
                    + (error == Errno.EOPNOTSUPP ? " (owned tables need Linux 5.12 or later)" : ""));
        }
    }

    // ---- message building (nlmsghdr 16, nfgenmsg 4, attributes)

    /** Starts a message of the batch (nfgenmsg family NFPROTO_INET); returns its sequence number. */
    private int message(int type, int flags) {
        int seq = socket.nextSeq();
        msg.begin(type, NetlinkMessage.NLM_F_REQUEST | flags, seq, NFGENMSG_SIZE).familyU8(0, NFPROTO_INET);
        return seq;
    }

    /** NFNL_MSG_BATCH_BEGIN / _END: family AF_UNSPEC, res_id = the subsystem (be16), no ACK. */
    private void batchMarker(int type) {
        msg.begin(type, NetlinkMessage.NLM_F_REQUEST, socket.nextSeq(), NFGENMSG_SIZE)
                .familyBe16(2, NFNL_SUBSYS_NFTABLES).end();
    }

    /** NFTA_DATA_VALUE of a 32-bit register value, in host order as the register holds it. */
    private void value(int type, int v) {
        int at = msg.nestStart(type);
        msg.attrU32(NFTA_DATA_VALUE, v);
        msg.nestEnd(at);
    }

    private void expression(String name, Runnable data) {
        int elem = msg.nestStart(NFTA_LIST_ELEM);
        msg.attrString(NFTA_EXPR_NAME, name);
        int d = msg.nestStart(NFTA_EXPR_DATA);
        data.run();
        msg.nestEnd(d);
        msg.nestEnd(elem);
    }

    /** Closes the socket: the kernel deletes the owned table, and conntrack stays active only if others need it. */
    @Override
    public void close() {
        socket.close();
    }
}
