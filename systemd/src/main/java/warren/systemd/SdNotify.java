package warren.systemd;

import java.nio.charset.StandardCharsets;
import jnr.ffi.Pointer;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * sd_notify(3) without libsystemd: datagrams such as "READY=1", "STOPPING=1", "STATUS=...",
 * "WATCHDOG=1", "MAINPID=N" to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or an abstract
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
    public synchronized boolean notify(String state) {
        if (fd == null) {
            return false;
        }
        byte[] msg = state.getBytes(StandardCharsets.UTF_8);
        Pointer buf = Native.allocate(Math.max(1, msg.length));
        buf.put(0, msg, 0, msg.length);
        Pointer sa = Native.allocate(address.length);
        sa.put(0, address, 0, address.length);
        return Native.LIBC.sendto(fd.get(), buf, msg.length, Native.MSG_NOSIGNAL, sa, address.length) == msg.length;
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
