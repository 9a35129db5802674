package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import com.google.protobuf.ByteString;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.TimeUnit;
import warren.control.v1.EndReason;
import warren.daemon.testing.Streams;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;
import warren.splicer.client.SplicerClient;

/** Loopback TCP pairs relayed through a Splicer (any process) and checked by SHA-256. */
final class Pairs {
    private Pairs() {}

    /** One pair through Splicer: {@code data} from c1 to c2, then EOF both ways; checks the hash and the answer. */
    static void relayOne(SplicerClient sc, Fd listener, int n, byte[] data, ExecutorService io) throws Exception {
        InetSocketAddress at = TcpSockets.localAddress(listener);
        Fd[] fds = new Fd[4];
        synchronized (listener) { // each connect with its own accept
            fds[0] = TcpSockets.connect(at);
            fds[1] = TcpSockets.accept(listener);
            fds[2] = TcpSockets.connect(at);
            fds[3] = TcpSockets.accept(listener);
        }
        try (Fd c1 = fds[0]; Fd a = fds[1]; Fd b = fds[2]; Fd c2 = fds[3]) {
            CompletableFuture<Long> accepted = new CompletableFuture<>();
            CompletableFuture<SplicerClient.Result> done = sc.splice(a, b, null, ByteString.copyFromUtf8("pair-" + n),
                    accepted::complete);
            accepted.get(20, TimeUnit.SECONDS);
            a.close();
            b.close();
            CompletableFuture<byte[]> read = CompletableFuture.supplyAsync(() -> Streams.readAllSha256(c2.get()), io);
            Streams.writeAll(c1.get(), data);
            Native.shutdown(c1.get(), Native.SHUT_WR);
            assertArrayEquals(Streams.sha256(data), read.get(20, TimeUnit.SECONDS), "pair " + n + ": bytes relayed intact");
            Native.shutdown(c2.get(), Native.SHUT_WR);
            try (SplicerClient.Result r = done.get(20, TimeUnit.SECONDS)) {
                assertEquals(EndReason.BOTH_EOF, r.spliced().getReason(), "pair " + n);
                assertEquals(data.length, r.spliced().getBytesAToB());
            }
        }
    }

    /** {@code pairs} pairs, {@code parallel} at a time; returns the slowest pair's milliseconds. */
    static long relayMany(Path control, int pairs, int parallel, byte[] data, ExecutorService io) throws Exception {
        long slowest = 0;
        try (SplicerClient sc = SplicerClient.connect(control);
                Fd listener = TcpSockets.listen(new InetSocketAddress("127.0.0.1", 0), 1024)) {
            for (int i = 0; i < pairs; i += parallel) {
                List<CompletableFuture<Long>> round = new ArrayList<>();
                for (int j = i; j < Math.min(pairs, i + parallel); j++) {
                    int n = j;
                    round.add(CompletableFuture.supplyAsync(() -> {
                        long t0 = System.nanoTime();
                        try {
                            relayOne(sc, listener, n, data, io);
                            return (System.nanoTime() - t0) / 1_000_000;
                        } catch (Exception e) {
                            throw new IllegalStateException(e);
                        }
                    }, io));
                }
                for (CompletableFuture<Long> f : round) {
                    slowest = Math.max(slowest, f.get(60, TimeUnit.SECONDS));
                }
            }
        }
        return slowest;
    }
}
