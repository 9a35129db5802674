package warren.soak;

import com.google.protobuf.ByteString;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import warren.control.v1.EndReason;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.Streams;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;

/**
 * TCP pairs through Splicer, as a front proxy makes them: client c1 -> a (the proxy's accepted
 * socket), b (its upstream) -> c2; Splice(a, b) on the proxy's one control connection, then c1
 * streams a flow's bytes (paced, 16 KiB every 60 ms) that c2 hashes, both sides shut, and the
 * Spliced answer must bring back both sockets with BOTH_EOF. Request ids are unique; a second
 * answer to one would arrive unmatched and is a failure.
 */
final class SplicerLoad extends Load {
    static final int PAIRS = 6;
    private static final byte[] EMPTY_SHA = Streams.sha256(new byte[0]);
    private final Path sock;
    private final ControlClient proxy;
    private final AtomicLong ids = new AtomicLong(1000);
    private final AtomicLong lost = new AtomicLong();

    SplicerLoad(Path sock, Ledger ledger, long seed) throws Exception {
        super("splicer", ledger, seed);
        this.sock = sock;
        this.proxy = ControlClient.connect(sock);
        proxy.onUnmatched(r -> ledger.fail("splicer: an answer to no request in flight (answered twice?): " + r));
    }

    @Override
    void warmUp() throws Exception {
        String out = flow(0, true);
        if (!out.equals("ok")) {
            throw new IllegalStateException("the warm-up pair: " + out);
        }
    }

    @Override
    void start() {
        workers("tcp", PAIRS, n -> flow(n, true));
    }

    /** The four sockets of a pair: {c1, a, b, c2}. */
    private static Fd[] pair() throws Exception {
        try (Fd l = TcpSockets.listen(new InetSocketAddress("127.0.0.1", 0), 4)) {
            InetSocketAddress at = TcpSockets.localAddress(l);
            Fd c1 = TcpSockets.connect(at);
            Fd a = TcpSockets.accept(l);
            Fd b = TcpSockets.connect(at);
            Fd c2 = TcpSockets.accept(l);
            return new Fd[] {c1, a, b, c2};
        }
    }

    private Request.Builder splice(long id, String meta) {
        return Request.newBuilder().setId(id).setMetadata(ByteString.copyFromUtf8(meta))
                .setSplice(Splice.newBuilder().setFdA(0).setFdB(1));
    }

    private String flow(long n, boolean paced) throws Exception {
        byte[] data = data(n);
        Fd[] p = pair();
        try (Fd c1 = p[0]; Fd c2 = p[3]) {
            long id = ids.incrementAndGet();
            long sent = System.nanoTime();
            CompletableFuture<Response> accepted = new CompletableFuture<>();
            CompletableFuture<Reply> answer;
            try (Fd a = p[1]; Fd b = p[2]) {
                answer = proxy.call(splice(id, "soak-" + n), List.of(a, b), accepted::complete);
            }
            try {
                CompletableFuture.anyOf(accepted, answer).get(30, TimeUnit.SECONDS);
            } catch (TimeoutException e) {
                if (ledger.killedDuring(daemon, sent, System.nanoTime())) {
                    lost.incrementAndGet();
                    return "request lost at kill -9 (by design)";
                }
                throw new IllegalStateException("request " + id + ": no answer in 30 s");
            }
            if (!accepted.isDone()) {
                try (Reply r = answer.get()) {
                    Response resp = r.response();
                    if (resp.hasError() && resp.getError().getCode() == Error.Code.RESOURCE_EXHAUSTED
                            && ledger.burstDuring(daemon, sent, System.nanoTime())) {
                        return "refused during a burst (RESOURCE_EXHAUSTED)";
                    }
                    throw new IllegalStateException("request " + id + " refused: " + resp);
                }
            }
            relay(c1, c2, data, paced);
            try (Reply r = answer.get(60, TimeUnit.SECONDS)) {
                Response resp = r.response();
                if (resp.getId() != id || !resp.hasSpliced() || resp.getSpliced().getReason() != EndReason.BOTH_EOF
                        || r.fdCount() != 2) {
                    throw new IllegalStateException("request " + id + ": answered " + resp + " with " + r.fdCount() + " fds");
                }
                r.takeFd(0).close();
                r.takeFd(1).close();
                if (resp.getSpliced().getCountsPartial()) {
                    return "ok (counts partial: recovered after kill -9)";
                }
                if (resp.getSpliced().getBytesAToB() != data.length) {
                    throw new IllegalStateException("request " + id + ": counted " + resp.getSpliced().getBytesAToB()
                            + " bytes a->b, sent " + data.length);
                }
                return "ok";
            }
        }
    }

