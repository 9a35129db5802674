package warren.splicer;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.util.List;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.fdpass.net.TcpSockets;

/**
 * One test topology over loopback TCP: client c connects to the front listener (accepted as a),
 * b connects to the upstream listener (accepted as u). a and b go to Splicer; the test talks
 * through c and u.
 */
final class Relayed implements AutoCloseable {
    final Fd c;
    final Fd a;
    final Fd b;
    final Fd u;

    private Relayed(Fd c, Fd a, Fd b, Fd u) {
        this.c = c;
        this.a = a;
        this.b = b;
        this.u = u;
    }

    /** Two listeners on 127.0.0.1 (front, upstream). */
    static Fd[] listeners() throws NativeIoException {
        InetSocketAddress any = new InetSocketAddress(InetAddress.getLoopbackAddress(), 0);
        return new Fd[] {TcpSockets.listen(any, 4096), TcpSockets.listen(any, 4096)};
    }

    static Relayed open(Fd[] listeners) throws NativeIoException {
        Fd c = TcpSockets.connect(TcpSockets.localAddress(listeners[0]));
        Fd a = TcpSockets.accept(listeners[0]);
        Fd b = TcpSockets.connect(TcpSockets.localAddress(listeners[1]));
        Fd u = TcpSockets.accept(listeners[1]);
        return new Relayed(c, a, b, u);
    }

    /** The proxy's copies of a and b, once handed over. */
    void closeHandedOver() {
        a.close();
        b.close();
    }

    static long inode(Fd fd) throws NativeIoException {
        return Native.fstat(fd.get())[3];
    }

    @Override
    public void close() {
        Fd.closeAll(List.of(c, a, b, u));
    }
}
