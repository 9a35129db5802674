package warren.daemon.relay;

import warren.control.v1.EndReason;
import warren.fdpass.libc.Errno;

/** How a failed splice(2) errno ends a pair. */
final class EndReasons {
    private EndReasons() {}

    static EndReason forErrno(int errno) {
        switch (errno) {
            case Errno.ECONNRESET:
            case Errno.EPIPE:
            case Errno.ETIMEDOUT:
            case Errno.EHOSTUNREACH:
            case Errno.ENETUNREACH:
                return EndReason.RESET;
            default:
                return EndReason.ERROR;
        }
    }
}
