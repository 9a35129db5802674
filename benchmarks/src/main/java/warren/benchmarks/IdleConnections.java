package warren.benchmarks;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import warren.fdpass.Fd;
import warren.fdpass.epoll.Epoll;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;

/**
 * Holds many idle TCP connections for the memory benchmark. {@code --listen PORT}: accept every
 * connection and hold it until its peer closes, then close it too. {@code --connect PORT --count N}:
 * open N connections to 127.0.0.1:PORT, print "ready N", then hold them until killed. With
 * {@code --rounds R} it first opens and closes N connections R times (a warm-up that starts R x N
 * pairs while never holding more than N: the relay's one-time costs, JIT compilation above all,
 * are paid without leaving pools sized for the load measured next), then prints "ready 0" and
 * holds nothing.
 */
public final class IdleConnections {
    private IdleConnections() {}

    public static void main(String[] args) throws Exception {
        int listen = -1;
        int connect = -1;
        int count = 0;
        int rounds = 0;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--listen": listen = Integer.parseInt(args[++i]); break;
                case "--connect": connect = Integer.parseInt(args[++i]); break;
                case "--count": count = Integer.parseInt(args[++i]); break;
                case "--rounds": rounds = Integer.parseInt(args[++i]); break;
                default:
                    System.err.println("idle-connections: unknown option '" + args[i] + "'");
                    System.exit(2);
            }
        }
        InetAddress lo = InetAddress.getLoopbackAddress();
        if (listen >= 0) {
            serve(new InetSocketAddress(lo, listen));
            return;
        }
        List<Fd> held = new ArrayList<>();
        if (rounds > 0) {
            for (int r = 0; r < rounds; r++) {
                for (int i = 0; i < count; i++) {
                    held.add(TcpSockets.connect(new InetSocketAddress(lo, connect)));
                }
                for (Fd c : held) {
                    c.close();
                }
                held.clear();
                Thread.sleep(200); // let the relay end the closed pairs before the next round opens more
            }
            System.out.println("ready 0");
            System.out.flush();
            Thread.sleep(Long.MAX_VALUE);
        }
        for (int i = 0; i < count; i++) {
            held.add(TcpSockets.connect(new InetSocketAddress(lo, connect)));
        }
        System.out.println("ready " + held.size());
        System.out.flush();
        Thread.sleep(Long.MAX_VALUE);
    }

    private static void serve(InetSocketAddress at) throws Exception {
        Map<Integer, Fd> held = new HashMap<>();
        try (Fd l = TcpSockets.listen(at, 4096); Epoll ep = new Epoll(1024)) {
            ep.add(l.get(), Native.EPOLLIN, -2);
            System.out.println("ready");
            System.out.flush();
            while (true) {
                int n = ep.await(-1);
                for (int i = 0; i < n; i++) {
                    long data = ep.data(i);
                    if (data == -2) {
                        Fd c = TcpSockets.accept(l);
                        held.put(c.get(), c);
                        ep.add(c.get(), Native.EPOLLRDHUP, c.get());
                    } else if (data >= 0) {
                        Fd c = held.remove((int) data);
                        if (c != null) {
                            ep.remove(c.get());
                            c.close();
                        }
                    }
                }
            }
        }
    }
}
