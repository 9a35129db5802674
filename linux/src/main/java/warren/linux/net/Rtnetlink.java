package warren.linux.net;

import java.net.Inet4Address;
import java.net.InetAddress;
import jnr.ffi.Pointer;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * The few rtnetlink requests the namespace helper and Fish need (rtnetlink(7)): bring a link up,
 * add an address, add or delete a route, and read the addresses and routes back (dumps). Each
 * request asks for an ACK and the kernel's answer (NLMSG_ERROR with error 0, or -errno) is
 * returned as success or a {@link NativeIoException}; a dump reads until NLMSG_DONE. One socket
 * per instance, in the namespace of the thread that opened it; not thread-safe.
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
    private static final int NLMSG_ERROR = 2;
    private static final int RTM_NEWLINK = 16;
    private static final int RTM_NEWADDR = 20;
    private static final int RTM_NEWROUTE = 24;
    private static final int RTM_DELROUTE = 25;
    private static final int RTM_GETROUTE = 26;
    private static final int RTM_GETADDR = 22;
    private static final int NLMSG_DONE = 3;
    private static final int NLM_F_DUMP = 0x300;
    private static final int RTA_GATEWAY = 5;
    private static final int RTA_MULTIPATH = 9;
    private static final int RTA_TABLE = 15;
    private static final int RTA_VIA = 18;
    private static final int BUF = 32768;
    private static final int NLM_F_REQUEST = 1;
    private static final int NLM_F_ACK = 4;
    private static final int NLM_F_EXCL = 0x200;
    private static final int NLM_F_CREATE = 0x400;
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
    private static final byte IN6_ADDR_GEN_MODE_NONE = 1;
    private static final int NLA_F_NESTED = 0x8000;

    private final Fd fd;
    private final Pointer buf = Native.allocate(BUF);
    private int seq;
    private int len;

    public Rtnetlink() throws NativeIoException {
        fd = Fd.adopt(Native.socket(Native.AF_NETLINK, Native.SOCK_RAW | Native.SOCK_CLOEXEC, NETLINK_ROUTE));
    }

    private void begin(int type, int flags) {
        buf.setMemory(0, 256, (byte) 0);
        len = 16;
        buf.putShort(4, (short) type);
        buf.putShort(6, (short) (NLM_F_REQUEST | NLM_F_ACK | flags));
        buf.putInt(8, ++seq);
    }

    private void attr(int type, byte[] data) {
        int alen = 4 + data.length;
        buf.putShort(len, (short) alen);
        buf.putShort(len + 2, (short) type);
        buf.put(len + 4, data, 0, data.length);
        len += (alen + 3) & ~3;
    }

    private void attrInt(int type, int v) {
        buf.putShort(len, (short) 8);
        buf.putShort(len + 2, (short) type);
        buf.putInt(len + 4, v);
        len += 8;
    }

    private void send(String what) throws NativeIoException {
        buf.putInt(0, len);
        if (Native.ioResult("write", Native.write(fd.get(), buf, len)) != len) {
            throw new NativeIoException("sendmsg", warren.fdpass.libc.Errno.EIO, what);
        }
        while (true) {
            long n = Native.ioResult("read", Native.read(fd.get(), buf, BUF));
            int off = 0;
            while (off + 16 <= n) {
                int mlen = buf.getInt(off);
                int type = buf.getShort(off + 4) & 0xFFFF;
                int mseq = buf.getInt(off + 8);
                if (type == NLMSG_ERROR && mseq == seq) {
                    int err = buf.getInt(off + 16);
                    if (err != 0) {
                        throw new NativeIoException("rtnetlink", -err, what);
                    }
                    return;
                }
                off += (mlen + 3) & ~3;
                if (mlen <= 0) {
                    break;
                }
            }
        }
    }

    /**
     * ip link set dev IFINDEX addrgenmode none: the kernel gives the link no IPv6 link-local
     * address (IFLA_AF_SPEC { AF_INET6 { IFLA_INET6_ADDR_GEN_MODE = IN6_ADDR_GEN_MODE_NONE } }),
     * so it sends no router solicitation or duplicate address detection from one. Before the link
     * comes up.
     */
    public void addrGenModeNone(int ifindex) throws NativeIoException {
        begin(RTM_NEWLINK, 0);
        buf.putInt(16 + 4, ifindex);
        len += 16;
        int spec = len;
        buf.putShort(len + 2, (short) (IFLA_AF_SPEC | NLA_F_NESTED));
        len += 4;
        int inet6 = len;
        buf.putShort(len + 2, (short) (Native.AF_INET6 | NLA_F_NESTED));
        len += 4;
        attr(IFLA_INET6_ADDR_GEN_MODE, new byte[] {IN6_ADDR_GEN_MODE_NONE});
        buf.putShort(inet6, (short) (len - inet6));
        buf.putShort(spec, (short) (len - spec));
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
        begin(RTM_NEWLINK, 0);
        buf.putInt(16 + 4, ifindex);
        buf.putInt(16 + 8, IFF_UP);
        buf.putInt(16 + 12, IFF_UP);
        len += 16;
        if (mtu > 0) {
            attrInt(IFLA_MTU, mtu);
        }
        if (txqueuelen > 0) {
            attrInt(IFLA_TXQLEN, txqueuelen);
        }
        send("link " + ifindex + " up");
    }

    /** ip addr add ADDR/PREFIX dev IFINDEX (IPv6 without duplicate address detection) */
    public void addAddress(int ifindex, InetAddress addr, int prefix) throws NativeIoException {
        boolean v4 = addr instanceof Inet4Address;
        begin(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
        buf.putByte(16, (byte) (v4 ? Native.AF_INET : Native.AF_INET6));
        buf.putByte(17, (byte) prefix);
        buf.putByte(18, (byte) (v4 ? 0 : IFA_F_NODAD));
        buf.putByte(19, (byte) RT_SCOPE_UNIVERSE);
        buf.putInt(20, ifindex);
        len += 8;
        if (v4) {
            attr(IFA_LOCAL, addr.getAddress());
        }
        attr(IFA_ADDRESS, addr.getAddress());
        send("address " + addr.getHostAddress() + "/" + prefix + " on " + ifindex);
    }

    /** ip route add DST/PREFIX dev IFINDEX (a prefix of 0 is the default route) */
    public void addRoute(InetAddress dst, int prefix, int ifindex) throws NativeIoException {
        boolean v4 = dst instanceof Inet4Address;
        begin(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
        buf.putByte(16, (byte) (v4 ? Native.AF_INET : Native.AF_INET6));
        buf.putByte(17, (byte) prefix);
        buf.putByte(20, (byte) RT_TABLE_MAIN);
        buf.putByte(21, (byte) RTPROT_STATIC);
        buf.putByte(22, (byte) RT_SCOPE_LINK);
        buf.putByte(23, (byte) RTN_UNICAST);
        len += 12;
        if (prefix > 0) {
            attr(RTA_DST, dst.getAddress());
        }
        attrInt(RTA_OIF, ifindex);
        send("route " + dst.getHostAddress() + "/" + prefix + " dev " + ifindex);
    }

    /** ip route del DST/PREFIX dev IFINDEX; false if there was no such route. */
    public boolean deleteRoute(InetAddress dst, int prefix, int ifindex) throws NativeIoException {
        boolean v4 = dst instanceof Inet4Address;
        begin(RTM_DELROUTE, 0);
        buf.putByte(16, (byte) (v4 ? Native.AF_INET : Native.AF_INET6));
        buf.putByte(17, (byte) prefix);
        buf.putByte(20, (byte) RT_TABLE_MAIN);
        buf.putByte(22, (byte) RT_SCOPE_NOWHERE); // any scope (IPv4 matches it otherwise)
        len += 12;
        if (prefix > 0) {
            attr(RTA_DST, dst.getAddress());
        }
        attrInt(RTA_OIF, ifindex);
        try {
            send("delete route " + dst.getHostAddress() + "/" + prefix + " dev " + ifindex);
            return true;
        } catch (NativeIoException e) {
            if (e.errno() == warren.fdpass.libc.Errno.ESRCH || e.errno() == warren.fdpass.libc.Errno.ENOENT) {
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
    public record Route(int family, byte[] dst, int dstLength, int type, int table, int oif, java.util.List<byte[]> gateways) {
        public static final int UNICAST = 1;
        public static final int LOCAL = 2;
        public static final int BROADCAST = 3;
        public static final int ANYCAST = 4;
    }

    /** Every address of every link, both families (RTM_GETADDR dump). */
    public java.util.List<Address> addresses() throws NativeIoException {
        java.util.List<Address> out = new java.util.ArrayList<>();
        begin(RTM_GETADDR, NLM_F_DUMP);
        len += 8; // ifaddrmsg, family AF_UNSPEC
        dump("address dump", RTM_NEWADDR, (off, end) -> {
            int prefix = buf.getByte(off + 1) & 0xFF;
            int index = buf.getInt(off + 4);
            byte[] local = null;
            byte[] address = null;
            for (int a = off + 8; a + 4 <= end; ) {
                int alen = buf.getShort(a) & 0xFFFF;
                int type = buf.getShort(a + 2) & 0x3FFF;
                if (alen < 4 || a + alen > end) {
                    break;
                }
                if (type == IFA_LOCAL || type == IFA_ADDRESS) {
                    byte[] v = bytes(a + 4, alen - 4);
                    if (type == IFA_LOCAL) {
                        local = v;
                    } else {
                        address = v;
                    }
                }
                a += (alen + 3) & ~3;
            }
            if (address != null || local != null) {
                out.add(new Address(local != null ? local : address, address != null ? address : local, prefix, index));
            }
        });
        return out;
    }

    /** Every route of every table, both families (RTM_GETROUTE dump). */
    public java.util.List<Route> routes() throws NativeIoException {
        java.util.List<Route> out = new java.util.ArrayList<>();
        begin(RTM_GETROUTE, NLM_F_DUMP);
        len += 12; // rtmsg, family AF_UNSPEC
        dump("route dump", RTM_NEWROUTE, (off, end) -> {
            int family = buf.getByte(off) & 0xFF;
            int dstLen = buf.getByte(off + 1) & 0xFF;
            int table = buf.getByte(off + 4) & 0xFF;
            int type = buf.getByte(off + 7) & 0xFF;
            byte[] dst = new byte[family == Native.AF_INET ? 4 : 16];
            int oif = 0;
            java.util.List<byte[]> gateways = new java.util.ArrayList<>();
            for (int a = off + 12; a + 4 <= end; ) {
                int alen = buf.getShort(a) & 0xFFFF;
                int t = buf.getShort(a + 2) & 0x3FFF;
                if (alen < 4 || a + alen > end) {
                    break;
                }
                switch (t) {
                    case RTA_DST -> dst = bytes(a + 4, alen - 4);
                    case RTA_OIF -> oif = buf.getInt(a + 4);
                    case RTA_TABLE -> table = buf.getInt(a + 4);
                    case RTA_GATEWAY -> gateways.add(bytes(a + 4, alen - 4));
                    case RTA_VIA -> gateways.add(bytes(a + 6, alen - 6)); // u16 family, then the address
                    case RTA_MULTIPATH -> nexthops(a + 4, a + alen, gateways);
                    default -> { }
                }
                a += (alen + 3) & ~3;
            }
            out.add(new Route(family, dst, dstLen, type, table, oif, gateways));
        });
        return out;
    }

    /** struct rtnexthop (8: u16 len, u8 flags, u8 hops, i32 ifindex) and its attributes, repeated. */
    private void nexthops(int from, int to, java.util.List<byte[]> gateways) {
        for (int n = from; n + 8 <= to; ) {
            int nlen = buf.getShort(n) & 0xFFFF;
            if (nlen < 8 || n + nlen > to) {
                return;
            }
            for (int a = n + 8; a + 4 <= n + nlen; ) {
                int alen = buf.getShort(a) & 0xFFFF;
                int t = buf.getShort(a + 2) & 0x3FFF;
                if (alen < 4 || a + alen > n + nlen) {
                    break;
                }
                if (t == RTA_GATEWAY) {
                    gateways.add(bytes(a + 4, alen - 4));
                } else if (t == RTA_VIA) {
                    gateways.add(bytes(a + 6, alen - 6));
                }
                a += (alen + 3) & ~3;
            }
            n += (nlen + 3) & ~3;
        }
    }

    private byte[] bytes(int off, int n) {
        byte[] v = new byte[Math.max(0, n)];
        buf.get(off, v, 0, v.length);
        return v;
    }

    /** One message of a dump: the body from {@code off} (after nlmsghdr) to {@code end}. */
    private interface Body {
        void read(int off, int end);
    }

    private void dump(String what, int type, Body body) throws NativeIoException {
        buf.putShort(6, (short) (NLM_F_REQUEST | NLM_F_DUMP));
        buf.putInt(0, len);
        if (Native.ioResult("write", Native.write(fd.get(), buf, len)) != len) {
            throw new NativeIoException("sendmsg", warren.fdpass.libc.Errno.EIO, what);
        }
        int want = seq;
        while (true) {
            long n = Native.ioResult("read", Native.read(fd.get(), buf, BUF));
            if (n < 0) {
                throw new NativeIoException("recvmsg", Native.errno(), what);
            }
            int off = 0;
            while (off + 16 <= n) {
                int mlen = buf.getInt(off);
                int mtype = buf.getShort(off + 4) & 0xFFFF;
                if (mlen < 16 || off + mlen > n) {
                    break;
                }
                if (buf.getInt(off + 8) == want) {
                    if (mtype == NLMSG_DONE) {
                        return;
                    }
                    if (mtype == NLMSG_ERROR) {
                        throw new NativeIoException("rtnetlink", -buf.getInt(off + 16), what);
                    }
                    if (mtype == type) {
                        body.read(off + 16, off + mlen);
                    }
                }
                off += (mlen + 3) & ~3;
            }
        }
    }

    @Override
    public void close() {
        fd.close();
    }
}
