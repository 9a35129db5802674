package warren.linux.net;

import java.net.Inet4Address;
import java.net.InetAddress;
import java.util.ArrayList;
import java.util.List;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.linux.netlink.NetlinkAttributes;
import warren.linux.netlink.NetlinkMessage;
import warren.linux.netlink.NetlinkSocket;

/**
 * The few rtnetlink requests the namespace helper and Fish need (rtnetlink(7)): bring a link up,
 * add an address, add or delete a route, and read the addresses and routes back (dumps). Each
 * request asks for an ACK and the kernel's answer (NLMSG_ERROR with error 0, or -errno) is
 * returned as success or a {@link NativeIoException}; a dump reads until NLMSG_DONE. Messages are
 * built by {@link NetlinkMessage} and answers read by {@link NetlinkSocket}. One socket per
 * instance, in the namespace of the thread that opened it; not thread-safe.
 *
 * <pre>
 * nlmsghdr (16): 0 u32 len  4 u16 type  6 u16 flags  8 u32 seq  12 u32 pid
 * ifinfomsg (16): 0 u8 family  2 u16 type  4 i32 index  8 u32 flags  12 u32 change
 * ifaddrmsg (8):  0 u8 family  1 u8 prefixlen  2 u8 flags  3 u8 scope  4 u32 index
 * rtmsg (12):     0 family 1 dst_len 2 src_len 3 tos 4 table 5 protocol 6 scope 7 type 8 u32 flags
 * rtattr:         0 u16 len  2 u16 type  4 data, padded to 4
 * </pre>
 */
public final class Rtnetlink implements AutoCloseable {
    private static final int NETLINK_ROUTE = 0;
    private static final int RTM_NEWLINK = 16;
    private static final int RTM_NEWADDR = 20;
    private static final int RTM_NEWROUTE = 24;
    private static final int RTM_DELROUTE = 25;
    private static final int RTM_GETROUTE = 26;
    private static final int RTM_GETADDR = 22;
    private static final int IFINFOMSG_SIZE = 16;
    private static final int IFADDRMSG_SIZE = 8;
    private static final int RTMSG_SIZE = 12;
    private static final int RTNEXTHOP_SIZE = 8;
    private static final int RTA_GATEWAY = 5;
    private static final int RTA_MULTIPATH = 9;
    private static final int RTA_TABLE = 15;
    private static final int RTA_VIA = 18;
    private static final int BUF = 32768;
    private static final int REQUEST_BUF = 1024;
    private static final int IFF_UP = 1;
    private static final int IFA_ADDRESS = 1;
    private static final int IFA_LOCAL = 2;
    private static final int IFA_F_NODAD = 0x02;
    private static final int RTA_DST = 1;
    private static final int RTA_OIF = 4;
    private static final int RT_TABLE_MAIN = 254;
    private static final int RTPROT_STATIC = 4;
    private static final int RT_SCOPE_UNIVERSE = 0;
    private static final int RT_SCOPE_LINK = 253;
    private static final int RT_SCOPE_NOWHERE = 255;
    private static final int RTN_UNICAST = 1;
    private static final int IFLA_MTU = 4;
    private static final int IFLA_TXQLEN = 13;
    private static final int IFLA_AF_SPEC = 26;
    private static final int IFLA_INET6_ADDR_GEN_MODE = 8;
    private static final int IN6_ADDR_GEN_MODE_NONE = 1;

    private final NetlinkSocket socket;
    private final NetlinkMessage msg = new NetlinkMessage(REQUEST_BUF);
    private int seq;

    public Rtnetlink() throws NativeIoException {
        socket = new NetlinkSocket(NETLINK_ROUTE, BUF, 0);
    }

    /** A request that asks for an ACK. */
    private NetlinkMessage begin(int type, int flags, int familyLength) {
        seq = socket.nextSeq();
        return msg.reset().begin(type, NetlinkMessage.NLM_F_REQUEST | NetlinkMessage.NLM_F_ACK | flags, seq, familyLength);
    }

    private void send(String what) throws NativeIoException {
        msg.end();
        int err = socket.exchange(msg, seq, null, what);
        if (err != 0) {
            throw new NativeIoException("rtnetlink", err, what);
        }
    }

    /**
     * ip link set dev IFINDEX addrgenmode none: the kernel gives the link no IPv6 link-local
     * address (IFLA_AF_SPEC { AF_INET6 { IFLA_INET6_ADDR_GEN_MODE = IN6_ADDR_GEN_MODE_NONE } }),
     * so it sends no router solicitation or duplicate address detection from one. Before the link
     * comes up.
     */
    public void addrGenModeNone(int ifindex) throws NativeIoException {
        begin(RTM_NEWLINK, 0, IFINFOMSG_SIZE).familyU32(4, ifindex);
        int spec = msg.nestStart(IFLA_AF_SPEC);
        int inet6 = msg.nestStart(Native.AF_INET6);
        msg.attrU8(IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE);
        msg.nestEnd(inet6).nestEnd(spec);
        send("link " + ifindex + " addrgenmode none");
    }

