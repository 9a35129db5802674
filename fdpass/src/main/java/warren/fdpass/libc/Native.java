package warren.fdpass.libc;

import java.nio.charset.StandardCharsets;
import jnr.ffi.LibraryLoader;
import jnr.ffi.LibraryOption;
import jnr.ffi.Memory;
import jnr.ffi.Pointer;
import jnr.ffi.Runtime;

/**
 * The thin typed facade over {@link LibC}, and the only way to it: constants, errno handling and
 * native memory. Method name = syscall name. Two shapes of result:
 *
 * <ul>
 *   <li><b>I/O calls made per packet or per byte</b> ({@link #read}, {@link #write}, {@link #send},
 *       {@link #sendto}, {@link #recv}, {@link #recvmmsg}, {@link #sendmmsg}, {@link #splice}) return the count, or
 *       {@code -errno} on failure; EINTR is retried inside, EAGAIN comes back as
 *       {@link #WOULD_BLOCK} ({@code -EAGAIN}). They never throw and allocate nothing, so a loop
 *       can call them per packet. {@link #ioResult} turns such a result into the control path's
 *       shape.
 *   <li><b>Everything else</b> throws {@link NativeIoException} naming the syscall and errno
 *       (EINTR retried, EAGAIN returned as {@link #WOULD_BLOCK} where a non-blocking caller
 *       expects it). The few callers that branch on an errno of a setup call use the
 *       {@code try}-prefixed variants ({@link #tryShutdown}, {@link #tryFcntl},
 *       {@link #tryIoctl}, {@link #tryConnect}), which return {@code -errno} instead.
 * </ul>
 *
 * <p>After any call, {@link #errno()} still reports the errno of its last failed attempt.
 */
public final class Native {
    private Native() {}

    private static final LibC LIBC = LibraryLoader.create(LibC.class)
            .option(LibraryOption.SaveError, true)
            .option(LibraryOption.IgnoreError, false)
            .load("c");
    public static final Runtime RUNTIME = Runtime.getRuntime(LIBC);

    /**
     * Returned by non-blocking wrappers when the kernel said EAGAIN: {@code -EAGAIN}, so that the
     * I/O calls' "count or -errno" results need no second sentinel.
     */
    public static final int WOULD_BLOCK = -Errno.EAGAIN;

    // socket(2)
    public static final int AF_UNIX = 1;
    public static final int AF_INET = 2;
    public static final int AF_INET6 = 10;
    public static final int AF_NETLINK = 16;
    public static final int SOCK_STREAM = 1;
    public static final int SOCK_DGRAM = 2;
    public static final int SOCK_RAW = 3;
    public static final int SOCK_SEQPACKET = 5;
    public static final int SOCK_NONBLOCK = 0x800;
    public static final int SOCK_CLOEXEC = 0x80000;
    public static final int SHUT_RD = 0;
    public static final int SHUT_WR = 1;
    public static final int SHUT_RDWR = 2;

    // sendmsg(2) / recvmsg(2)
    public static final int MSG_CTRUNC = 0x8;
    public static final int MSG_TRUNC = 0x20;
    public static final int MSG_DONTWAIT = 0x40;
    public static final int MSG_NOSIGNAL = 0x4000;
    public static final int MSG_CMSG_CLOEXEC = 0x40000000;
    public static final int SOL_SOCKET = 1;
    public static final int SCM_RIGHTS = 1;
    public static final int SCM_CREDENTIALS = 2;
    /** SCM_MAX_FD (include/net/scm.h): the kernel refuses more fds in one message. */
    public static final int SCM_MAX_FD = 253;

    // getsockopt(2), SOL_SOCKET
    public static final int SO_TYPE = 3;
    public static final int SO_ERROR = 4;
    public static final int SO_SNDBUF = 7;
    public static final int SO_RCVBUF = 8;
    public static final int SO_PASSCRED = 16;
    public static final int SO_PEERCRED = 17;
    public static final int SO_ACCEPTCONN = 30;
    public static final int SO_PROTOCOL = 38;
    public static final int SO_DOMAIN = 39;
    /** The peer's supplementary groups as of connect(2), like SO_PEERCRED (Linux >= 4.13). */
    public static final int SO_PEERGROUPS = 59;

