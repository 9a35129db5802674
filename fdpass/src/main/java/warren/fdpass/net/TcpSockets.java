package warren.fdpass.net;

import java.net.InetSocketAddress;
import jnr.ffi.Pointer;
import warren.fdpass.Fd;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * Plain TCP sockets as owned {@link Fd}s, for code that hands sockets to warren (the demo's front
 * proxy, tests, benchmarks): listen, connect, accept, blocking mode, linger-0 resets, and reading
 * and writing through the raw fd.
 */
public final class TcpSockets {
    private TcpSockets() {}

    public static Fd listen(InetSocketAddress at, int backlog) throws NativeIoException {
        int family = at.getAddress().getAddress().length == 4 ? Native.AF_INET : Native.AF_INET6;
        Fd fd = Fd.adopt(Native.socket(family, Native.SOCK_STREAM | Native.SOCK_CLOEXEC, 0));
        try {
            Native.setsockoptInt(fd.get(), Native.SOL_SOCKET, Native.SO_REUSEADDR, 1);
            Native.bind(fd.get(), Native.sockaddr(at), at.toString());
            Native.listen(fd.get(), backlog);
            return fd;
        } catch (NativeIoException | RuntimeException e) {
            fd.close();
            throw e;
        }
    }

    /** A blocking connect. */
    public static Fd connect(InetSocketAddress to) throws NativeIoException {
        int family = to.getAddress().getAddress().length == 4 ? Native.AF_INET : Native.AF_INET6;
        Fd fd = Fd.adopt(Native.socket(family, Native.SOCK_STREAM | Native.SOCK_CLOEXEC, 0));
        try {
            Native.connect(fd.get(), Native.sockaddr(to), to.toString());
            return fd;
        } catch (NativeIoException | RuntimeException e) {
            fd.close();
            throw e;
        }
    }

    /** A blocking accept (the listener must be blocking). */
    public static Fd accept(Fd listener) throws NativeIoException {
        int c = Native.accept4(listener.get(), Native.SOCK_CLOEXEC);
        if (c == Native.WOULD_BLOCK) {
            throw new NativeIoException("accept4", Errno.EAGAIN);
        }
        return Fd.adopt(c);
    }

    public static InetSocketAddress localAddress(Fd fd) throws NativeIoException {
        return Native.getsockname(fd.get());
    }

    public static InetSocketAddress remoteAddress(Fd fd) throws NativeIoException {
        return Native.getpeername(fd.get());
    }

    public static void setBlocking(Fd fd, boolean blocking) throws NativeIoException {
        int flags = Native.fcntl(fd.get(), Native.F_GETFL, 0);
        Native.fcntl(fd.get(), Native.F_SETFL, blocking ? flags & ~Native.O_NONBLOCK : flags | Native.O_NONBLOCK);
    }

    /** SO_LINGER {on, 0}: close() then sends a RST instead of a FIN. */
    public static void lingerZero(Fd fd) throws NativeIoException {
        Native.setsockoptInts(fd.get(), Native.SOL_SOCKET, Native.SO_LINGER, new int[] {1, 0}, "SO_LINGER");
    }

    public static void shutdownOutput(Fd fd) throws NativeIoException {
        Native.shutdown(fd.get(), Native.SHUT_WR);
    }

    /** Writes all of {@code data[off, off+len)}, through {@code scratch} a piece at a time. */
    public static void writeFully(Fd fd, Pointer scratch, byte[] data, int off, int len) throws NativeIoException {
        int room = (int) Math.min(Integer.MAX_VALUE, scratch.size());
        for (int start = 0; start < len; start += room) {
            int piece = Math.min(room, len - start);
            scratch.put(0, data, off + start, piece);
            long done = 0;
            while (done < piece) {
                long n = Native.ioResult("write", Native.write(fd.get(), scratch.slice(done), piece - done));
                if (n == Native.WOULD_BLOCK) {
                    Native.pollOne(fd.get(), Native.POLLOUT, 1000);
                    continue;
                }
                done += n;
            }
        }
    }

    /** Reads up to {@code len} bytes (at most the scratch size; blocking): the count, 0 at EOF. */
    public static int read(Fd fd, Pointer scratch, byte[] into, int off, int len) throws NativeIoException {
        len = (int) Math.min(len, scratch.size());
        while (true) {
            long n = Native.ioResult("read", Native.read(fd.get(), scratch, len));
            if (n == Native.WOULD_BLOCK) {
                Native.pollOne(fd.get(), Native.POLLIN, 1000);
                continue;
            }
            scratch.get(0, into, off, (int) n);
            return (int) n;
        }
    }
}