    /** ip link set dev IFINDEX up [mtu MTU] */
    public void linkUp(int ifindex, int mtu) throws NativeIoException {
        linkUp(ifindex, mtu, 0);
    }

    /**
     * ip link set dev IFINDEX up [mtu MTU] [txqueuelen QLEN]. A TUN's default queue of 500 packets
     * overflows when a burst (a thousand SYN-ACKs at once) leaves the kernel faster than it is read.
     */
    public void linkUp(int ifindex, int mtu, int txqueuelen) throws NativeIoException {
        begin(RTM_NEWLINK, 0, IFINFOMSG_SIZE).familyU32(4, ifindex).familyU32(8, IFF_UP).familyU32(12, IFF_UP);
        if (mtu > 0) {
            msg.attrU32(IFLA_MTU, mtu);
        }
        if (txqueuelen > 0) {
            msg.attrU32(IFLA_TXQLEN, txqueuelen);
        }
        send("link " + ifindex + " up");
    }

    /** ip addr add ADDR/PREFIX dev IFINDEX (IPv6 without duplicate address detection) */
    public void addAddress(int ifindex, InetAddress addr, int prefix) throws NativeIoException {
        boolean v4 = addr instanceof Inet4Address;
        begin(RTM_NEWADDR, NetlinkMessage.NLM_F_CREATE | NetlinkMessage.NLM_F_EXCL, IFADDRMSG_SIZE)
                .familyU8(0, v4 ? Native.AF_INET : Native.AF_INET6)
                .familyU8(1, prefix)
                .familyU8(2, v4 ? 0 : IFA_F_NODAD)
                .familyU8(3, RT_SCOPE_UNIVERSE)
                .familyU32(4, ifindex);
        if (v4) {
            msg.attr(IFA_LOCAL, addr.getAddress());
        }
        msg.attr(IFA_ADDRESS, addr.getAddress());
        send("address " + addr.getHostAddress() + "/" + prefix + " on " + ifindex);
    }

    /** ip route add DST/PREFIX dev IFINDEX (a prefix of 0 is the default route) */
    public void addRoute(InetAddress dst, int prefix, int ifindex) throws NativeIoException {
        boolean v4 = dst instanceof Inet4Address;
        begin(RTM_NEWROUTE, NetlinkMessage.NLM_F_CREATE | NetlinkMessage.NLM_F_EXCL, RTMSG_SIZE)
                .familyU8(0, v4 ? Native.AF_INET : Native.AF_INET6)
                .familyU8(1, prefix)
                .familyU8(4, RT_TABLE_MAIN)
                .familyU8(5, RTPROT_STATIC)
                .familyU8(6, RT_SCOPE_LINK)
                .familyU8(7, RTN_UNICAST);
        if (prefix > 0) {
            msg.attr(RTA_DST, dst.getAddress());
        }
        msg.attrU32(RTA_OIF, ifindex);
        send("route " + dst.getHostAddress() + "/" + prefix + " dev " + ifindex);
    }

    /** ip route del DST/PREFIX dev IFINDEX; false if there was no such route. */
    public boolean deleteRoute(InetAddress dst, int prefix, int ifindex) throws NativeIoException {
        boolean v4 = dst instanceof Inet4Address;
        begin(RTM_DELROUTE, 0, RTMSG_SIZE)
                .familyU8(0, v4 ? Native.AF_INET : Native.AF_INET6)
                .familyU8(1, prefix)
                .familyU8(4, RT_TABLE_MAIN)
                .familyU8(6, RT_SCOPE_NOWHERE); // any scope (IPv4 matches it otherwise)
        if (prefix > 0) {
            msg.attr(RTA_DST, dst.getAddress());
        }
        msg.attrU32(RTA_OIF, ifindex);
        try {
            send("delete route " + dst.getHostAddress() + "/" + prefix + " dev " + ifindex);
            return true;
        } catch (NativeIoException e) {
            if (e.errno() == Errno.ESRCH || e.errno() == Errno.ENOENT) {
                return false;
            }
            throw e;
        }
    }

    /** An address as {@code ip addr} shows it: its local address, its prefix (peer for point-to-point), device. */
    public record Address(byte[] local, byte[] address, int prefixLength, int ifindex) {}