    // fcntl(2)
    public static final int F_GETFD = 1;
    public static final int F_SETFD = 2;
    public static final int F_GETFL = 3;
    public static final int F_SETFL = 4;
    public static final int F_DUPFD_CLOEXEC = 1030;
    public static final int F_ADD_SEALS = 1033;
    public static final int F_GET_SEALS = 1034;
    public static final int FD_CLOEXEC = 1;
    public static final int O_NONBLOCK = 0x800;
    public static final int O_CLOEXEC = 0x80000;
    public static final int F_SEAL_SEAL = 1;
    public static final int F_SEAL_SHRINK = 2;
    public static final int F_SEAL_GROW = 4;
    public static final int F_SEAL_WRITE = 8;

    // splice(2), pipes
    public static final int SPLICE_F_MOVE = 1;
    public static final int SPLICE_F_NONBLOCK = 2;
    public static final int SPLICE_F_MORE = 4;
    public static final int F_SETPIPE_SZ = 1031;
    public static final int F_GETPIPE_SZ = 1032;

    // TCP
    public static final int IPPROTO_TCP = 6;
    public static final int IPPROTO_UDP = 17;
    public static final int TCP_NODELAY = 1;
    public static final int TCP_INFO = 11;
    public static final int SO_LINGER = 13;
    public static final int SO_REUSEADDR = 2;

    // getrlimit(2)
    public static final int RLIMIT_NOFILE = 7;

    // open(2), setns(2)
    public static final int O_RDONLY = 0;
    public static final int O_WRONLY = 1;
    public static final int O_DIRECTORY = 0x10000;
    public static final int O_PATH = 0x200000;
    public static final int CLONE_NEWNET = 0x40000000;

    // memfd_create(2)
    public static final int MFD_CLOEXEC = 1;
    public static final int MFD_ALLOW_SEALING = 2;

    // stat(2) st_mode
    public static final int S_IFMT = 0xF000;
    public static final int S_IFSOCK = 0xC000;
    public static final int S_IFREG = 0x8000;
    public static final int S_IFDIR = 0x4000;
    public static final int S_IFCHR = 0x2000;
    public static final int S_IFIFO = 0x1000;

    // epoll(7), poll(2), eventfd(2)
    public static final int EPOLL_CLOEXEC = 0x80000;
    public static final int EPOLL_CTL_ADD = 1;
    public static final int EPOLL_CTL_DEL = 2;
    public static final int EPOLL_CTL_MOD = 3;
    public static final int EPOLLIN = 0x1;
    public static final int EPOLLPRI = 0x2;
    public static final int EPOLLOUT = 0x4;
    public static final int EPOLLERR = 0x8;
    public static final int EPOLLHUP = 0x10;
    public static final int EPOLLRDHUP = 0x2000;
    public static final int EPOLLET = 0x80000000;
    public static final int EPOLLONESHOT = 0x40000000;
    public static final int POLLIN = 0x1;
    public static final int POLLOUT = 0x4;
    public static final int POLLERR = 0x8;
    public static final int POLLHUP = 0x10;
    public static final int POLLRDHUP = 0x2000;
    public static final int EFD_CLOEXEC = 0x80000;
    public static final int EFD_NONBLOCK = 0x800;

    /** errno of the last call made on this thread. */
    public static int errno() {
        return RUNTIME.getLastError();
    }

    /**
     * The control path's view of an I/O call's result ({@code count or -errno}): the count, or
     * {@link #WOULD_BLOCK}, or a {@link NativeIoException} naming the syscall for any other errno.
     */
    public static long ioResult(String syscall, long rc) throws NativeIoException {
        if (rc >= 0 || rc == WOULD_BLOCK) {
            return rc;
        }
        throw new NativeIoException(syscall, (int) -rc);
    }

    /** The result of a raw call as {@code rc} or {@code -errno}; EINTR is the caller's business. */
    private static long rcOrErrno(long rc) {
        return rc >= 0 ? rc : -errno();
    }

    public static String strerror(int errno) {
        try {
            String s = LIBC.strerror(errno);
            return s != null ? s : "unknown error";
        } catch (RuntimeException | LinkageError e) {
            return "unknown error";
        }
    }

    /**
     * Per-thread scratch memory for small structs that a call fills and the caller reads at once
     * (stat, sockaddr, pollfd). jnr's direct memory is malloc'd and only freed when the Java
     * object is collected, so allocating it per call piles up native garbage between GCs.
     */
    private static final ThreadLocal<Pointer> SCRATCH = ThreadLocal.withInitial(() -> allocate(256));

    /** Native memory, zeroed, freed when the returned pointer is unreachable. */
    public static Pointer allocate(int size) {
        return Memory.allocateDirect(RUNTIME, size, true);
    }

