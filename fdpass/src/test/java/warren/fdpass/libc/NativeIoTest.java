package warren.fdpass.libc;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

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

    @Test
    void ioResultGivesTheControlPathItsException() throws Exception {
        assertEquals(7, Native.ioResult("read", 7));
        assertEquals(Native.WOULD_BLOCK, Native.ioResult("read", Native.WOULD_BLOCK));
        NativeIoException e = assertThrows(NativeIoException.class, () -> Native.ioResult("write", -Errno.EPIPE));
        assertEquals(Errno.EPIPE, e.errno());
        assertEquals("write", e.syscall());
    }
}