    /** c1 -> c2: every byte hashed; then c2's side shut, c1 sees end of file and nothing else. */
    private void relay(Fd c1, Fd c2, byte[] data, boolean paced) throws Exception {
        Future<?> writer = io.submit(() -> {
            if (paced) {
                Streams.writePaced(c1.get(), data, 16 << 10, 60);
            } else {
                Streams.writeAll(c1.get(), data);
            }
            Native.shutdown(c1.get(), Native.SHUT_WR);
            return null;
        });
        Future<byte[]> reader = io.submit(() -> Streams.readAllSha256(c2.get()));
        byte[] got;
        try {
            got = reader.get(120, TimeUnit.SECONDS);
            writer.get(10, TimeUnit.SECONDS);
        } catch (TimeoutException e) {
            Native.shutdown(c1.get(), Native.SHUT_RDWR);
            Native.shutdown(c2.get(), Native.SHUT_RDWR);
            throw new IllegalStateException("a pair's stream did not end in 120 s");
        }
        if (!Arrays.equals(Streams.sha256(data), got)) {
            throw new IllegalStateException("SHA-256 differs: " + data.length + " bytes sent");
        }
        Native.shutdown(c2.get(), Native.SHUT_WR);
        Future<byte[]> back = io.submit(() -> Streams.readAllSha256(c1.get()));
        if (!Arrays.equals(EMPTY_SHA, back.get(60, TimeUnit.SECONDS))) {
            throw new IllegalStateException("bytes came back on a one-way pair");
        }
    }

    /**
     * A front proxy that asks for a pair and goes away before the answer: a second control
     * connection sends Splice, waits for Accepted and closes. The pair must relay every byte all
     * the same (docs: "a client that goes away leaves its tasks running"); its answer is dropped.
     */
    String disconnect(long n) throws Exception {
        byte[] data = data(n);
        Fd[] p = pair();
        try (Fd c1 = p[0]; Fd c2 = p[3]) {
            try (ControlClient gone = ControlClient.connect(sock)) {
                CompletableFuture<Response> accepted = new CompletableFuture<>();
                CompletableFuture<Reply> answer;
                try (Fd a = p[1]; Fd b = p[2]) {
                    answer = gone.call(splice(1, "gone"), List.of(a, b), accepted::complete);
                }
                CompletableFuture.anyOf(accepted, answer).get(30, TimeUnit.SECONDS);
                if (!accepted.isDone()) {
                    try (Reply r = answer.get()) {
                        throw new IllegalStateException("refused: " + r.response());
                    }
                }
            } // the requester leaves with its request in flight
            relay(c1, c2, data, false);
            return "requester gone after Accepted; its pair relayed " + data.length + " bytes, SHA-256 equal";
        }
    }

    @Override
    String burst() throws Exception {
        long h = ledger.openBurst(daemon);
        List<Fd> ends = new ArrayList<>();
        List<CompletableFuture<Reply>> answers = new ArrayList<>();
        String refusal = null;
        try (ControlClient c = ControlClient.connect(sock)) {
            for (int i = 0; i < 4 * Soak.SPLICER_MAX_PAIRS && refusal == null; i++) {
                Fd[] p = pair();
                CompletableFuture<Response> accepted = new CompletableFuture<>();
                CompletableFuture<Reply> answer;
                try (Fd a = p[1]; Fd b = p[2]) {
                    answer = c.call(splice(i + 1, "burst"), List.of(a, b), accepted::complete);
                }
                CompletableFuture.anyOf(accepted, answer).get(30, TimeUnit.SECONDS);
                if (accepted.isDone()) {
                    ends.add(p[0]);
                    ends.add(p[3]);
                    answers.add(answer);
                } else {
                    p[0].close();
                    p[3].close();
                    try (Reply r = answer.get()) {
                        refusal = r.response().getError().getCode() + ": " + r.response().getError().getMessage();
                        if (r.response().getError().getCode() != Error.Code.RESOURCE_EXHAUSTED) {
                            ledger.fail("splicer burst: refused with " + r.response());
                        }
                    }
                }
            }
            for (Fd e : ends) {
                Native.shutdown(e.get(), Native.SHUT_WR);
            }
            for (CompletableFuture<Reply> a : answers) {
                try (Reply r = a.get(60, TimeUnit.SECONDS)) {
                    if (!r.response().hasSpliced() || r.fdCount() != 2) {
                        ledger.fail("splicer burst: a pair ended with " + r.response());
                    }
                    for (int i = 0; i < r.fdCount(); i++) {
                        r.takeFd(i).close();
                    }
                }
            }
        } finally {
            Fd.closeAll(ends);
            ledger.closeBurst(h);
        }
        if (refusal == null) {
            ledger.fail("splicer burst: " + answers.size() + " pairs accepted and never refused");
            return "never refused";
        }
        return answers.size() + " pairs accepted (" + SplicerLoad.PAIRS + " soak pairs beside), then " + refusal;
    }

    @Override
    void finish() throws Exception {
        stop();
        int open = proxy.inFlight();
        if (open != lost.get()) {
            ledger.fail("splicer: " + open + " requests still without an answer, " + lost.get() + " lost at kill -9");
        }
        proxy.close();
    }
}
