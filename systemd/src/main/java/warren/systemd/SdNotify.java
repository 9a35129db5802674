package warren.systemd;

import java.nio.charset.StandardCharsets;
import java.util.List;
import jnr.ffi.Pointer;
import warren.fdpass.Fd;
import warren.fdpass.libc.Layout;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * sd_notify(3) without libsystemd: datagrams such as "READY=1", "STOPPING=1", "STATUS=...",
 * "WATCHDOG=1", "MAINPID=N", "RELOADING=1", "FDSTORE=1" (with the fds attached) to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or an abstract
 * name written with a leading '@'). No $NOTIFY_SOCKET means not under systemd: every call is a
 * no-op, the normal case outside systemd.
 */
public final class SdNotify implements AutoCloseable {
    private static final SdNotify NONE = new SdNotify(null, null);

    private final Fd fd;
    private final byte[] address;

    private SdNotify(Fd fd, byte[] address) {
        this.fd = fd;
        this.address = address;
    }

    /** From $NOTIFY_SOCKET, or the no-op notifier. */
    public static SdNotify fromEnvironment() {
        return of(System.getenv("NOTIFY_SOCKET"));
    }

    /** For a given socket name (path or "@abstract"); null or empty = no-op. */
    public static SdNotify of(String socket) {
        if (socket == null || socket.isEmpty()) {
            return NONE;
        }
        try {
            byte[] name = socket.getBytes(StandardCharsets.UTF_8);
            byte[] addr = new byte[2 + name.length + (socket.startsWith("@") ? 0 : 1)];
            addr[0] = (byte) Native.AF_UNIX;
            System.arraycopy(name, 0, addr, 2, name.length);
            if (socket.startsWith("@")) {
                addr[2] = 0; // abstract namespace: a leading NUL, no terminator
            }
            Fd fd = Fd.adopt(Native.socket(Native.AF_UNIX, Native.SOCK_DGRAM | Native.SOCK_CLOEXEC, 0));
            return new SdNotify(fd, addr);
        } catch (NativeIoException e) {
            return NONE;
        }
    }

    public boolean enabled() {
        return fd != null;
    }

    /** Sends one state string (lines "KEY=VALUE"); false if not under systemd or it failed. */
    public boolean notify(String state) {
        return notifyWithFds(state, List.of());
    }

    /**
     * Sends a state with fds attached (SCM_RIGHTS), as FDSTORE=1 needs. The fds are borrowed:
     * systemd keeps its own copies. At most {@link Native#SCM_MAX_FD} per message.
     */
    public synchronized boolean notifyWithFds(String state, List<Fd> fds) {
        if (fd == null) {
            return false;
        }
        if (fds.size() > Native.SCM_MAX_FD) {
            throw new IllegalArgumentException(fds.size() + " fds in one notification; at most " + Native.SCM_MAX_FD);
        }
        byte[] msg = state.getBytes(StandardCharsets.UTF_8);
        Pointer buf = Native.allocate(Math.max(1, msg.length));
        buf.put(0, msg, 0, msg.length);
        Pointer sa = Native.allocate(address.length);
        sa.put(0, address, 0, address.length);
        Pointer iov = Native.allocate(Layout.IOVEC_SIZE);
        iov.putAddress(Layout.IOV_BASE, buf.address());
        iov.putLong(Layout.IOV_LEN, msg.length);
        Pointer hdr = Native.allocate(Layout.MSGHDR_SIZE);
        hdr.putAddress(Layout.MSG_NAME, sa.address());
        hdr.putInt(Layout.MSG_NAMELEN, address.length);
        hdr.putAddress(Layout.MSG_IOV, iov.address());
        hdr.putLong(Layout.MSG_IOVLEN, 1);
        Pointer control = null;
        if (!fds.isEmpty()) {
            int space = Layout.cmsgSpace(fds.size() * 4);
            control = Native.allocate(space);
            control.putLong(Layout.CMSG_LEN_OFF, Layout.cmsgLen(fds.size() * 4));
            control.putInt(Layout.CMSG_LEVEL, Native.SOL_SOCKET);
            control.putInt(Layout.CMSG_TYPE, Native.SCM_RIGHTS);
            for (int i = 0; i < fds.size(); i++) {
                control.putInt(Layout.CMSG_HDR_SIZE + 4L * i, fds.get(i).get());
            }
            hdr.putAddress(Layout.MSG_CONTROL, control.address());
            hdr.putLong(Layout.MSG_CONTROLLEN, space);
        }
        try {
            return Native.sendmsg(fd.get(), hdr, Native.MSG_NOSIGNAL) == msg.length;
        } catch (NativeIoException e) {
            return false; // as before: a notification systemd did not take is reported, not thrown
        } finally {
            // hdr and iov hold these only as addresses: their memory (freed when unreachable) must
            // outlive the call, or the kernel may read freed memory
            java.lang.ref.Reference.reachabilityFence(buf);
            java.lang.ref.Reference.reachabilityFence(sa);
            java.lang.ref.Reference.reachabilityFence(iov);
            java.lang.ref.Reference.reachabilityFence(control);
        }
    }

