package warren.fdpass.net;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import jnr.ffi.Pointer;
import warren.fdpass.Fd;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * Whether two connected stream sockets are each other's peer: the two ends of one connection.
 * Relaying such a pair feeds it its own bytes for ever, so a relay refuses it.
 *
 * <ul>
 *   <li>TCP (AF_INET/AF_INET6): a's local address is b's remote and a's remote is b's local, and
 *       both live in the same network namespace (SO_NETNS_COOKIE, Linux 5.14; where the kernel
 *       lacks it the addresses alone decide). A 4-tuple is unique in a namespace, so this is
 *       exact.</li>
 *   <li>AF_UNIX: the kernel's sock_diag (NETLINK_SOCK_DIAG, unix_diag(7) as {@code ss -x} uses
 *       it) looked up by a's inode with UDIAG_SHOW_PEER returns the inode of a's peer; a and b are
 *       peers iff that is b's inode (fstat). The lookup is exact (by inode, no dump) but covers
 *       only sockets of the caller's network namespace: one created elsewhere, or a kernel without
 *       unix_diag, gives {@link Verdict#UNKNOWN}.</li>
 * </ul>
 *
 * <pre>
 * request:  nlmsghdr (16) type SOCK_DIAG_BY_FAMILY (20), flags NLM_F_REQUEST
 *           unix_diag_req (24): 0 u8 family=AF_UNIX  1 u8 protocol  2 u16 pad  4 u32 states
 *                               8 u32 ino  12 u32 show (UDIAG_SHOW_PEER)  16 u32[2] cookie (~0: none)
 * answer:   nlmsghdr (16) + unix_diag_msg (16): 0 family 1 type 2 state 3 pad 4 u32 ino 8 u32[2] cookie
 *           then rtattrs: 0 u16 len 2 u16 type 4 data; UNIX_DIAG_PEER (2) = u32 peer inode
 *           or NLMSG_ERROR (2): 16 i32 -errno
 * </pre>
 */
public final class SocketPeers {
    private SocketPeers() {}

    /** The answer: peers, not peers, or not known (the reason in {@link Result#detail}). */
    public enum Verdict { PEERS, NOT_PEERS, UNKNOWN }

    public record Result(Verdict verdict, String detail) {}

    private static final int NETLINK_SOCK_DIAG = 4;
    private static final int SOCK_DIAG_BY_FAMILY = 20;
    private static final int NLMSG_ERROR = 2;
    private static final int NLM_F_REQUEST = 1;
    private static final int UDIAG_SHOW_PEER = 0x4;
    private static final int UNIX_DIAG_PEER = 2;
    private static final int NLMSG_HDR = 16;
    private static final int REQ_LEN = NLMSG_HDR + 24;
    private static final int MSG_LEN = 16;
    private static final int SO_NETNS_COOKIE = 71;
    private static final int BUF = 8192;

    public static Result check(Fd a, Fd b) throws NativeIoException {
        return check(a.get(), b.get());
    }

    /** Whether stream sockets a and b are the two ends of one connection. */
    public static Result check(int a, int b) throws NativeIoException {
        int fa = Native.getsockoptInt(a, Native.SOL_SOCKET, Native.SO_DOMAIN);
        int fb = Native.getsockoptInt(b, Native.SOL_SOCKET, Native.SO_DOMAIN);
        boolean ipA = fa == Native.AF_INET || fa == Native.AF_INET6;
        boolean ipB = fb == Native.AF_INET || fb == Native.AF_INET6;
        if (ipA && ipB) {
            return tcp(a, b);
        }
        if (fa == Native.AF_UNIX && fb == Native.AF_UNIX) {
            return unix(a, b);
        }
        return new Result(Verdict.NOT_PEERS, "different families");
    }

    private static Result tcp(int a, int b) throws NativeIoException {
        InetSocketAddress aLocal;
        InetSocketAddress aRemote;
        InetSocketAddress bLocal;
        InetSocketAddress bRemote;
        try {
            aLocal = Native.getsockname(a);
            aRemote = Native.getpeername(a);
            bLocal = Native.getsockname(b);
            bRemote = Native.getpeername(b);
        } catch (NativeIoException e) {
            if (e.errno() == Errno.ENOTCONN) {
                return new Result(Verdict.NOT_PEERS, "not connected");
            }
            throw e;
        }
        if (!same(aLocal, bRemote) || !same(aRemote, bLocal)) {
            return new Result(Verdict.NOT_PEERS, "other addresses");
        }
        long ca = netnsCookie(a);
        long cb = netnsCookie(b);
        if (ca != 0 && cb != 0 && ca != cb) {
            return new Result(Verdict.NOT_PEERS, "same addresses in two network namespaces");
        }
        return new Result(Verdict.PEERS, "a TCP connection's two ends: " + addr(aLocal) + " <-> " + addr(aRemote));
    }

    /** Equal address and port; an IPv4-mapped IPv6 address equals its IPv4 address. */
    private static boolean same(InetSocketAddress x, InetSocketAddress y) {
        return x != null && y != null && x.getPort() == y.getPort() && v4(x.getAddress()).equals(v4(y.getAddress()));
    }

    private static InetAddress v4(InetAddress a) {
        byte[] b = a.getAddress();
        if (b.length == 16) {
            boolean mapped = b[10] == (byte) 0xFF && b[11] == (byte) 0xFF;
            for (int i = 0; i < 10 && mapped; i++) {
                mapped = b[i] == 0;
            }
            if (mapped) {
                try {
                    return InetAddress.getByAddress(java.util.Arrays.copyOfRange(b, 12, 16));
                } catch (java.net.UnknownHostException e) {
                    throw new IllegalStateException(e);
                }
            }
        }
        return a;
    }

    private static String addr(InetSocketAddress a) {
        String h = a.getAddress().getHostAddress();
        return (h.contains(":") ? "[" + h + "]" : h) + ":" + a.getPort();
    }

    /** SO_NETNS_COOKIE, or 0 where the kernel does not have it. */
    private static long netnsCookie(int fd) throws NativeIoException {
        Pointer p = Native.allocate(8);
        try {
            Native.getsockopt(fd, Native.SOL_SOCKET, SO_NETNS_COOKIE, p, 8);
            return p.getLong(0);
        } catch (NativeIoException e) {
            if (e.errno() == Errno.ENOPROTOOPT || e.errno() == Errno.EINVAL) {
                return 0;
            }
            throw e;
        }
    }

    private static Result unix(int a, int b) throws NativeIoException {
        long inoA = Native.fstat(a)[3];
        long inoB = Native.fstat(b)[3];
        long peerOfA = unixPeerInode(inoA);
        if (peerOfA < 0) {
            return new Result(Verdict.UNKNOWN, "unix_diag: " + Errno.describe((int) -peerOfA));
        }
        return peerOfA == inoB ? new Result(Verdict.PEERS, "the two ends of one AF_UNIX socketpair (inodes "
                + inoA + ", " + inoB + ")") : new Result(Verdict.NOT_PEERS, "other AF_UNIX peers");
    }

    /**
     * The inode of the peer of the AF_UNIX socket with inode {@code ino} in this network namespace
     * (0 if it has none), or -errno if the kernel cannot say (ENOENT: not in this namespace;
     * EPROTONOSUPPORT/ENOENT from socket(): no unix_diag).
     */
    public static long unixPeerInode(long ino) throws NativeIoException {
        int fd;
        try {
            fd = Native.socket(Native.AF_NETLINK, Native.SOCK_RAW | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK,
                    NETLINK_SOCK_DIAG);
        } catch (NativeIoException e) {
            if (e.errno() == Errno.EMFILE || e.errno() == Errno.ENFILE) {
                throw e;
            }
            return -e.errno();
        }
        try (Fd nl = Fd.adopt(fd)) {
            Pointer buf = Native.allocate(BUF);
            buf.setMemory(0, REQ_LEN, (byte) 0);
            buf.putInt(0, REQ_LEN);
            buf.putShort(4, (short) SOCK_DIAG_BY_FAMILY);
            buf.putShort(6, (short) NLM_F_REQUEST);
            buf.putInt(8, 1);
            buf.putByte(NLMSG_HDR, (byte) Native.AF_UNIX);
            buf.putInt(NLMSG_HDR + 4, -1);                 // every state
            buf.putInt(NLMSG_HDR + 8, (int) ino);
            buf.putInt(NLMSG_HDR + 12, UDIAG_SHOW_PEER);
            buf.putInt(NLMSG_HDR + 16, -1);                // INET_DIAG_NOCOOKIE
            buf.putInt(NLMSG_HDR + 20, -1);
            long w = Native.write(nl.get(), buf, REQ_LEN);
            if (w != REQ_LEN) {
                return w < 0 ? (int) w : -Errno.EIO;
            }
            long n = Native.read(nl.get(), buf, BUF); // sock_diag answers within the write; non-blocking anyway
            if (n < 0) {
                return (int) n;
            }
            if (n < NLMSG_HDR + 4) {
                return -Errno.EIO;
            }
            int type = buf.getShort(4) & 0xFFFF;
            if (type == NLMSG_ERROR) {
                int err = buf.getInt(NLMSG_HDR);
                return err < 0 ? err : -Errno.EIO;
            }
            int len = Math.min((int) n, buf.getInt(0));
            if (type != SOCK_DIAG_BY_FAMILY || len < NLMSG_HDR + MSG_LEN
                    || (buf.getInt(NLMSG_HDR + 4) & 0xFFFFFFFFL) != (ino & 0xFFFFFFFFL)) {
                return -Errno.EIO;
            }
            for (int off = NLMSG_HDR + MSG_LEN; off + 4 <= len; ) {
                int alen = buf.getShort(off) & 0xFFFF;
                int atype = buf.getShort(off + 2) & 0xFFFF;
                if (alen < 4 || off + alen > len) {
                    break;
                }
                if (atype == UNIX_DIAG_PEER && alen >= 8) {
                    return buf.getInt(off + 4) & 0xFFFFFFFFL;
                }
                off += (alen + 3) & ~3;
            }
            return 0; // no peer attribute: not connected
        }
    }
}
