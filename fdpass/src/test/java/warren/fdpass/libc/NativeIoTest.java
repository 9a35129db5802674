package warren.fdpass.libc;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import jnr.ffi.Pointer;
import org.junit.jupiter.api.Test;

/** The per-packet I/O calls of {@link Native}: count or {@code -errno}, never an exception. */
class NativeIoTest {
    @Test
    void ioCallsReturnTheCountOrMinusErrno() throws Exception {
        Pointer p = Native.allocate(16);
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_NONBLOCK | Native.SOCK_CLOEXEC);
        try {
            assertEquals(Native.WOULD_BLOCK, Native.recv(sv[0], p, 16, 0), "nothing queued");
            assertEquals(-Errno.EAGAIN, Native.WOULD_BLOCK);
            assertEquals(Native.WOULD_BLOCK, Native.read(sv[0], p, 16));
            assertEquals(3, Native.send(sv[1], p, 3, Native.MSG_NOSIGNAL));
            assertEquals(3, Native.read(sv[0], p, 16));
            assertEquals(4, Native.write(sv[1], p, 4));
            Native.shutdown(sv[1], Native.SHUT_WR);
            assertEquals(4, Native.recv(sv[0], p, 16, 0));
            assertEquals(0, Native.recv(sv[0], p, 16, 0), "end of stream");
        } finally {
            Native.close(sv[0]);
            Native.close(sv[1]);
        }
        int bad = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC)[0];
        Native.close(bad);
        assertEquals(-Errno.EBADF, Native.read(bad, p, 16));
        assertEquals(-Errno.EBADF, Native.write(bad, p, 16));
        assertEquals(-Errno.EBADF, Native.send(bad, p, 16, 0));
        assertEquals(-Errno.EBADF, Native.recv(bad, p, 16, 0));
        assertEquals(-Errno.EBADF, Native.recvmmsg(bad, p, 0, 0));
        assertEquals(-Errno.EBADF, Native.splice(bad, bad, 16, 0));
        assertEquals(-Errno.EBADF, Native.tryShutdown(bad, Native.SHUT_WR));
        assertEquals(-Errno.EBADF, Native.tryFcntl(bad, Native.F_GETFL, 0));
        assertEquals(Errno.EBADF, Native.errno(), "errno still reports the last failure");
    }

    /** One close_range(2) marks a range close-on-exec and leaves the fds open (ListenFds after a crash). */
    @Test
    void cloexecRangeMarksEveryFdOfTheRangeAndClosesNone() throws Exception {
        int[] a = Native.pipe2(0);
        int[] b = Native.pipe2(0);
        try {
            int lo = Math.min(Math.min(a[0], a[1]), Math.min(b[0], b[1]));
            int hi = Math.max(Math.max(a[0], a[1]), Math.max(b[0], b[1]));
            for (int fd : new int[] {a[0], a[1], b[0], b[1]}) {
                assertEquals(0, Native.fcntl(fd, Native.F_GETFD, 0) & Native.FD_CLOEXEC, "made without O_CLOEXEC");
            }
            assertTrue(Native.cloexecRange(lo, hi), "this kernel (5.11+) and libc (2.34+) have close_range");
            for (int fd : new int[] {a[0], a[1], b[0], b[1]}) {
                assertEquals(Native.FD_CLOEXEC, Native.fcntl(fd, Native.F_GETFD, 0) & Native.FD_CLOEXEC, "fd " + fd);
            }
        } finally {
            for (int fd : new int[] {a[0], a[1], b[0], b[1]}) {
                Native.close(fd);
            }
        }
    }

    @Test
    void ioResultGivesTheControlPathItsException() throws Exception {
        assertEquals(7, Native.ioResult("read", 7));
        assertEquals(Native.WOULD_BLOCK, Native.ioResult("read", Native.WOULD_BLOCK));
        NativeIoException e = assertThrows(NativeIoException.class, () -> Native.ioResult("write", -Errno.EPIPE));
        assertEquals(Errno.EPIPE, e.errno());
        assertEquals("write", e.syscall());
    }
}
