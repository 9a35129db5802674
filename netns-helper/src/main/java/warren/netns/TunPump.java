package warren.netns;

import java.net.InetAddress;
import java.util.List;
import jnr.ffi.Pointer;
import warren.fdpass.Fd;
import warren.fdpass.epoll.Epoll;
import warren.fdpass.libc.Native;
import warren.linux.net.Netns;
import warren.linux.net.Rtnetlink;
import warren.linux.net.Tun;

/**
 * A client namespace's default route as one packet socket: a TUN device (addresses given, default
 * routes to it) whose every packet is sent, one per message, on a socket, and whose socket messages
 * are written back into the TUN. What a front proxy receiving raw IP does for one client (Fish's
 * tests and benchmark use it). One thread; closing stops it and closes both fds.
 */
public final class TunPump implements AutoCloseable {
    private final Fd tun;
    private final Fd socket;
    private final Thread thread;
    private volatile boolean running = true;

    /**
     * @param namespace a path such as /run/netns/NAME
     * @param addresses "IP/prefix" strings for the TUN; a default route per family goes to it
     */
    public TunPump(String namespace, String tunName, int mtu, List<String> addresses, Fd socket) throws Exception {
        this.socket = socket;
        try { // like Fish's end: room for a burst (a datagram pair queues against the sender's buffer)
            Native.setsockoptInt(socket.get(), Native.SOL_SOCKET, 32 /* SO_SNDBUFFORCE */, 4 << 20);
        } catch (warren.fdpass.libc.NativeIoException e) {
            // not root: the default buffer
        }
        this.tun = Netns.call(namespace, () -> {
            Fd t = Tun.open(tunName, true);
            int idx = Tun.index(tunName);
            try (Rtnetlink rt = new Rtnetlink()) {
                rt.linkUp(idx, mtu, 10_000);
                boolean v4 = false;
                boolean v6 = false;
                for (String a : addresses) {
                    String[] p = a.split("/");
                    InetAddress ip = InetAddress.getByName(p[0]);
                    rt.addAddress(idx, ip, Integer.parseInt(p[1]));
                    v4 |= ip.getAddress().length == 4;
                    v6 |= ip.getAddress().length == 16;
                }
                if (v4) {
                    rt.addRoute(InetAddress.getByName("0.0.0.0"), 0, idx);
                }
                if (v6) {
                    rt.addRoute(InetAddress.getByName("::"), 0, idx);
                }
            }
            return t;
        });
        thread = new Thread(this::run, "tun-pump-" + tunName);
        thread.setDaemon(true);
        thread.start();
    }

    private void run() {
        Pointer p = Native.allocate(65600);
        try (Epoll ep = new Epoll(8)) {
            ep.add(tun.get(), Native.EPOLLIN, 1);
            ep.add(socket.get(), Native.EPOLLIN, 2);
            while (running) {
                int n = ep.await(100);
                for (int i = 0; i < n; i++) {
                    long len;
                    if (ep.data(i) == 1) {
                        while ((len = Native.read(tun.get(), p, 65600)) > 0) {
                            Native.send(socket.get(), p, len, Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL);
                        }
                    } else if (ep.data(i) == 2) {
                        while ((len = Native.recv(socket.get(), p, 65600, Native.MSG_DONTWAIT)) > 0) {
                            Native.write(tun.get(), p, len);
                        }
                    }
                }
            }
        } catch (Exception e) {
            if (running) {
                e.printStackTrace();
            }
        }
    }

    @Override
    public void close() throws InterruptedException {
        running = false;
        thread.join(5000);
        tun.close();
        socket.close();
    }
}
