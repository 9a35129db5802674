package warren.fdpass.net;

import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * A socket's SO_LINGER ({@code struct linger {int l_onoff; int l_linger;}}, socket(7)).
 *
 * <p>{@link #RESET} ({on, 0 s}) makes the last close(2) of a TCP socket abort the connection with
 * a RST instead of a FIN. A daemon holds the sockets it relays that way, so if it dies (kill -9,
 * a crash) the peers see a reset, not a clean end of a stream cut short; it restores the
 * original linger when it hands a socket back. The option belongs to the socket, not to the fd:
 * every process holding the socket (a successor after an upgrade, systemd's fd store) sees it,
 * and only the last close sends the RST.
 *
 * <p>Exact restore: the kernel keeps l_linger only when it is set with l_onoff = 1 (with
 * l_onoff = 0 it just clears the flag), so an original {off, N s} with N != 0 is put back with two
 * calls, {on, N} then {off, N}.
 */
public record Linger(boolean on, int seconds) {
    public static final Linger RESET = new Linger(true, 0);

    public static Linger of(int fd) throws NativeIoException {
        int[] v = new int[2];
        Native.getsockoptInts(fd, Native.SOL_SOCKET, Native.SO_LINGER, v);
        return new Linger(v[0] != 0, v[1]);
    }

    /** Sets this linger on {@code fd}. */
    public void applyTo(int fd) throws NativeIoException {
        if (!on && seconds != 0) {
            set(fd, 1, seconds);
        }
        set(fd, on ? 1 : 0, seconds);
    }

    /** {@link #applyTo} for a socket being handed back or closed: errors ignored (a reset socket is still a socket). */
    public void applyQuietly(int fd) {
        try {
            applyTo(fd);
        } catch (NativeIoException e) {
            // nothing to restore on an fd that is no socket any more
        }
    }

    private static void set(int fd, int onoff, int secs) throws NativeIoException {
        Native.setsockoptInts(fd, Native.SOL_SOCKET, Native.SO_LINGER, new int[] {onoff, secs}, "SO_LINGER");
    }

    /** The handoff encoding (relay.proto). */
    public warren.handoff.v1.Linger toProto() {
        return warren.handoff.v1.Linger.newBuilder().setOn(on).setSeconds(seconds).build();
    }

    public static Linger fromProto(warren.handoff.v1.Linger l) {
        return l.getOn() && l.getSeconds() == 0 ? RESET : new Linger(l.getOn(), l.getSeconds());
    }

    @Override
    public String toString() {
        return on ? "{on, " + seconds + " s}" : "{off, " + seconds + " s}";
    }
}
