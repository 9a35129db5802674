package warren.daemon.testing.livefuzz;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.util.SplittableRandom;
import warren.fdpass.Fd;
import warren.fdpass.Memfd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.fdpass.net.TcpSockets;

/**
 * Fds of every kind a control client could attach to a message, made fresh for each message:
 * sockets of each family and type (connected or not, listening), pipes, eventfds, memfds sealed
 * and not, a directory, /dev/null, O_PATH fds (SCM_RIGHTS takes those: open(2), O_PATH) of a file and
 * of the daemon's socket file (fstat(2) says socket, every socket call says EBADF), and a connection
 * to the daemon's own control socket. Each {@link Made} is the fd to send (the caller
 * closes its copy once the message is sent: the kernel put a copy in it) and, for pairs, the peer
 * end the caller keeps or closes (closing it at once gives the daemon a socket whose peer is gone).
 * Thread-safe: the two TCP listeners are shared, each connect is followed by its own accept under
 * a lock.
 */
public final class FdZoo implements AutoCloseable {
    /** Every kind; {@link #weight} makes the common ones (what requests expect) more likely. */
    public enum Kind {
        TCP4_CONNECTED, TCP6_CONNECTED, TCP4_UNCONNECTED, TCP6_UNCONNECTED, TCP4_LISTENING,
        UDP4, UDP6, UNIX_STREAM, UNIX_DGRAM, UNIX_SEQPACKET, UNIX_STREAM_LISTENING, NETLINK_ROUTE,
        PIPE_READ, PIPE_WRITE, EVENTFD, MEMFD_SEALED, MEMFD_UNSEALED, MEMFD_PARTLY_SEALED, DIRECTORY,
        DEV_NULL, O_PATH, O_PATH_SOCKET, DAEMON_CONTROL;

        /** Kinds that a Splice takes (connected stream sockets). */
        static final Kind[] STREAMS = {TCP4_CONNECTED, TCP6_CONNECTED, UNIX_STREAM};
        /** Kinds an Upgrade's flow or an Egress's packet socket takes (one packet per message). */
        static final Kind[] PACKETS = {UNIX_SEQPACKET, UNIX_DGRAM};
    }

    /** An fd to send and, for a pair, its peer (or null). */
    public record Made(Kind kind, Fd fd, Fd peer) {}

    // x86_64 / generic Linux values (fcntl.h): not in Native, used only here
    private static final int O_RDWR = 2;
    private static final int O_DIRECTORY = 0x10000;
    private static final int O_PATH = 0x200000;
    private static final int NETLINK_ROUTE = 0;

    private final Path control;
    private final Fd listener4;
    private final Fd listener6; // null without IPv6 loopback
    private final InetSocketAddress at4;
    private final InetSocketAddress at6;
    private final Object acceptLock = new Object();

    public FdZoo(Path control) throws Exception {
        this.control = control;
        listener4 = TcpSockets.listen(new InetSocketAddress(InetAddress.getByName("127.0.0.1"), 0), 1024);
        at4 = TcpSockets.localAddress(listener4);
        Fd l6 = null;
        InetSocketAddress a6 = null;
        try {
            l6 = TcpSockets.listen(new InetSocketAddress(InetAddress.getByName("::1"), 0), 1024);
            a6 = TcpSockets.localAddress(l6);
        } catch (NativeIoException e) {
            // no IPv6 loopback here: TCP6_CONNECTED falls back to an unconnected IPv6 socket
        }
        listener6 = l6;
        at6 = a6;
    }

    /** A random kind, each equally likely. */
    public static Kind any(SplittableRandom rnd) {
        Kind[] all = Kind.values();
        Kind k = all[rnd.nextInt(all.length)];
        // a daemon's own control connection is rare: it is a client of its own once it is a task's
        return k == Kind.DAEMON_CONTROL && rnd.nextInt(8) != 0 ? Kind.DEV_NULL : k;
    }

    public static Kind streamKind(SplittableRandom rnd) {
        return Kind.STREAMS[rnd.nextInt(Kind.STREAMS.length)];
    }

    public static Kind packetKind(SplittableRandom rnd) {
        return Kind.PACKETS[rnd.nextInt(Kind.PACKETS.length)];
    }