    /** Returned by {@link #outcome} when the call was interrupted (EINTR) and must be made again. */
    private static final long RETRY = Long.MIN_VALUE;

    /**
     * Errno handling of a call that returned {@code rc}, in one place: rc itself when it
     * succeeded, {@link #RETRY} on EINTR, {@link #WOULD_BLOCK} on EAGAIN when the caller is
     * non-blocking ({@code eagainOk}), otherwise a {@link NativeIoException} naming the syscall.
     */
    private static long outcome(String syscall, long rc, boolean eagainOk) throws NativeIoException {
        if (rc >= 0) {
            return rc;
        }
        int e = errno();
        if (e == Errno.EINTR) {
            return RETRY;
        }
        if (eagainOk && e == Errno.EAGAIN) {
            return WOULD_BLOCK;
        }
        throw new NativeIoException(syscall, e);
    }

    static int check(String syscall, int rc) throws NativeIoException {
        if (rc < 0) {
            throw new NativeIoException(syscall, errno());
        }
        return rc;
    }

    public static int socket(int domain, int type, int protocol) throws NativeIoException {
        return check("socket", LIBC.socket(domain, type, protocol));
    }

    public static int[] socketpair(int domain, int type) throws NativeIoException {
        int[] sv = new int[2];
        check("socketpair", LIBC.socketpair(domain, type, 0, sv));
        return sv;
    }

    /** A sockaddr_un for a filesystem path; refuses paths that do not fit sun_path. */
    public static byte[] sockaddrUn(String path) throws NativeIoException {
        byte[] p = path.getBytes(StandardCharsets.UTF_8);
        if (p.length >= Layout.SUN_PATH_MAX) {
            throw new NativeIoException("bind", Errno.ENAMETOOLONG, path);
        }
        byte[] addr = new byte[Layout.SUN_PATH_OFFSET + p.length + 1];
        addr[0] = (byte) AF_UNIX; // little-endian sa_family_t
        System.arraycopy(p, 0, addr, Layout.SUN_PATH_OFFSET, p.length);
        return addr;
    }

    public static void bind(int fd, byte[] addr, String what) throws NativeIoException {
        if (LIBC.bind(fd, addr, addr.length) < 0) {
            throw new NativeIoException("bind", errno(), what);
        }
    }

    public static void listen(int fd, int backlog) throws NativeIoException {
        check("listen", LIBC.listen(fd, backlog));
    }

    /** accept4 with the given flags; {@link #WOULD_BLOCK} on EAGAIN. */
    public static int accept4(int fd, int flags) throws NativeIoException {
        while (true) {
            int rc = LIBC.accept4(fd, null, null, flags);
            if (rc >= 0) {
                return rc;
            }
            int e = errno();
            if (e == Errno.EINTR) {
                continue;
            }
            if (e == Errno.EAGAIN || e == Errno.ECONNABORTED) {
                return WOULD_BLOCK;
            }
            throw new NativeIoException("accept4", e);
        }
    }

    /** connect; returns 0, or throws. EINTR is retried, EAGAIN (unix backlog full) thrown. */
    public static void connect(int fd, byte[] addr, String what) throws NativeIoException {
        while (LIBC.connect(fd, addr, addr.length) < 0) {
            int e = errno();
            if (e != Errno.EINTR) {
                throw new NativeIoException("connect", e, what);
            }
        }
    }

    /**
     * connect(2) for a non-blocking socket, where EINPROGRESS is the normal answer: 0 or
     * {@code -errno}. Not retried on EINTR (the connection then goes on in the background and
     * reports like EINPROGRESS).
     */
    public static int tryConnect(int fd, byte[] addr) {
        return (int) rcOrErrno(LIBC.connect(fd, addr, addr.length));
    }

    /** sendmsg; bytes sent or {@link #WOULD_BLOCK}. */
    public static long sendmsg(int fd, Pointer msg, int flags) throws NativeIoException {
        long rc;
        do {
            rc = outcome("sendmsg", LIBC.sendmsg(fd, msg, flags), true);
        } while (rc == RETRY);
        return rc;
    }

    /** recvmsg; bytes received or {@link #WOULD_BLOCK}. */
    public static long recvmsg(int fd, Pointer msg, int flags) throws NativeIoException {
        long rc;
        do {
            rc = outcome("recvmsg", LIBC.recvmsg(fd, msg, flags), true);
        } while (rc == RETRY);
        return rc;
    }

