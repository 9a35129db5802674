package warren.fdpass;

import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * What an fd is, before trusting it: its file type (fstat), and for sockets the family, type,
 * protocol (SO_DOMAIN, SO_TYPE, SO_PROTOCOL) and whether it listens (SO_ACCEPTCONN).
 *
 * <p>An O_PATH fd of a socket file (open(2) with O_PATH on a unix socket's path; SCM_RIGHTS carries
 * it like any fd) is {@link Kind#PATH}: fstat(2) says S_IFSOCK, but every socket call on it fails
 * with EBADF (the kernel's socket lookup skips O_PATH files), which a caller must not take for a
 * broken daemon (found by the live fuzzer: Bumblebee and Fish answered INTERNAL).
 */
public record FdInfo(Kind kind, int domain, int type, int protocol, boolean listening) {
    public enum Kind { SOCKET, REGULAR, PIPE, CHARACTER_DEVICE, DIRECTORY, PATH, OTHER }

    public static FdInfo of(Fd fd) throws NativeIoException {
        return of(fd.get());
    }

    public static FdInfo of(int fd) throws NativeIoException {
        long mode = Native.fstat(fd)[0] & Native.S_IFMT;
        Kind kind;
        if (mode == Native.S_IFSOCK) {
            kind = Kind.SOCKET;
        } else if (mode == Native.S_IFREG) {
            kind = Kind.REGULAR;
        } else if (mode == Native.S_IFIFO) {
            kind = Kind.PIPE;
        } else if (mode == Native.S_IFCHR) {
            kind = Kind.CHARACTER_DEVICE;
        } else if (mode == Native.S_IFDIR) {
            kind = Kind.DIRECTORY;
        } else {
            kind = Kind.OTHER;
        }
        if (kind != Kind.SOCKET) {
            return new FdInfo(kind, -1, -1, -1, false);
        }
        int domain;
        try {
            domain = Native.getsockoptInt(fd, Native.SOL_SOCKET, Native.SO_DOMAIN);
        } catch (NativeIoException e) {
            if (e.errno() == Errno.EBADF) { // fstat worked, so the fd is open: an O_PATH fd of a socket file
                return new FdInfo(Kind.PATH, -1, -1, -1, false);
            }
            throw e;
        }
        int type = Native.getsockoptInt(fd, Native.SOL_SOCKET, Native.SO_TYPE);
        int protocol = Native.getsockoptInt(fd, Native.SOL_SOCKET, Native.SO_PROTOCOL);
        boolean listening = Native.getsockoptInt(fd, Native.SOL_SOCKET, Native.SO_ACCEPTCONN) != 0;
        return new FdInfo(kind, domain, type, protocol, listening);
    }

    public boolean isSocket() {
        return kind == Kind.SOCKET;
    }

    /** A short description for error messages, e.g. "a pipe", "an AF_INET SOCK_DGRAM socket". */
    public String describe() {
        switch (kind) {
            case SOCKET:
                return "a" + (domain == Native.AF_INET || domain == Native.AF_INET6
                        || domain == Native.AF_UNIX ? "n " : " ") + familyName(domain) + " "
                        + typeName(type) + (listening ? " listening" : "") + " socket";
            case REGULAR: return "a regular file";
            case PIPE: return "a pipe";
            case CHARACTER_DEVICE: return "a character device";
            case DIRECTORY: return "a directory";
            case PATH: return "an O_PATH fd (of a socket file: no socket calls work on it)";
            default: return "an fd of unknown type";
        }
    }

    /**
     * Checks that the fd is a TCP-style connected stream socket of AF_INET or AF_INET6 (or
     * AF_UNIX if allowed), not listening, with no pending error.
     */
    public static FdInfo requireConnectedStream(Fd fd, String role, boolean allowUnix)
            throws FdPassException, NativeIoException {
        FdInfo info;
        try {
            info = of(fd);
        } catch (NativeIoException e) {
            if (e.errno() == Errno.EBADF) {
                throw new FdPassException(FdPassException.Reason.BAD_FD_TYPE, role + " is not an open fd");
            }
            throw e;
        }
        boolean familyOk = info.domain == Native.AF_INET || info.domain == Native.AF_INET6
                || (allowUnix && info.domain == Native.AF_UNIX);
        if (!info.isSocket() || info.type != Native.SOCK_STREAM || !familyOk || info.listening) {
            throw new FdPassException(FdPassException.Reason.BAD_FD_TYPE,
                    role + " is " + info.describe() + ", expected a connected stream socket");
        }
        return info;
    }

    public static String familyName(int domain) {
        switch (domain) {
            case Native.AF_UNIX: return "AF_UNIX";
            case Native.AF_INET: return "AF_INET";
            case Native.AF_INET6: return "AF_INET6";
            case Native.AF_NETLINK: return "AF_NETLINK";
            default: return "family " + domain;
        }
    }

    public static String typeName(int type) {
        switch (type) {
            case Native.SOCK_STREAM: return "SOCK_STREAM";
            case Native.SOCK_DGRAM: return "SOCK_DGRAM";
            case Native.SOCK_RAW: return "SOCK_RAW";
            case Native.SOCK_SEQPACKET: return "SOCK_SEQPACKET";
            default: return "type " + type;
        }
    }
}