    public Made make(Kind kind) throws Exception {
        switch (kind) {
            case TCP4_CONNECTED: return tcpPair(kind, listener4, at4);
            case TCP6_CONNECTED:
                return listener6 == null ? single(kind, Native.socket(Native.AF_INET6, stream(), 0))
                        : tcpPair(kind, listener6, at6);
            case TCP4_UNCONNECTED: return single(kind, Native.socket(Native.AF_INET, stream(), 0));
            case TCP6_UNCONNECTED: return single(kind, Native.socket(Native.AF_INET6, stream(), 0));
            case TCP4_LISTENING: {
                Fd l = TcpSockets.listen(new InetSocketAddress(InetAddress.getByName("127.0.0.1"), 0), 4);
                return new Made(kind, l, null);
            }
            case UDP4: return single(kind, Native.socket(Native.AF_INET, Native.SOCK_DGRAM | Native.SOCK_CLOEXEC, 0));
            case UDP6: return single(kind, Native.socket(Native.AF_INET6, Native.SOCK_DGRAM | Native.SOCK_CLOEXEC, 0));
            case UNIX_STREAM: return pair(kind, Native.SOCK_STREAM);
            case UNIX_DGRAM: return pair(kind, Native.SOCK_DGRAM);
            case UNIX_SEQPACKET: return pair(kind, Native.SOCK_SEQPACKET);
            case UNIX_STREAM_LISTENING: {
                Fd l = Fd.adopt(Native.socket(Native.AF_UNIX, stream(), 0));
                try {
                    Native.bind(l.get(), new byte[] {(byte) Native.AF_UNIX, 0}, "autobind"); // an abstract autobind name
                    Native.listen(l.get(), 1);
                } catch (NativeIoException | RuntimeException e) {
                    l.close();
                    throw e;
                }
                return new Made(kind, l, null);
            }
            case NETLINK_ROUTE:
                return single(kind, Native.socket(Native.AF_NETLINK, Native.SOCK_RAW | Native.SOCK_CLOEXEC, NETLINK_ROUTE));
            case PIPE_READ: {
                int[] p = Native.pipe2(Native.O_CLOEXEC);
                return new Made(kind, Fd.adopt(p[0]), Fd.adopt(p[1]));
            }
            case PIPE_WRITE: {
                int[] p = Native.pipe2(Native.O_CLOEXEC);
                return new Made(kind, Fd.adopt(p[1]), Fd.adopt(p[0]));
            }
            case EVENTFD: return single(kind, Native.eventfd(0, Native.EFD_CLOEXEC));
            case MEMFD_SEALED: return new Made(kind, Memfd.createSealed("fuzz", new byte[] {8, 1}), null);
            case MEMFD_UNSEALED: return new Made(kind, Memfd.createUnsealed("fuzz", new byte[] {8, 1}), null);
            case MEMFD_PARTLY_SEALED: {
                Fd m = Memfd.createUnsealed("fuzz", new byte[] {8, 1});
                Native.fcntl(m.get(), Native.F_ADD_SEALS, Native.F_SEAL_SHRINK | Native.F_SEAL_GROW);
                return new Made(kind, m, null);
            }
            case DIRECTORY: return single(kind, Native.open("/", Native.O_RDONLY | O_DIRECTORY));
            case DEV_NULL: return single(kind, Native.open("/dev/null", O_RDWR));
            case O_PATH: return single(kind, Native.open("/dev/null", O_PATH));
            case O_PATH_SOCKET: return single(kind, Native.open(control.toString(), O_PATH)); // fstat: a socket; getsockopt: EBADF
            case DAEMON_CONTROL: {
                Fd c = Fd.adopt(Native.socket(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC, 0));
                try {
                    Native.connect(c.get(), Native.sockaddrUn(control.toString()), control.toString());
                } catch (NativeIoException | RuntimeException e) {
                    c.close();
                    return make(Kind.UNIX_SEQPACKET); // the listener's backlog is full now: any seqpacket socket
                }
                return new Made(kind, c, null);
            }
            default: throw new IllegalArgumentException(kind.name());
        }
    }

    private static int stream() {
        return Native.SOCK_STREAM | Native.SOCK_CLOEXEC;
    }

    private static Made single(Kind kind, int fd) {
        return new Made(kind, Fd.adopt(fd), null);
    }

    private static Made pair(Kind kind, int type) throws NativeIoException {
        int[] sv = Native.socketpair(Native.AF_UNIX, type | Native.SOCK_CLOEXEC);
        return new Made(kind, Fd.adopt(sv[0]), Fd.adopt(sv[1]));
    }

    /**
     * A connected loopback TCP pair: the sent end is the accepted one (a front proxy's client side).
     * The peer closes with a reset (SO_LINGER 0): no TIME_WAIT, so tens of thousands of pairs in a
     * run do not use up the ephemeral ports.
     */
    private Made tcpPair(Kind kind, Fd listener, InetSocketAddress at) throws NativeIoException {
        synchronized (acceptLock) {
            Fd client = TcpSockets.connect(at);
            try {
                TcpSockets.lingerZero(client);
                return new Made(kind, TcpSockets.accept(listener), client);
            } catch (NativeIoException | RuntimeException e) {
                client.close();
                throw e;
            }
        }
    }

    @Override
    public void close() {
        listener4.close();
        if (listener6 != null) {
            listener6.close();
        }
    }
}