    /**
     * splice(2) without offsets (both ends are sockets or pipes): bytes moved, 0 at end of input,
     * {@link #WOULD_BLOCK} on EAGAIN, or {@code -errno} for any other failure. Returning errno as
     * data (no exception) keeps the relay's hot path free of allocation.
     */
    public static long splice(int fdIn, int fdOut, long len, int flags) {
        while (true) {
            long rc = LIBC.splice(fdIn, null, fdOut, null, len, flags);
            if (rc >= 0) {
                return rc;
            }
            int e = errno();
            if (e == Errno.EINTR) {
                continue;
            }
            return -e; // -EAGAIN == WOULD_BLOCK
        }
    }

    /** getrlimit(2): {soft, hard}. */
    public static long[] getrlimit(int resource) throws NativeIoException {
        long[] r = new long[2];
        check("getrlimit", LIBC.getrlimit(resource, r));
        return r;
    }

    /** getsockopt into native memory; returns the length the kernel filled in. */
    public static int getsockopt(int fd, int level, int opt, Pointer buf, int len) throws NativeIoException {
        int[] l = {len};
        check("getsockopt", LIBC.getsockopt(fd, level, opt, buf, l));
        return l[0];
    }

    /** getsockname(2) as a {@link java.net.InetSocketAddress} (null for non-IP sockets). */
    public static java.net.InetSocketAddress getsockname(int fd) throws NativeIoException {
        Pointer sa = SCRATCH.get();
        int[] len = {128};
        check("getsockname", LIBC.getsockname(fd, sa, len));
        return inetAddress(sa);
    }

    /**
     * getsockname(2) of an AF_UNIX socket: its filesystem path, "@name" for an abstract name, ""
     * when unnamed (e.g. a socketpair). The name is the one given to bind(2): a file renamed since
     * keeps its old name here.
     */
    public static String getsocknameUnix(int fd) throws NativeIoException {
        Pointer sa = SCRATCH.get();
        int[] len = {Layout.SOCKADDR_UN_SIZE};
        check("getsockname", LIBC.getsockname(fd, sa, len));
        int n = Math.min(len[0], Layout.SOCKADDR_UN_SIZE) - Layout.SUN_PATH_OFFSET;
        if ((sa.getShort(0) & 0xFFFF) != AF_UNIX || n <= 0) {
            return "";
        }
        byte[] path = new byte[n];
        sa.get(Layout.SUN_PATH_OFFSET, path, 0, n);
        if (path[0] == 0) {
            return "@" + new String(path, 1, n - 1, StandardCharsets.UTF_8);
        }
        int end = 0;
        while (end < n && path[end] != 0) {
            end++;
        }
        return new String(path, 0, end, StandardCharsets.UTF_8);
    }

    /** getpeername(2) as a {@link java.net.InetSocketAddress} (null for non-IP sockets). */
    public static java.net.InetSocketAddress getpeername(int fd) throws NativeIoException {
        Pointer sa = SCRATCH.get();
        int[] len = {128};
        check("getpeername", LIBC.getpeername(fd, sa, len));
        return inetAddress(sa);
    }

    private static java.net.InetSocketAddress inetAddress(Pointer sa) {
        int family = sa.getShort(0) & 0xFFFF;
        int port = ((sa.getByte(2) & 0xFF) << 8) | (sa.getByte(3) & 0xFF);
        byte[] ip;
        if (family == AF_INET) {
            ip = new byte[4];
            sa.get(4, ip, 0, 4);
        } else if (family == AF_INET6) {
            ip = new byte[16];
            sa.get(8, ip, 0, 16);
        } else {
            return null;
        }
        try {
            return new java.net.InetSocketAddress(java.net.InetAddress.getByAddress(ip), port);
        } catch (java.net.UnknownHostException e) {
            throw new IllegalStateException(e);
        }
    }

    /** A sockaddr_in or sockaddr_in6 for bind/connect. */
    public static byte[] sockaddr(java.net.InetSocketAddress a) {
        byte[] ip = a.getAddress().getAddress();
        int port = a.getPort();
        byte[] sa;
        if (ip.length == 4) {
            sa = new byte[16];
            sa[0] = (byte) AF_INET;
            System.arraycopy(ip, 0, sa, 4, 4);
        } else {
            sa = new byte[28];
            sa[0] = (byte) AF_INET6;
            System.arraycopy(ip, 0, sa, 8, 16);
        }
        sa[2] = (byte) (port >> 8);
        sa[3] = (byte) port;
        return sa;
    }

