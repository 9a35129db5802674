package warren.benchmarks;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import warren.fdpass.Fd;
import warren.fdpass.net.TcpSockets;
import warren.splicer.client.SplicerClient;

/**
 * A minimal front proxy for benchmarks: accepts on {@code --listen PORT} (127.0.0.1), connects to
 * {@code --upstream PORT}, hands both sockets to Splicer ({@code --control PATH}) and closes its
 * own copies; closes the sockets Splicer hands back. Prints "ready" once listening.
 */
public final class SpliceProxy {
    private SpliceProxy() {}

    public static void main(String[] args) throws Exception {
        int listen = 0;
        int upstream = 0;
        Path control = null;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--listen": listen = Integer.parseInt(args[++i]); break;
                case "--upstream": upstream = Integer.parseInt(args[++i]); break;
                case "--control": control = Path.of(args[++i]); break;
                default:
                    System.err.println("splice-proxy: unknown option '" + args[i] + "'");
                    System.exit(2);
            }
        }
        InetAddress lo = InetAddress.getLoopbackAddress();
        InetSocketAddress up = new InetSocketAddress(lo, upstream);
        try (Fd l = TcpSockets.listen(new InetSocketAddress(lo, listen), 4096);
                SplicerClient client = SplicerClient.connect(control)) {
            System.out.println("ready");
            System.out.flush();
            while (true) {
                try (Fd c = TcpSockets.accept(l); Fd u = TcpSockets.connect(up)) {
                    client.splice(c, u, null, null, null).whenComplete((res, err) -> {
                        if (res != null) {
                            res.close();
                        } else if (err != null) {
                            System.err.println("splice-proxy: " + err);
                        }
                    });
                }
            }
        }
    }
}
