package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.EndReason;
import warren.control.v1.Limits;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.FdCount;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpInfo;
import warren.fdpass.net.TcpSockets;
import warren.splicer.client.SplicerClient;

/** Splicer against real kernel TCP over loopback, with the daemon in-process. */
@Timeout(value = 300, unit = TimeUnit.SECONDS)
class SplicerTest {
    @TempDir
    Path dir;
    RunningDaemon daemon;
    SplicerClient client;
    Fd[] listeners;

    @BeforeEach
    void setUp() throws Exception {
        daemon = new RunningDaemon(Main.spec(), dir.resolve("splicer.sock"), "audit.path = " + dir.resolve("audit.jsonl"));
        client = SplicerClient.connect(daemon.control);
        listeners = Relayed.listeners();
    }

    @AfterEach
    void tearDown() throws Exception {
        client.close();
        daemon.close();
        Fd.closeAll(List.of(listeners));
    }

    private CompletableFuture<SplicerClient.Result> splice(Relayed r, Limits limits) throws Exception {
        CountDownLatch accepted = new CountDownLatch(1);
        CompletableFuture<SplicerClient.Result> f = client.splice(r.a, r.b, limits, ByteString.copyFromUtf8("t"),
                task -> accepted.countDown());
        assertTrue(accepted.await(10, TimeUnit.SECONDS) || f.isDone(), "accepted");
        r.closeHandedOver();
        return f;
    }

    /** Writes {@code total} seeded bytes to fd, returns their SHA-256. */
    private static byte[] send(Fd fd, long seed, long total, boolean shutdown) throws Exception {
        MessageDigest md = MessageDigest.getInstance("SHA-256");
        SplittableRandom rnd = new SplittableRandom(seed);
        byte[] buf = new byte[64 << 10];
        Pointer scratch = Native.allocate(buf.length);
        long sent = 0;
        while (sent < total) {
            int n = (int) Math.min(buf.length, total - sent);
            for (int i = 0; i < n; i += 8) {
                long v = rnd.nextLong();
                for (int k = 0; k < 8 && i + k < n; k++) {
                    buf[i + k] = (byte) (v >>> (8 * k));
                }
            }
            md.update(buf, 0, n);
            TcpSockets.writeFully(fd, scratch, buf, 0, n);
            sent += n;
        }
        if (shutdown) {
            TcpSockets.shutdownOutput(fd);
        }
        return md.digest();
    }

    /** Reads fd to EOF; returns {SHA-256, count}. */
    private static Object[] receive(Fd fd) throws Exception {
        MessageDigest md = MessageDigest.getInstance("SHA-256");
        byte[] buf = new byte[64 << 10];
        Pointer scratch = Native.allocate(buf.length);
        long total = 0;
        int n;
        while ((n = TcpSockets.read(fd, scratch, buf, 0, buf.length)) > 0) {
            md.update(buf, 0, n);
            total += n;
        }
        return new Object[] {md.digest(), total};
    }

    @Test
    void hundredMegabytesEachWayAtOnceArriveIntactAndTheOriginalSocketsComeBack() throws Exception {
        long size = 100L << 20;
        try (Relayed r = Relayed.open(listeners)) {
            long inoA = Relayed.inode(r.a);
            long inoB = Relayed.inode(r.b);
            var aLocal = TcpSockets.localAddress(r.a);
            var bLocal = TcpSockets.localAddress(r.b);
            CompletableFuture<SplicerClient.Result> f = splice(r, null);
            ExecutorService pool = Executors.newFixedThreadPool(4);
            try {
                Future<byte[]> up = pool.submit(() -> send(r.c, 1, size, true));
                Future<byte[]> down = pool.submit(() -> send(r.u, 2, size, true));
                Future<Object[]> atU = pool.submit(() -> receive(r.u));
                Future<Object[]> atC = pool.submit(() -> receive(r.c));
                assertArrayEquals(up.get(120, TimeUnit.SECONDS), (byte[]) atU.get(120, TimeUnit.SECONDS)[0]);
                assertArrayEquals(down.get(120, TimeUnit.SECONDS), (byte[]) atC.get(120, TimeUnit.SECONDS)[0]);
            } finally {
                pool.shutdownNow();
            }
            try (SplicerClient.Result res = f.get(30, TimeUnit.SECONDS)) {
                assertEquals(EndReason.BOTH_EOF, res.spliced().getReason(), res.spliced().toString());
                assertEquals(size, res.spliced().getBytesAToB());
                assertEquals(size, res.spliced().getBytesBToA());
                assertTrue(res.spliced().getAWriteShut() && res.spliced().getBWriteShut());
                assertEquals(ByteString.copyFromUtf8("t"), res.metadata());
                // the very same sockets: same inode, same local address, TCP_INFO readable; both
                // directions are shut, so the kernel has closed the connections (no peer any more)
                assertEquals(inoA, Relayed.inode(res.a()));
                assertEquals(inoB, Relayed.inode(res.b()));
                assertEquals(aLocal, TcpSockets.localAddress(res.a()));
                assertEquals(bLocal, TcpSockets.localAddress(res.b()));
                TcpInfo ti = TcpInfo.of(res.a().get());
                assertNotNull(ti);
                assertEquals(size + 1, ti.bytesReceived(), "a received the client's 100 MiB and its FIN");
                int flags = Native.fcntl(res.a().get(), Native.F_GETFL, 0);
                assertEquals(0, flags & Native.O_NONBLOCK, "file status flags restored");
            }
        }
    }