    /**
     * A route as {@code ip route show table all} shows it: destination prefix, type (RTN_*: 1
     * unicast, 2 local, 3 broadcast, ...), table, output device (0: none) and gateways (RTA_GATEWAY,
     * RTA_VIA, and each nexthop's of a multipath route).
     */
    public record Route(int family, byte[] dst, int dstLength, int type, int table, int oif, List<byte[]> gateways) {
        public static final int UNICAST = 1;
        public static final int LOCAL = 2;
        public static final int BROADCAST = 3;
        public static final int ANYCAST = 4;
    }

    /** Every address of every link, both families (RTM_GETADDR dump). */
    public List<Address> addresses() throws NativeIoException {
        List<Address> out = new ArrayList<>();
        dump(RTM_GETADDR, IFADDRMSG_SIZE, "address dump", RTM_NEWADDR, (off, end) -> {
            var buf = socket.buffer();
            int prefix = buf.getByte(off + 1) & 0xFF;
            int index = buf.getInt(off + 4);
            byte[] local = null;
            byte[] address = null;
            for (NetlinkAttributes a = new NetlinkAttributes(buf, off + IFADDRMSG_SIZE, end); a.next(); ) {
                if (a.type() == IFA_LOCAL) {
                    local = a.bytes();
                } else if (a.type() == IFA_ADDRESS) {
                    address = a.bytes();
                }
            }
            if (address != null || local != null) {
                out.add(new Address(local != null ? local : address, address != null ? address : local, prefix, index));
            }
        });
        return out;
    }

    /** Every route of every table, both families (RTM_GETROUTE dump). */
    public List<Route> routes() throws NativeIoException {
        List<Route> out = new ArrayList<>();
        dump(RTM_GETROUTE, RTMSG_SIZE, "route dump", RTM_NEWROUTE, (off, end) -> {
            var buf = socket.buffer();
            int family = buf.getByte(off) & 0xFF;
            int dstLen = buf.getByte(off + 1) & 0xFF;
            int table = buf.getByte(off + 4) & 0xFF;
            int type = buf.getByte(off + 7) & 0xFF;
            byte[] dst = new byte[family == Native.AF_INET ? 4 : 16];
            int oif = 0;
            List<byte[]> gateways = new ArrayList<>();
            for (NetlinkAttributes a = new NetlinkAttributes(buf, off + RTMSG_SIZE, end); a.next(); ) {
                switch (a.type()) {
                    case RTA_DST -> dst = a.bytes();
                    case RTA_OIF -> oif = a.u32();
                    case RTA_TABLE -> table = a.u32();
                    case RTA_GATEWAY -> gateways.add(a.bytes());
                    case RTA_VIA -> gateways.add(a.bytes(2)); // u16 family, then the address
                    case RTA_MULTIPATH -> nexthops(a.payload(), a.payload() + a.payloadLength(), gateways);
                    default -> { }
                }
            }
            out.add(new Route(family, dst, dstLen, type, table, oif, gateways));
        });
        return out;
    }

    /** struct rtnexthop (8: u16 len, u8 flags, u8 hops, i32 ifindex) and its attributes, repeated. */
    private void nexthops(int from, int to, List<byte[]> gateways) {
        var buf = socket.buffer();
        for (int n = from; n + RTNEXTHOP_SIZE <= to; ) {
            int nlen = buf.getShort(n) & 0xFFFF;
            if (nlen < RTNEXTHOP_SIZE || n + nlen > to) {
                return;
            }
            for (NetlinkAttributes a = new NetlinkAttributes(buf, n + RTNEXTHOP_SIZE, n + nlen); a.next(); ) {
                if (a.type() == RTA_GATEWAY) {
                    gateways.add(a.bytes());
                } else if (a.type() == RTA_VIA) {
                    gateways.add(a.bytes(2));
                }
            }
            n += NetlinkMessage.align(nlen);
        }
    }

    /** One message of a dump: the family header and attributes from {@code off} to {@code end}. */
    private interface Body {
        void read(int off, int end);
    }

    /** A dump of every object (family AF_UNSPEC), no ACK: each message of {@code type} to {@code body}. */
    private void dump(int request, int familyLength, String what, int type, Body body) throws NativeIoException {
        seq = socket.nextSeq();
        msg.reset().begin(request, NetlinkMessage.NLM_F_REQUEST | NetlinkMessage.NLM_F_DUMP, seq, familyLength).end();
        int err = socket.exchange(msg, seq, (mtype, off, end) -> {
            if (mtype == type) {
                body.read(off, end);
            }
        }, what);
        if (err != 0) {
            throw new NativeIoException("rtnetlink", err, what);
        }
    }

    @Override
    public void close() {
        socket.close();
    }
}
