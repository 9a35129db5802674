package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.EndReason;
import warren.daemon.testing.DaemonProcess;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.fdpass.net.Linger;
import warren.fdpass.net.TcpSockets;
import warren.splicer.client.SplicerClient;

/**
 * Issue 12, item 8: sockets a daemon holds end with a reset if it dies. Splicer holds a pair's
 * sockets with SO_LINGER {on, 0}: kill -9 in the middle of an upload and the upstream's read
 * fails with ECONNRESET instead of seeing a clean EOF (before the fix it saw EOF after a part of
 * the upload). An upgrade in place moves the sockets without resetting them (the successor holds
 * them before the old process closes its copies), and a pair that ends normally hands back its
 * sockets with the SO_LINGER they came with, also across an upgrade.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class SplicerLingerTest {
    private static final Linger CUSTOM_A = new Linger(true, 7);
    private static final Linger CUSTOM_B = new Linger(false, 5);

    @TempDir
    Path dir;

    @Test
    void aNormalEndHandsBackTheOriginalLinger() throws Exception {
        Fd[] listeners = Relayed.listeners();
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("s.sock"), "audit.path = /dev/null");
                SplicerClient c = SplicerClient.connect(d.control); Relayed r = Relayed.open(listeners)) {
            CUSTOM_A.applyTo(r.a.get());
            CUSTOM_B.applyTo(r.b.get());
            assertEquals(CUSTOM_B, Linger.of(r.b.get()), "{off, 5 s} set exactly");
            CompletableFuture<Long> accepted = new CompletableFuture<>();
            CompletableFuture<SplicerClient.Result> f = c.splice(r.a, r.b, null, null, accepted::complete);
            accepted.get(10, TimeUnit.SECONDS);
            // the proxy's copies are the same sockets: held with {on, 0} while relayed
            assertEquals(Linger.RESET, Linger.of(r.a.get()));
            assertEquals(Linger.RESET, Linger.of(r.b.get()));
            Pointer scratch = Native.allocate(16);
            TcpSockets.writeFully(r.c, scratch, "x".getBytes(), 0, 1);
            assertEquals(1, TcpSockets.read(r.u, scratch, new byte[1], 0, 1));
            TcpSockets.shutdownOutput(r.c);
            TcpSockets.shutdownOutput(r.u);
            try (SplicerClient.Result res = f.get(10, TimeUnit.SECONDS)) {
                assertEquals(EndReason.BOTH_EOF, res.spliced().getReason());
                assertEquals(CUSTOM_A, Linger.of(res.a().get()));
                assertEquals(CUSTOM_B, Linger.of(res.b().get()));
            }
        } finally {
            Fd.closeAll(List.of(listeners));
        }
    }

    @Test
    void killMinus9MidUploadResetsTheUpstreamAndAnUpgradeDoesNot() throws Exception {
        Path conf = Files.writeString(dir.resolve("s.conf"), "audit.path = " + dir.resolve("audit.jsonl") + "\n");
        Fd[] listeners = Relayed.listeners();
        DaemonProcess d = new DaemonProcess("splicer", Main.class, dir.resolve("s.sock"), conf, dir.resolve("out.log"));
        Relayed upload = Relayed.open(listeners);
        Relayed quiet = Relayed.open(listeners); // ends normally after the upgrade: its linger comes back
        AtomicLong sent = new AtomicLong();
        Thread writer = null;
        try (SplicerClient c = SplicerClient.connect(d.control)) {
            CUSTOM_A.applyTo(quiet.a.get());
            CUSTOM_B.applyTo(quiet.b.get());
            CompletableFuture<Long> acceptedQuiet = new CompletableFuture<>();
            CompletableFuture<SplicerClient.Result> quietEnd = c.splice(quiet.a, quiet.b, null, null,
                    acceptedQuiet::complete);
            CompletableFuture<Long> accepted = new CompletableFuture<>();
            CompletableFuture<SplicerClient.Result> uploadEnd = c.splice(upload.a, upload.b, null, null,
                    accepted::complete);
            accepted.get(10, TimeUnit.SECONDS);
            acceptedQuiet.get(10, TimeUnit.SECONDS);
            upload.closeHandedOver(); // a front proxy closes its copies: Splicer holds the only ones
            quiet.closeHandedOver();
            writer = new Thread(() -> upload(upload.c, sent), "upload");
            writer.start();
            Pointer scratch = Native.allocate(64 << 10);
            long got = readAtLeast(upload.u, scratch, 1 << 20);
            // an upgrade in place: the old process closes its copies after the successor took them
            long oldPid = d.pid();
            assertEquals(0, d.upgrade(), Files.readString(dir.resolve("out.log")));
            long newPid = d.pid();
            assertTrue(newPid != oldPid, "a new process serves");
            got += readAtLeast(upload.u, scratch, 1 << 20); // still streaming: no reset from the handoff
            // the quiet pair ends normally in the successor: its original linger is handed back
            TcpSockets.shutdownOutput(quiet.c);
            TcpSockets.shutdownOutput(quiet.u);
            try (SplicerClient.Result res = quietEnd.get(10, TimeUnit.SECONDS)) {
                assertEquals(EndReason.BOTH_EOF, res.spliced().getReason());
                assertEquals(CUSTOM_A, Linger.of(res.a().get()), "linger of a carried through the upgrade");
                assertEquals(CUSTOM_B, Linger.of(res.b().get()), "linger of b carried through the upgrade");
            }
            // kill -9 in the middle of the upload
            new ProcessBuilder("kill", "-KILL", Long.toString(newPid)).start().waitFor();
            int errno = 0;
            long after = 0;
            try {
                while (true) {
                    int n = TcpSockets.read(upload.u, scratch, new byte[64 << 10], 0, 64 << 10);
                    if (n == 0) {
                        break;
                    }
                    after += n;
                }
            } catch (NativeIoException e) {
                errno = e.errno();
            }
            System.out.printf("upstream got %d bytes, then %d after kill -9, then %s (client sent %d)%n", got, after,
                    errno == 0 ? "EOF" : Errno.name(errno), sent.get());
            if (errno == 0) {
                fail("the upstream saw a clean EOF after " + (got + after) + " of " + sent.get()
                        + " bytes: a cut-short upload looks complete");
            }
            assertEquals(Errno.ECONNRESET, errno, Errno.name(errno));
            assertTrue(!uploadEnd.isDone() || uploadEnd.isCompletedExceptionally(), "never answered: its daemon died");
        } finally {
            if (writer != null) {
                Native.tryShutdown(upload.c.get(), Native.SHUT_RDWR); // the writer's next write fails
                writer.join(10_000);
            }
            upload.close();
            quiet.close();
            d.close();
            Fd.closeAll(List.of(listeners));
        }
    }

    private static long readAtLeast(Fd fd, Pointer scratch, long n) throws NativeIoException {
        byte[] into = new byte[(int) scratch.size()];
        long got = 0;
        while (got < n) {
            int r = TcpSockets.read(fd, scratch, into, 0, into.length);
            if (r == 0) {
                fail("EOF after " + got + " bytes");
            }
            got += r;
        }
        return got;
    }

    /** Writes until the socket fails (the relay died) or is closed. */
    private static void upload(Fd c, AtomicLong sent) {
        Pointer buf = Native.allocate(64 << 10);
        try {
            while (true) {
                long n = Native.ioResult("write", Native.write(c.get(), buf, 64 << 10));
                if (n > 0) {
                    sent.addAndGet(n);
                } else if (n == Native.WOULD_BLOCK) {
                    Native.pollOne(c.get(), Native.POLLOUT, 1000);
                }
            }
        } catch (NativeIoException | RuntimeException e) {
            // EPIPE / ECONNRESET after the kill, EBADF once the test closed it
        }
    }
}