    /** read(2): bytes read, 0 at end of file, or {@code -errno} ({@link #WOULD_BLOCK} on EAGAIN). */
    public static long read(int fd, Pointer buf, long count) {
        while (true) {
            long rc = LIBC.read(fd, buf, count);
            if (rc >= 0 || errno() != Errno.EINTR) {
                return rcOrErrno(rc);
            }
        }
    }

    /** write(2): bytes written or {@code -errno} ({@link #WOULD_BLOCK} on EAGAIN). */
    public static long write(int fd, Pointer buf, long count) {
        while (true) {
            long rc = LIBC.write(fd, buf, count);
            if (rc >= 0 || errno() != Errno.EINTR) {
                return rcOrErrno(rc);
            }
        }
    }

    /** send(2): bytes sent or {@code -errno} ({@link #WOULD_BLOCK} on EAGAIN). */
    public static long send(int fd, Pointer buf, long len, int flags) {
        while (true) {
            long rc = LIBC.send(fd, buf, len, flags);
            if (rc >= 0 || errno() != Errno.EINTR) {
                return rcOrErrno(rc);
            }
        }
    }

    /** sendto(2) to the sockaddr {@code addr} (native memory): bytes sent or {@code -errno}. */
    public static long sendto(int fd, Pointer buf, long len, int flags, Pointer addr, int addrlen) {
        while (true) {
            long rc = LIBC.sendto(fd, buf, len, flags, addr, addrlen);
            if (rc >= 0 || errno() != Errno.EINTR) {
                return rcOrErrno(rc);
            }
        }
    }

    /** recv(2): bytes received, 0 at end of stream, or {@code -errno} ({@link #WOULD_BLOCK} on EAGAIN). */
    public static long recv(int fd, Pointer buf, long len, int flags) {
        while (true) {
            long rc = LIBC.recv(fd, buf, len, flags);
            if (rc >= 0 || errno() != Errno.EINTR) {
                return rcOrErrno(rc);
            }
        }
    }

    /**
     * recvmmsg(2) into the {@code mmsghdr} array {@code msgvec} (laid out by {@link Layout}), no
     * timeout: messages received or {@code -errno} ({@link #WOULD_BLOCK} on EAGAIN).
     */
    public static int recvmmsg(int fd, Pointer msgvec, int vlen, int flags) {
        while (true) {
            int rc = LIBC.recvmmsg(fd, msgvec, vlen, flags, null);
            if (rc >= 0 || errno() != Errno.EINTR) {
                return (int) rcOrErrno(rc);
            }
        }
    }

    /**
     * sendmmsg(2) of the {@code mmsghdr} array {@code msgvec} (laid out by {@link Layout}): the
     * number of messages sent (each one's {@code msg_len} filled in), or {@code -errno}
     * ({@link #WOULD_BLOCK} on EAGAIN) if the first could not be sent. Fewer than {@code vlen}
     * means the next would have blocked or failed; its error comes from the next call.
     */
    public static int sendmmsg(int fd, Pointer msgvec, int vlen, int flags) {
        while (true) {
            int rc = LIBC.sendmmsg(fd, msgvec, vlen, flags);
            if (rc >= 0 || errno() != Errno.EINTR) {
                return (int) rcOrErrno(rc);
            }
        }
    }

    public static long pread(int fd, Pointer buf, long count, long offset) throws NativeIoException {
        long rc;
        do {
            rc = outcome("pread", LIBC.pread(fd, buf, count, offset), false);
        } while (rc == RETRY);
        return rc;
    }

    public static long pwrite(int fd, Pointer buf, long count, long offset) throws NativeIoException {
        long rc;
        do {
            rc = outcome("pwrite", LIBC.pwrite(fd, buf, count, offset), false);
        } while (rc == RETRY);
        return rc;
    }

    /** close(2). Linux releases the fd even when close reports EINTR: never retry. */
    public static int close(int fd) {
        return LIBC.close(fd) < 0 ? errno() : 0;
    }

    public static void shutdown(int fd, int how) throws NativeIoException {
        check("shutdown", LIBC.shutdown(fd, how));
    }

    /** shutdown(2) for a caller that branches on the errno: 0 or {@code -errno}. */
    public static int tryShutdown(int fd, int how) {
        return (int) rcOrErrno(LIBC.shutdown(fd, how));
    }

