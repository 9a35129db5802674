package warren.systemd;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * Socket activation (sd_listen_fds(3)): fds 3 .. 3+LISTEN_FDS-1 passed by systemd (or
 * systemd-socket-activate), named by LISTEN_FDNAMES, valid only if LISTEN_PID is this process.
 * The fds get FD_CLOEXEC so they do not leak into children. Without the variables there are none.
 */
public final class ListenFds {
    private ListenFds() {}

    public static final int SD_LISTEN_FDS_START = 3;

    /** One inherited fd and its name ("unknown" if unnamed). */
    public record Named(Fd fd, String name) {}

    public static List<Named> fromEnvironment() throws NativeIoException {
        return parse(System.getenv(), ProcessHandle.current().pid(), true);
    }

    /**
     * Parses the variables; with {@code adopt} the fds are taken (FD_CLOEXEC set), otherwise only
     * described (for tests). Returns none if LISTEN_PID is not {@code pid} or anything is malformed.
     */
    public static List<Named> parse(Map<String, String> env, long pid, boolean adopt) throws NativeIoException {
        List<Named> out = new ArrayList<>();
        String pidText = env.get("LISTEN_PID");
        String count = env.get("LISTEN_FDS");
        if (pidText == null || count == null) {
            return out;
        }
        int n;
        try {
            if (Long.parseLong(pidText.trim()) != pid) {
                return out;
            }
            n = Integer.parseInt(count.trim());
        } catch (NumberFormatException e) {
            return out;
        }
        String[] names = env.getOrDefault("LISTEN_FDNAMES", "").isEmpty() ? new String[0]
                : env.get("LISTEN_FDNAMES").split(":", -1);
        // after a crash systemd may hand back tens of thousands: one close_range(2) for them all
        // (its last fd checked open: a LISTEN_FDS past the fds there fails here, as fcntl did per fd)
        boolean cloexec = !adopt || n <= 0 || Native.cloexecRange(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + n - 1)
                && Native.fcntl(SD_LISTEN_FDS_START + n - 1, Native.F_GETFD, 0) >= 0;
        for (int i = 0; i < n; i++) {
            int fd = SD_LISTEN_FDS_START + i;
            if (!cloexec) {
                Native.fcntl(fd, Native.F_SETFD, Native.FD_CLOEXEC);
            }
            out.add(new Named(adopt ? Fd.adopt(fd) : null, i < names.length ? names[i] : "unknown"));
        }
        return out;
    }
}