    @Test
    void halfCloseInEachDirectionKeepsTheOtherFlowing() throws Exception {
        for (int first = 0; first < 2; first++) {
            try (Relayed r = Relayed.open(listeners)) {
                CompletableFuture<SplicerClient.Result> f = splice(r, null);
                Fd closer = first == 0 ? r.c : r.u;
                Fd other = first == 0 ? r.u : r.c;
                byte[] h1 = send(closer, 3, 1 << 20, true);
                Object[] got = receive(other); // EOF arrives: the half-close was propagated
                assertArrayEquals(h1, (byte[]) got[0]);
                assertFalse(f.isDone(), "the other direction is still open");
                byte[] h2 = send(other, 4, 3 << 20, false); // the other direction keeps flowing
                Pointer scratch = Native.allocate(1 << 16);
                byte[] buf = new byte[1 << 16];
                MessageDigest md = MessageDigest.getInstance("SHA-256");
                long n = 0;
                while (n < 3 << 20) {
                    int k = TcpSockets.read(closer, scratch, buf, 0, buf.length);
                    md.update(buf, 0, k);
                    n += k;
                }
                assertArrayEquals(h2, md.digest());
                TcpSockets.shutdownOutput(other);
                try (SplicerClient.Result res = f.get(10, TimeUnit.SECONDS)) {
                    assertEquals(EndReason.BOTH_EOF, res.spliced().getReason());
                    assertEquals(first == 0 ? 1 << 20 : 3 << 20, res.spliced().getBytesAToB());
                    assertTrue(res.spliced().getAReadClosed() && res.spliced().getBReadClosed());
                }
            }
        }
    }

    @Test
    void aResetEndsThePairAndIsReported() throws Exception {
        try (Relayed r = Relayed.open(listeners)) {
            CompletableFuture<SplicerClient.Result> f = splice(r, null);
            send(r.c, 5, 1000, false);
            TcpSockets.lingerZero(r.u);
            r.u.close(); // RST to b
            try (SplicerClient.Result res = f.get(10, TimeUnit.SECONDS)) {
                assertEquals(EndReason.RESET, res.spliced().getReason(), res.spliced().toString());
                assertTrue(res.spliced().getErrno() == Errno.ECONNRESET || res.spliced().getErrno() == Errno.EPIPE,
                        res.spliced().toString());
            }
        }
    }

