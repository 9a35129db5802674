package warren.linux.net;

import warren.fdpass.libc.Errno;
import warren.fdpass.libc.NativeIoException;

/**
 * A steering program could not be loaded or attached. {@link #notPermitted()} is the expected
 * case on a host or in a user namespace without CAP_BPF/CAP_SYS_ADMIN: the daemon logs it once,
 * shows it in Status, and falls back to the kernel's flow table plus the hand-over ring. Anything
 * else (a verifier rejection, with its log in the message and {@link #verifierLog()}) is a bug.
 */
public final class SteeringException extends NativeIoException {
    private final String verifierLog;

    public SteeringException(String syscall, int errno, String context, String verifierLog) {
        super(syscall, errno, context + (verifierLog.isEmpty() ? "" : "\nverifier log:\n" + verifierLog));
        this.verifierLog = verifierLog;
    }

    /**
     * EPERM: bpf(2) is not allowed to this process here (not a defect of the program). The
     * verifier's own rejections are EINVAL or EACCES and come with a log.
     */
    public boolean notPermitted() {
        return errno() == Errno.EPERM;
    }

    /** The kernel verifier's log for a rejected program ("" when not asked or not produced). */
    public String verifierLog() {
        return verifierLog;
    }
}