    /** getsockopt for an int-valued option. */
    public static int getsockoptInt(int fd, int level, int opt) throws NativeIoException {
        int[] v = new int[1];
        int[] len = {4};
        check("getsockopt", LIBC.getsockopt(fd, level, opt, v, len));
        return v[0];
    }

    /** getsockopt into an int array (e.g. struct ucred as {pid, uid, gid}). */
    public static void getsockoptInts(int fd, int level, int opt, int[] out) throws NativeIoException {
        int[] len = {out.length * 4};
        check("getsockopt", LIBC.getsockopt(fd, level, opt, out, len));
    }

    /**
     * getsockopt(SO_PEERGROUPS): the supplementary groups of the process that connected (or
     * called socketpair), recorded by the kernel at that moment like SO_PEERCRED. The buffer grows
     * when the kernel says ERANGE (it then reports the length it needs). Empty on a kernel older
     * than 4.13 (ENOPROTOOPT) and for a socket with no peer credentials.
     */
    public static int[] getsockoptPeerGroups(int fd) throws NativeIoException {
        int[] buf = new int[32];
        while (true) {
            int[] len = {buf.length * 4};
            if (LIBC.getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, buf, len) == 0) {
                return java.util.Arrays.copyOf(buf, len[0] / 4);
            }
            int e = errno();
            if (e == Errno.ERANGE && len[0] > buf.length * 4) {
                buf = new int[len[0] / 4];
            } else if (e == Errno.ENOPROTOOPT || e == Errno.ENODATA) {
                return new int[0];
            } else if (e != Errno.EINTR) {
                throw new NativeIoException("getsockopt", e, "SO_PEERGROUPS");
            }
        }
    }

    public static void setsockoptInt(int fd, int level, int opt, int value) throws NativeIoException {
        check("setsockopt", LIBC.setsockopt(fd, level, opt, new int[] {value}, 4));
    }

    /** setsockopt with a struct of ints (e.g. struct linger as {onoff, seconds}); {@code what} names the option. */
    public static void setsockoptInts(int fd, int level, int opt, int[] value, String what) throws NativeIoException {
        if (LIBC.setsockopt(fd, level, opt, value, value.length * 4) < 0) {
            throw new NativeIoException("setsockopt", errno(), what);
        }
    }

    public static int fcntl(int fd, int cmd, int arg) throws NativeIoException {
        return check("fcntl", LIBC.fcntl(fd, cmd, arg));
    }

    /** close_range(2)'s flag: set FD_CLOEXEC on the range instead of closing it (Linux 5.11). */
    public static final int CLOSE_RANGE_CLOEXEC = 1 << 2;

    /**
     * Sets FD_CLOEXEC on fds {@code first..last} in one close_range(2) call; false if this kernel,
     * libc or seccomp filter refuses it (the caller then sets them one by one).
     */
    public static boolean cloexecRange(int first, int last) {
        try {
            return LIBC.close_range(first, last, CLOSE_RANGE_CLOEXEC) == 0;
        } catch (UnsatisfiedLinkError e) { // a libc before 2.34
            return false;
        }
    }

    /** fcntl(2) for a caller that branches on the errno or ignores it: the result or {@code -errno}. */
    public static int tryFcntl(int fd, int cmd, int arg) {
        return (int) rcOrErrno(LIBC.fcntl(fd, cmd, arg));
    }

    /** ioctl(2) with a pointer argument; {@code what} names the request in the exception. */
    public static int ioctl(int fd, long request, Pointer arg, String what) throws NativeIoException {
        int rc = LIBC.ioctl(fd, request, arg);
        if (rc < 0) {
            throw new NativeIoException("ioctl", errno(), what);
        }
        return rc;
    }

    /**
     * ioctl FIONBIO (asm-generic/ioctls.h: x86_64 and arm64): sets O_NONBLOCK on the open file
     * description alone, as F_GETFL + F_SETFL(flags | O_NONBLOCK) do, in one syscall instead of two
     * (the kernel's ioctl_fionbio).
     */
    private static final long FIONBIO = 0x5421;
    /** The int 1 FIONBIO reads (never written: shared by every thread). */
    private static final Pointer ONE = allocate(4);

    static {
        ONE.putInt(0, 1);
        // loaded now, not at the first error: a class first loaded when the process is out of fds
        // (EMFILE) fails to load (its jar cannot be opened), and the error path itself would throw
        // NoClassDefFoundError (ControlExhaustionTest run alone failed so)
        Errno.name(Errno.EMFILE);
        NativeIoException.class.getName();
    }

    /** O_NONBLOCK on {@code fd}'s open file description, its other flags kept: one ioctl(FIONBIO). */
    public static void setNonBlocking(int fd) throws NativeIoException {
        int rc = tryIoctl(fd, FIONBIO, ONE);
        if (rc < 0) {
            throw new NativeIoException("ioctl", -rc, "FIONBIO");
        }
    }

    /** ioctl(2) for a caller that branches on the errno or ignores it: the result or {@code -errno}. */
    public static int tryIoctl(int fd, long request, Pointer arg) {
        return (int) rcOrErrno(LIBC.ioctl(fd, request, arg));
    }

    /**
     * ioctl(2) whose argument is passed by value (TUNSETOFFLOAD): the result or {@code -errno},
     * for a caller that branches on the errno (e.g. EINVAL for an offload the kernel lacks).
     */
    public static int tryIoctlValue(int fd, long request, long arg) {
        return (int) rcOrErrno(LIBC.ioctl(fd, request, arg));
    }

    /** __NR_bpf of this architecture (x86_64 321, arm64 280), or -1 where warren does not know it. */
    public static final long SYS_BPF = switch (System.getProperty("os.arch")) {
        case "amd64", "x86_64" -> 321;
        case "aarch64", "arm64" -> 280;
        default -> -1;
    };

    /**
     * bpf(2) through syscall(2) (glibc has no wrapper): the result (a new fd for the *_LOAD
     * commands) or {@code -errno}, so the caller can tell EPERM (not allowed here) from a
     * verifier rejection. {@code attr} is a {@code union bpf_attr} of {@code size} bytes in native
     * memory. -ENOSYS on an architecture whose syscall number is not known.
     */
    public static int tryBpf(int cmd, Pointer attr, int size) {
        if (SYS_BPF < 0) {
            return -Errno.ENOSYS;
        }
        while (true) {
            long rc = LIBC.syscall(SYS_BPF, cmd, attr, size);
            if (rc >= 0 || errno() != Errno.EINTR) {
                return (int) rcOrErrno(rc);
            }
        }
    }

    /** if_nametoindex(3): the interface's index in the calling thread's namespace, 0 if there is none. */
    public static int if_nametoindex(String name) {
        return LIBC.if_nametoindex(name);
    }

    /** unshare(2): e.g. {@link #CLONE_NEWNET} moves the calling thread into a new namespace. */
    public static void unshare(int flags) throws NativeIoException {
        check("unshare", LIBC.unshare(flags));
    }

    /** fstat; returns {st_mode, st_size, st_dev, st_ino}. */
    public static long[] fstat(int fd) throws NativeIoException {
        Pointer st = SCRATCH.get();
        check("fstat", LIBC.fstat(fd, st));
        return new long[] {st.getInt(Layout.ST_MODE) & 0xFFFFFFFFL, st.getLong(Layout.ST_SIZE),
            st.getLong(Layout.ST_DEV), st.getLong(Layout.ST_INO)};
    }

    public static int memfd_create(String name, int flags) throws NativeIoException {
        return check("memfd_create", LIBC.memfd_create(name, flags));
    }

    public static void ftruncate(int fd, long length) throws NativeIoException {
        check("ftruncate", LIBC.ftruncate(fd, length));
    }

    public static int[] pipe2(int flags) throws NativeIoException {
        int[] fds = new int[2];
        check("pipe2", LIBC.pipe2(fds, flags));
        return fds;
    }

    public static int eventfd(int initval, int flags) throws NativeIoException {
        return check("eventfd", LIBC.eventfd(initval, flags));
    }

    public static int epoll_create1(int flags) throws NativeIoException {
        return check("epoll_create1", LIBC.epoll_create1(flags));
    }

    public static void epoll_ctl(int epfd, int op, int fd, Pointer event) throws NativeIoException {
        check("epoll_ctl", LIBC.epoll_ctl(epfd, op, fd, event));
    }

    /** epoll_wait; 0 events on EINTR. */
    public static int epoll_wait(int epfd, Pointer events, int max, int timeoutMs) throws NativeIoException {
        int rc = LIBC.epoll_wait(epfd, events, max, timeoutMs);
        if (rc < 0) {
            int e = errno();
            if (e == Errno.EINTR) {
                return 0;
            }
            throw new NativeIoException("epoll_wait", e);
        }
        return rc;
    }

    /**
     * poll(2) on one fd; returns revents, 0 on timeout. EINTR returns 0 (callers loop on their
     * own deadline).
     */
    public static int pollOne(int fd, int events, int timeoutMs) throws NativeIoException {
        Pointer p = SCRATCH.get();
        p.putInt(0, fd);
        p.putShort(4, (short) events);
        int rc = LIBC.poll(p, 1, timeoutMs);
        if (rc < 0) {
            int e = errno();
            if (e == Errno.EINTR) {
                return 0;
            }
            throw new NativeIoException("poll", e);
        }
        return rc == 0 ? 0 : p.getShort(6) & 0xFFFF;
    }

    /**
     * openat(2) of the entry named by the decimal {@code number} in the directory {@code dirfd}
     * (O_CLOEXEC added), without a Java string: e.g. a pipe's other end through an open
     * /proc/self/fd, thousands of times in a recovery.
     */
    public static int openNumbered(int dirfd, int number, int flags) throws NativeIoException {
        if (number < 0) {
            throw new IllegalArgumentException("no entry number " + number);
        }
        Pointer name = SCRATCH.get();
        int len = 1;
        for (int x = number; x >= 10; x /= 10) {
            len++;
        }
        int n = number;
        for (int i = len - 1; i >= 0; i--, n /= 10) {
            name.putByte(i, (byte) ('0' + n % 10));
        }
        name.putByte(len, (byte) 0);
        int rc = LIBC.openat(dirfd, name, flags | O_CLOEXEC);
        if (rc < 0) {
            throw new NativeIoException("openat", errno(), String.valueOf(number));
        }
        return rc;
    }

    public static int open(String path, int flags) throws NativeIoException {
        int rc = LIBC.open(path, flags | O_CLOEXEC);
        if (rc < 0) {
            throw new NativeIoException("open", errno(), path);
        }
        return rc;
    }

    /** setns(2): moves the calling thread into the namespace {@code fd} refers to. */
    public static void setns(int fd, int nstype) throws NativeIoException {
        check("setns", LIBC.setns(fd, nstype));
    }

    public static void chmod(String path, int mode) throws NativeIoException {
        if (LIBC.chmod(path, mode) < 0) {
            throw new NativeIoException("chmod", errno(), path);
        }
    }

    public static void chown(String path, int uid, int gid) throws NativeIoException {
        if (LIBC.chown(path, uid, gid) < 0) {
            throw new NativeIoException("chown", errno(), path);
        }
    }

    /** unlink; true if removed, false if it did not exist. */
    public static boolean unlink(String path) throws NativeIoException {
        if (LIBC.unlink(path) < 0) {
            int e = errno();
            if (e == Errno.ENOENT) {
                return false;
            }
            throw new NativeIoException("unlink", e, path);
        }
        return true;
    }

    public static int getpid() {
        return LIBC.getpid();
    }

    public static int getuid() {
        return LIBC.getuid();
    }

    public static int getgid() {
        return LIBC.getgid();
    }

    /** getpwnam_r(3): the uid of a user name (through NSS, like id(1)), or -1 when there is no such user. */
    public static int getpwnam(String name) throws NativeIoException {
        return lookupName(name, true);
    }

    /** getgrnam_r(3): the gid of a group name (through NSS), or -1 when there is no such group. */
    public static int getgrnam(String name) throws NativeIoException {
        return lookupName(name, false);
    }

    private static int lookupName(String name, boolean user) throws NativeIoException {
        Pointer entry = allocate(Math.max(Layout.PASSWD_SIZE, Layout.GROUP_SIZE));
        Pointer result = allocate(8);
        for (int size = 1024; ; size *= 4) {
            Pointer buf = allocate(size);
            int rc = user ? LIBC.getpwnam_r(name, entry, buf, size, result)
                    : LIBC.getgrnam_r(name, entry, buf, size, result);
            if (rc == Errno.ERANGE && size < (1 << 24)) {
                continue; // a group with many members: a larger buffer
            }
            if (rc != 0 && rc != Errno.ENOENT && rc != Errno.ESRCH && rc != Errno.EBADF && rc != Errno.EPERM) {
                throw new NativeIoException(user ? "getpwnam_r" : "getgrnam_r", rc, name);
            }
            if (rc != 0 || result.getAddress(0) == 0) {
                return -1; // not found (the "not found" errnos of getpwnam_r(3) included)
            }
            return entry.getInt(user ? Layout.PW_UID : Layout.GR_GID);
        }
    }
}
