package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import warren.control.v1.EndReason;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;

/**
 * N idle loopback TCP pairs spliced through a Splicer on one control connection (request ids 1..N),
 * for the upgrade tests: each pair's far ends (c1, c2) stay here, its answer is awaited at the end.
 * {@link #oneByteEachWay} checks every pair relays now; {@link #endAndCheck} shuts them and expects
 * one BOTH_EOF answer per pair, with both sockets and the one byte a-&gt;b.
 */
final class IdlePairs implements AutoCloseable {
    private final List<Fd> ends = new ArrayList<>(); // c1, c2 of pair 0, of pair 1, ...
    private final List<CompletableFuture<Reply>> answers = new ArrayList<>();
    private final java.util.BitSet ended = new java.util.BitSet();

    /** Opens {@code n} pairs on {@code tcp} (a listener of this process) and splices each, accepted before the next. */
    static IdlePairs open(ControlClient proxy, Fd tcp, int n) throws Exception {
        return open(proxy, tcp, n, 1);
    }

    /** The same with request ids from {@code firstId} (beside other pairs on the same connection). */
    static IdlePairs open(ControlClient proxy, Fd tcp, int n, int firstId) throws Exception {
        IdlePairs p = new IdlePairs();
        try {
            java.net.InetSocketAddress at = TcpSockets.localAddress(tcp);
            for (int i = 0; i < n; i++) {
                p.ends.add(TcpSockets.connect(at));
                try (Fd a = TcpSockets.accept(tcp); Fd b = TcpSockets.connect(at)) {
                    p.ends.add(TcpSockets.accept(tcp));
                    CompletableFuture<Response> accepted = new CompletableFuture<>();
                    p.answers.add(proxy.call(Request.newBuilder().setId(firstId + i).setSplice(Splice.newBuilder().setFdA(0)
                            .setFdB(1)), List.of(a, b), accepted::complete));
                    accepted.get(10, TimeUnit.SECONDS);
                }
            }
            return p;
        } catch (Exception | Error e) {
            p.close();
            throw e;
        }
    }

    /** One byte each way through every pair (the byte is the pair's number). */
    void oneByteEachWay() throws Exception {
        jnr.ffi.Pointer p = Native.allocate(16);
        for (int i = 0; i < answers.size(); i++) {
            if (ended.get(i)) {
                continue;
            }
            int c1 = ends.get(2 * i).get();
            int c2 = ends.get(2 * i + 1).get();
            p.putByte(0, (byte) i);
            assertEquals(1, Native.write(c1, p, 1));
            assertEquals(1, Native.read(c2, p, 1));
            assertEquals((byte) i, p.getByte(0));
            assertEquals(1, Native.write(c2, p, 1));
            assertEquals(1, Native.read(c1, p, 1));
        }
    }

    /** Shuts every far end; each pair is answered BOTH_EOF with its two sockets, 1 byte counted a-&gt;b. */
    void endAndCheck() throws Exception {
        for (int i = 0; i < answers.size(); i++) {
            if (!ended.get(i)) {
                Native.shutdown(ends.get(2 * i).get(), Native.SHUT_WR);
                Native.shutdown(ends.get(2 * i + 1).get(), Native.SHUT_WR);
            }
        }
        for (int i = 0; i < answers.size(); i++) {
            if (!ended.get(i)) {
                check(i, 1);
            }
        }
    }

    /** Ends pair {@code i} alone (before any byte went through it): answered BOTH_EOF with its two sockets. */
    void end(int i) throws Exception {
        Native.shutdown(ends.get(2 * i).get(), Native.SHUT_WR);
        Native.shutdown(ends.get(2 * i + 1).get(), Native.SHUT_WR);
        check(i, 0);
        ended.set(i);
    }

    private void check(int i, long bytesAToB) throws Exception {
        try (Reply rep = answers.get(i).get(60, TimeUnit.SECONDS)) {
            assertEquals(EndReason.BOTH_EOF, rep.response().getSpliced().getReason(), rep.response().toString());
            assertEquals(bytesAToB, rep.response().getSpliced().getBytesAToB());
            rep.takeFd(0).close();
            rep.takeFd(1).close();
        }
    }

    @Override
    public void close() {
        Fd.closeAll(ends);
    }
}
