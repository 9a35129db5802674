package warren.fdpass;

import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFileAttributes;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * A listening AF_UNIX SOCK_SEQPACKET socket on a filesystem path, non-blocking; {@link #accept()}
 * returns connections with the peer's SO_PEERCRED already read. Either bound here (path, mode,
 * owner) or adopted from an inherited fd (socket activation).
 *
 * <p>A stale socket file left by a crashed daemon is replaced; a path where a live daemon still
 * accepts, or a path that is not a socket, is an error.
 */
public final class SeqpacketListener implements AutoCloseable {
    private final Fd fd;
    private final Path path; // null when adopted: the owner of the path is someone else
    private final int maxMessage;

    private SeqpacketListener(Fd fd, Path path, int maxMessage) {
        this.fd = fd;
        this.path = path;
        this.maxMessage = maxMessage;
    }

    /**
     * Binds and listens at {@code path} with {@code mode} (e.g. 0660); {@code uid}/{@code gid} of -1
     * leave the owner as is.
     */
    public static SeqpacketListener bind(Path path, int mode, int uid, int gid, int backlog)
            throws NativeIoException, FdPassException {
        removeStale(path);
        Fd fd = Fd.adopt(Native.socket(Native.AF_UNIX,
                Native.SOCK_SEQPACKET | Native.SOCK_NONBLOCK | Native.SOCK_CLOEXEC, 0));
        // Bound and listening under a temporary name first, then renamed into place: the path
        // appears only once a client can connect (no ECONNREFUSED window between bind and listen)
        // and with its final mode and owner.
        Path tmp = path.resolveSibling(path.getFileName() + ".tmp-" + ProcessHandle.current().pid());
        boolean bound = false;
        try {
            Native.unlink(tmp.toString());
            Native.bind(fd.get(), Native.sockaddrUn(tmp.toString()), tmp.toString());
            bound = true;
            Native.chmod(tmp.toString(), mode);
            if (uid != -1 || gid != -1) {
                Native.chown(tmp.toString(), uid, gid);
            }
            Native.listen(fd.get(), backlog);
            try {
                Files.move(tmp, path, java.nio.file.StandardCopyOption.ATOMIC_MOVE,
                        java.nio.file.StandardCopyOption.REPLACE_EXISTING);
            } catch (java.io.IOException e) {
                throw new NativeIoException("rename", Errno.EIO, tmp + " -> " + path + ": " + e.getMessage());
            }
            return new SeqpacketListener(fd, path, SeqpacketSocket.DEFAULT_MAX_MESSAGE);
        } catch (NativeIoException | RuntimeException e) {
            fd.close();
            if (bound) {
                Native.unlink(tmp.toString());
            }
            throw e;
        }
    }

    public static SeqpacketListener bind(Path path) throws NativeIoException, FdPassException {
        return bind(path, 0660, -1, -1, 512);
    }

    /** Adopts an inherited listening socket (e.g. from systemd), after checking what it is. */
    public static SeqpacketListener adopt(Fd fd) throws NativeIoException, FdPassException {
        FdInfo info = FdInfo.of(fd);
        if (!info.isSocket() || info.domain() != Native.AF_UNIX || info.type() != Native.SOCK_SEQPACKET
                || !info.listening()) {
            throw new FdPassException(FdPassException.Reason.BAD_FD_TYPE,
                    fd + " is " + info.describe() + ", expected a listening AF_UNIX SOCK_SEQPACKET socket");
        }
        int flags = Native.fcntl(fd.get(), Native.F_GETFL, 0);
        Native.fcntl(fd.get(), Native.F_SETFL, flags | Native.O_NONBLOCK);
        Native.fcntl(fd.get(), Native.F_SETFD, Native.FD_CLOEXEC);
        return new SeqpacketListener(fd, null, SeqpacketSocket.DEFAULT_MAX_MESSAGE);
    }

    private static void removeStale(Path path) throws NativeIoException, FdPassException {
        PosixFileAttributes attrs;
        try {
            attrs = Files.readAttributes(path, PosixFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
        } catch (java.nio.file.NoSuchFileException e) {
            return;
        } catch (java.io.IOException e) {
            throw new NativeIoException("stat", Errno.EACCES, path + ": " + e.getMessage());
        }
        if (!attrs.isOther()) {
            throw new FdPassException(FdPassException.Reason.BAD_FD_TYPE,
                    path + " exists and is not a socket; refusing to replace it");
        }
        Fd probe = Fd.adopt(Native.socket(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC, 0));
        try {
            Native.connect(probe.get(), Native.sockaddrUn(path.toString()), path.toString());
            throw new NativeIoException("bind", Errno.EADDRINUSE, path + " is served by a running process");
        } catch (NativeIoException e) {
            if (e.errno() != Errno.ECONNREFUSED && e.errno() != Errno.EPROTOTYPE) {
                throw e; // EADDRINUSE from above, or EAGAIN: a live listener with a full backlog
            }
            // nobody listens (ECONNREFUSED) or a stream socket's leftover (EPROTOTYPE)
            Native.unlink(path.toString());
        } finally {
            probe.close();
        }
    }

    public Fd fd() {
        return fd;
    }

    /** The path this listener bound (null when adopted). */
    public Path path() {
        return path;
    }

    /**
     * The socket's name as getsockname(2) gives it: a filesystem path, "@name" for an abstract
     * socket, "" when unnamed. For a listener bound here it is the temporary name it was bound
     * under before the rename into place ({@link #bind}); use {@link #path()} then.
     */
    public String boundName() throws NativeIoException {
        return Native.getsocknameUnix(fd.get());
    }

    /** Accepts one pending connection, or null if none is pending. */
    public SeqpacketSocket accept() throws NativeIoException {
        int c = Native.accept4(fd.get(), Native.SOCK_NONBLOCK | Native.SOCK_CLOEXEC);
        if (c == Native.WOULD_BLOCK) {
            return null;
        }
        Fd conn = Fd.adopt(c);
        try {
            return new SeqpacketSocket(conn, maxMessage, Native.SCM_MAX_FD);
        } catch (NativeIoException | RuntimeException e) {
            conn.close();
            throw e;
        }
    }

    /**
     * Closes only this process's fd and leaves the path alone: the listening socket lives on in a
     * successor that was handed it (upgrade handoff). Later {@link #close} calls do nothing.
     */
    public void closeKeepingPath() {
        fd.close();
        keepPath = true;
    }

    private volatile boolean keepPath;

    /** Closes the socket and removes the path if this listener bound it (not after a handoff). */
    @Override
    public void close() {
        boolean wasOpen = fd.isOpen();
        fd.close();
        if (path != null && wasOpen && !keepPath) {
            try {
                Native.unlink(path.toString());
            } catch (NativeIoException ignored) {
                // already gone or not ours any more
            }
        }
    }
}
