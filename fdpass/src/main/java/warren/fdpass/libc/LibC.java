package warren.fdpass.libc;

import jnr.ffi.Pointer;
import jnr.ffi.annotations.In;
import jnr.ffi.annotations.Out;

/**
 * The raw libc entry points warren needs, bound with jnr-ffi. Method name = syscall name; every
 * method returns the raw result and leaves errno to {@link Errno} (the library is loaded with
 * {@code SaveError}). The only instance is {@link Native}'s private one, so nothing outside this
 * package can call it; the tree calls {@link Native}. The interface itself must stay public:
 * jnr-ffi generates its implementation in its own class loader, which cannot see a
 * package-private interface (IllegalAccessError).
 *
 * <p>Structures ({@code msghdr}, {@code cmsghdr}, {@code epoll_event}, ...) are passed as
 * {@link Pointer}s to native memory laid out by {@link Layout}.
 */
public interface LibC {
    int socket(int domain, int type, int protocol);

    int socketpair(int domain, int type, int protocol, @Out int[] sv);

    int bind(int fd, @In byte[] addr, int addrlen);

    int listen(int fd, int backlog);

    int accept4(int fd, Pointer addr, Pointer addrlen, int flags);

    int connect(int fd, @In byte[] addr, int addrlen);

    long sendmsg(int fd, Pointer msg, int flags);

    long recvmsg(int fd, Pointer msg, int flags);

    int recvmmsg(int fd, Pointer msgvec, int vlen, int flags, Pointer timeout);

    int sendmmsg(int fd, Pointer msgvec, int vlen, int flags);

    long splice(int fdIn, Pointer offIn, int fdOut, Pointer offOut, long len, int flags);

    int getsockopt(int fd, int level, int optname, Pointer optval, int[] optlen);

    int getrlimit(int resource, @Out long[] rlim);

    long send(int fd, Pointer buf, long len, int flags);

    long sendto(int fd, Pointer buf, long len, int flags, Pointer addr, int addrlen);

    long recv(int fd, Pointer buf, long len, int flags);

    long read(int fd, Pointer buf, long count);

    long write(int fd, Pointer buf, long count);

    long pread(int fd, Pointer buf, long count, long offset);

    long pwrite(int fd, Pointer buf, long count, long offset);

    int close(int fd);

    int shutdown(int fd, int how);

    int getsockopt(int fd, int level, int optname, @Out int[] optval, int[] optlen);

    int setsockopt(int fd, int level, int optname, @In int[] optval, int optlen);

    int getsockname(int fd, Pointer addr, int[] addrlen);

    int getpeername(int fd, Pointer addr, int[] addrlen);

    int fcntl(int fd, int cmd, int arg);

    int close_range(int first, int last, int flags);

    int fstat(int fd, Pointer statbuf);

    int memfd_create(String name, int flags);

    int ftruncate(int fd, long length);

    int pipe2(@Out int[] fds, int flags);

    int eventfd(int initval, int flags);

    int epoll_create1(int flags);

    int epoll_ctl(int epfd, int op, int fd, Pointer event);

    int epoll_wait(int epfd, Pointer events, int maxevents, int timeout);

    int poll(Pointer fds, long nfds, int timeout);

    int open(String path, int flags);

    int openat(int dirfd, Pointer path, int flags);

    int ioctl(int fd, long request, Pointer arg);

    /** ioctl(2) whose argument is a value, not a pointer (TUNSETOFFLOAD takes an unsigned long). */
    int ioctl(int fd, long request, long arg);

    /**
     * syscall(2) for calls glibc has no wrapper for (bpf). Variadic in C; bound with a fixed
     * prototype of integer and pointer arguments, which glibc's syscall() only moves between
     * integer registers, so the prototype is safe on x86_64 and arm64.
     */
    long syscall(long number, long arg1, Pointer arg2, long arg3);

    int if_nametoindex(String name);

    int setns(int fd, int nstype);

    int unshare(int flags);

    int chmod(String path, int mode);

    int chown(String path, int owner, int group);

    int unlink(String path);

    int getpid();

    int getuid();

    int getgid();

    int getpwnam_r(String name, Pointer pwd, Pointer buf, long buflen, Pointer result);

    int getgrnam_r(String name, Pointer grp, Pointer buf, long buflen, Pointer result);

    String strerror(int errnum);
}