    @Test
    void idleTimeoutLifetimeByteLimitAndCancelEachEndThePairWithItsReason() throws Exception {
        try (Relayed r = Relayed.open(listeners)) {
            CompletableFuture<SplicerClient.Result> f = splice(r, Limits.newBuilder().setIdleTimeoutMs(300).build());
            send(r.c, 6, 100, false);
            try (SplicerClient.Result res = f.get(10, TimeUnit.SECONDS)) {
                assertEquals(EndReason.IDLE_TIMEOUT, res.spliced().getReason());
                assertEquals(100, res.spliced().getBytesAToB());
            }
        }
        try (Relayed r = Relayed.open(listeners)) {
            long t0 = System.nanoTime();
            CompletableFuture<SplicerClient.Result> f = splice(r, Limits.newBuilder().setLifetimeMs(500)
                    .setIdleTimeoutMs(10_000).build());
            while (!f.isDone() && System.nanoTime() - t0 < TimeUnit.SECONDS.toNanos(10)) {
                send(r.c, 7, 100, false); // activity never lets it go idle
                Thread.sleep(50);
            }
            try (SplicerClient.Result res = f.get(10, TimeUnit.SECONDS)) {
                assertEquals(EndReason.LIFETIME, res.spliced().getReason());
            }
        }
        try (Relayed r = Relayed.open(listeners)) {
            CompletableFuture<SplicerClient.Result> f = splice(r, Limits.newBuilder().setByteLimit(1000).build());
            send(r.c, 8, 5000, false);
            try (SplicerClient.Result res = f.get(10, TimeUnit.SECONDS)) {
                assertEquals(EndReason.BYTE_LIMIT, res.spliced().getReason());
                assertEquals(1000, res.spliced().getBytesAToB() + res.spliced().getBytesBToA());
            }
        }
        try (Relayed r = Relayed.open(listeners)) {
            CountDownLatch accepted = new CountDownLatch(1);
            long[] task = new long[1];
            CompletableFuture<SplicerClient.Result> f = client.splice(r.a, r.b, null, null, t -> {
                task[0] = t;
                accepted.countDown();
            });
            assertTrue(accepted.await(10, TimeUnit.SECONDS));
            r.closeHandedOver();
            try (var cancel = client.control().call(warren.control.v1.Request.newBuilder().setCancel(
                    warren.control.v1.Cancel.newBuilder().setTask(task[0])), List.of()).get(10, TimeUnit.SECONDS)) {
                assertEquals(warren.control.v1.Response.BodyCase.CANCELLED, cancel.response().getBodyCase());
            }
            try (SplicerClient.Result res = f.get(10, TimeUnit.SECONDS)) {
                assertEquals(EndReason.CANCELLED, res.spliced().getReason());
                // handed back still connected: the proxy can go on using them
                assertEquals(TcpSockets.localAddress(r.c), TcpSockets.remoteAddress(res.a()));
                assertEquals(TcpSockets.localAddress(r.u), TcpSockets.remoteAddress(res.b()));
                assertFalse(res.spliced().getAWriteShut() || res.spliced().getBWriteShut());
                Pointer scratch = Native.allocate(16);
                TcpSockets.writeFully(res.a(), scratch, "bye".getBytes(), 0, 3);
                byte[] got = new byte[3];
                assertEquals(3, TcpSockets.read(r.c, scratch, got, 0, 3));
                assertArrayEquals("bye".getBytes(), got);
                assertEquals(TcpInfo.stateName(1), TcpInfo.stateName(TcpInfo.of(res.b().get()).state()));
            }
        }
        daemon.daemon.audit().flush(5000); // lines are written by the audit's writer thread
        String audit = Files.readString(dir.resolve("audit.jsonl"));
        for (String reason : List.of("IDLE_TIMEOUT", "LIFETIME", "BYTE_LIMIT", "CANCELLED")) {
            assertTrue(audit.contains("\"reason\":\"" + reason + "\""), reason + " in audit:\n" + audit);
        }
    }

    @Test
    void aThousandConcurrentPairsAllCompleteWithCorrectHashesAndNoFdIsLeft() throws Exception {
        int pairs = 1000;
        int before = FdCount.stable();
        List<Relayed> rs = new ArrayList<>();
        List<CompletableFuture<SplicerClient.Result>> fs = new ArrayList<>();
        CountDownLatch accepted = new CountDownLatch(pairs);
        for (int i = 0; i < pairs; i++) {
            Relayed r = Relayed.open(listeners);
            rs.add(r);
            fs.add(client.splice(r.a, r.b, null, null, t -> accepted.countDown()));
        }
        assertTrue(accepted.await(60, TimeUnit.SECONDS), "all pairs relayed at once");
        rs.forEach(Relayed::closeHandedOver);
        ExecutorService pool = Executors.newFixedThreadPool(8);
        try {
            List<Future<?>> work = new ArrayList<>();
            for (int i = 0; i < pairs; i++) {
                Relayed r = rs.get(i);
                int seed = i;
                work.add(pool.submit(() -> {
                    byte[] up = send(r.c, 2L * seed, 32 << 10, true);
                    byte[] down = send(r.u, 2L * seed + 1, 48 << 10, true);
                    assertArrayEquals(up, (byte[]) receive(r.u)[0]);
                    assertArrayEquals(down, (byte[]) receive(r.c)[0]);
                    return null;
                }));
            }
            for (Future<?> w : work) {
                w.get(120, TimeUnit.SECONDS);
            }
        } finally {
            pool.shutdownNow();
        }
        for (CompletableFuture<SplicerClient.Result> f : fs) {
            try (SplicerClient.Result res = f.get(30, TimeUnit.SECONDS)) {
                assertEquals(EndReason.BOTH_EOF, res.spliced().getReason());
                assertEquals(32 << 10, res.spliced().getBytesAToB());
                assertEquals(48 << 10, res.spliced().getBytesBToA());
            }
        }
        rs.forEach(Relayed::close);
        assertEquals(before, FdCount.awaitCount(before), FdCount::dump);
    }
}
