package warren.fdpass.libc;

import java.io.IOException;

/**
 * A failed system call: which call and which errno, e.g.
 * {@code sendmsg() failed: EPIPE (Broken pipe)}. Errno crosses the native boundary once, here.
 */
public class NativeIoException extends IOException {
    private final String syscall;
    private final int errno;

    public NativeIoException(String syscall, int errno) {
        super(syscall + "() failed: " + Errno.describe(errno));
        this.syscall = syscall;
        this.errno = errno;
    }

    public NativeIoException(String syscall, int errno, String context) {
        super(syscall + "() failed: " + Errno.describe(errno) + ": " + context);
        this.syscall = syscall;
        this.errno = errno;
    }

    public String syscall() {
        return syscall;
    }

    public int errno() {
        return errno;
    }
}