    /**
     * Puts fds into the service's fd store under {@code name} (FDSTORE=1, FDNAME=); they come back
     * in LISTEN_FDS/LISTEN_FDNAMES when the service restarts, e.g. after a crash. Needs
     * FileDescriptorStoreMax= in the unit. Names are at most 255 printable characters, no ':'.
     *
     * <p>With FDPOLL=0: by default systemd polls each stored fd and drops it on EPOLLHUP or
     * EPOLLERR, so a relay pair's socket that its peer reset, or that reached the end of both its
     * directions a moment before the pair's own end, left the store alone, and a crash just then
     * brought the pair back without it (dropped as unusable, its request never answered: the
     * soak's "p1652: unusable (fd 0 of 6 missing)"). Every writer here removes its entries itself
     * (FDSTOREREMOVE) when their task ends, and a recovery gets a dead socket back whole and ends
     * its task with the right answer.
     */
    public boolean fdStore(String name, List<Fd> fds) {
        checkFdName(name);
        return notifyWithFds("FDSTORE=1\nFDPOLL=0\nFDNAME=" + name, fds);
    }

    /** Removes every fd stored under {@code name} (FDSTOREREMOVE=1). */
    public boolean fdStoreRemove(String name) {
        checkFdName(name);
        return notify("FDSTOREREMOVE=1\nFDNAME=" + name);
    }

    /** RELOADING=1 with the CLOCK_MONOTONIC time systemd 253+ wants for Type=notify-reload. */
    public boolean reloading(String status) {
        return notify("RELOADING=1\nMONOTONIC_USEC=" + System.nanoTime() / 1000 + "\nSTATUS=" + status);
    }

    /**
     * MAINPID= and READY=1 in one datagram: after an upgrade's commit, the old process (and then
     * the new one) tells systemd that {@code pid} is the service's main process and serves. The
     * old process had sent RELOADING=1, and systemd 252 leaves a Type=notify unit "reloading" until
     * a READY=1; sent apart, by the new process once it got round to it, the unit was still
     * "reloading" when {@code warren upgrade} or a SIGHUP's new MAINPID was seen (the soak saw it 3
     * times in 10 minutes under load). In one datagram systemd applies both at once, and the old
     * process's barrier after it means the unit is active before the upgrade is answered.
     */
    public boolean mainPid(long pid, String status) {
        return notify("MAINPID=" + pid + "\nREADY=1\nSTATUS=" + status);
    }

    /**
     * BARRIER=1 (sd_notify_barrier): returns once systemd has processed every notification sent
     * before it, or after {@code timeoutMs}. An old process calls it after MAINPID=<successor> so
     * that its own exit is never seen before the new main pid. False if not under systemd or timed out.
     */
    public boolean barrier(long timeoutMs) {
        if (fd == null) {
            return false;
        }
        int[] p;
        try {
            p = Native.pipe2(Native.O_CLOEXEC);
        } catch (warren.fdpass.libc.NativeIoException e) {
            return false;
        }
        try (Fd r = Fd.adopt(p[0])) {
            try (Fd w = Fd.adopt(p[1])) {
                if (!notifyWithFds("BARRIER=1", List.of(w))) {
                    return false;
                }
            } // systemd closes its copy of the write end once it has got here: POLLHUP
            long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
            try {
                while (System.nanoTime() < deadline) {
                    if (Native.pollOne(r.get(), Native.POLLIN, (int) Math.max(1, (deadline - System.nanoTime()) / 1_000_000)) != 0) {
                        return true; // POLLHUP
                    }
                }
            } catch (warren.fdpass.libc.NativeIoException e) {
                return false;
            }
            return false;
        }
    }

    public boolean status(String status) {
        return notify("STATUS=" + status);
    }

    static void checkFdName(String name) {
        if (name.isEmpty() || name.length() > 255 || name.indexOf(':') >= 0
                || !name.chars().allMatch(c -> c > 0x20 && c < 0x7f)) {
            throw new IllegalArgumentException("fd store name " + name
                    + " must be 1-255 printable ASCII characters without ':' or spaces");
        }
    }

    public boolean ready(String status) {
        return notify("READY=1\nSTATUS=" + status);
    }

    public boolean stopping(String status) {
        return notify("STOPPING=1\nSTATUS=" + status);
    }

    public boolean watchdog() {
        return notify("WATCHDOG=1");
    }

    @Override
    public void close() {
        if (fd != null) {
            fd.close();
        }
    }
}
