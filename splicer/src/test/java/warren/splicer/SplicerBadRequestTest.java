package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.EndReason;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.FdCount;
import warren.fdpass.Received;
import warren.fdpass.SeqpacketSocket;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;
import warren.splicer.client.SplicerClient;

/** Every bad Splice gets an Error with a code, leaks nothing, and the next client is served. */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class SplicerBadRequestTest {
    @TempDir
    Path dir;

    private static Response raw(SeqpacketSocket s, Request req, List<Fd> fds) throws Exception {
        s.sendBlocking(req.toByteArray(), fds, 5000);
        try (Received r = s.receiveBlocking(10_000)) {
            return Response.parseFrom(r.data());
        }
    }

    private static Request splice(long id, int a, int b) {
        return Request.newBuilder().setId(id).setSplice(Splice.newBuilder().setFdA(a).setFdB(b)).build();
    }

    @Test
    void eachBadRequestGetsItsErrorAndTheNextClientIsServed() throws Exception {
        Fd[] listeners = Relayed.listeners();
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("s.sock"),
                "audit.path = " + dir.resolve("audit.jsonl"))) {
            SeqpacketSocket s = SeqpacketSocket.connect(d.control);
            try (Relayed ok = Relayed.open(listeners)) {
                raw(s, Request.newBuilder().setId(1).setStatus(warren.control.v1.Status.getDefaultInstance()).build(),
                        List.of()); // warm-up
                int before = FdCount.stable();
                assertEquals(Error.Code.BAD_FD_INDEX, raw(s, splice(2, 0, 5), List.of(ok.a, ok.b)).getError().getCode());
                assertEquals(Error.Code.DUPLICATE_FD, raw(s, splice(3, 0, 0), List.of(ok.a)).getError().getCode());
                try (Fd dupA = ok.a.dup()) {
                    Response r = raw(s, splice(4, 0, 1), List.of(ok.a, dupA));
                    assertEquals(Error.Code.INVALID_ARGUMENT, r.getError().getCode(), r.toString());
                }
                int[] pipe = Native.pipe2(Native.O_CLOEXEC);
                try (Fd pr = Fd.adopt(pipe[0]); Fd pw = Fd.adopt(pipe[1])) {
                    Response r = raw(s, splice(5, 0, 1), List.of(pr, ok.b));
                    assertEquals(Error.Code.BAD_FD_TYPE, r.getError().getCode());
                    assertTrue(r.getError().getMessage().contains("fd_a is a pipe"), r.getError().getMessage());
                }
                Response r = raw(s, splice(6, 0, 1), List.of(ok.a, listeners[1]));
                assertEquals(Error.Code.BAD_FD_TYPE, r.getError().getCode());
                assertTrue(r.getError().getMessage().contains("listening"), r.getError().getMessage());
                try (Fd udp = Fd.adopt(Native.socket(Native.AF_INET, Native.SOCK_DGRAM | Native.SOCK_CLOEXEC, 0))) {
                    r = raw(s, splice(7, 0, 1), List.of(ok.a, udp));
                    assertEquals(Error.Code.BAD_FD_TYPE, r.getError().getCode());
                    assertTrue(r.getError().getMessage().contains("SOCK_DGRAM"), r.getError().getMessage());
                }
                try (Fd unconnected = Fd.adopt(Native.socket(Native.AF_INET, Native.SOCK_STREAM | Native.SOCK_CLOEXEC, 0))) {
                    r = raw(s, splice(8, 0, 1), List.of(ok.a, unconnected));
                    assertEquals(Error.Code.PEER_GONE, r.getError().getCode(), r.toString());
                }
                try (Relayed reset = Relayed.open(listeners)) {
                    TcpSockets.lingerZero(reset.u);
                    reset.u.close(); // b's peer is gone with a RST
                    Native.pollOne(reset.b.get(), Native.POLLERR, 5000);
                    r = raw(s, splice(9, 0, 1), List.of(reset.a, reset.b));
                    assertEquals(Error.Code.PEER_GONE, r.getError().getCode(), r.toString());
                    assertTrue(r.getError().getMessage().contains("fd_b"), r.getError().getMessage());
                }
                assertEquals(before, FdCount.awaitCount(before), FdCount::dump);
            }
            // the next client is served: a real pair relays
            try (SplicerClient c = SplicerClient.connect(d.control); Relayed r = Relayed.open(listeners)) {
                CompletableFuture<SplicerClient.Result> f = c.splice(r.a, r.b, null, null, null);
                Pointer scratch = Native.allocate(16);
                TcpSockets.writeFully(r.c, scratch, "hi".getBytes(), 0, 2);
                byte[] got = new byte[2];
                assertEquals(2, TcpSockets.read(r.u, scratch, got, 0, 2));
                TcpSockets.shutdownOutput(r.c);
                TcpSockets.shutdownOutput(r.u);
                try (SplicerClient.Result res = f.get(10, TimeUnit.SECONDS)) {
                    assertEquals(EndReason.BOTH_EOF, res.spliced().getReason());
                }
            }
            s.close();
            d.daemon.audit().flush(5000); // lines are written by the audit's writer thread
            String audit = Files.readString(dir.resolve("audit.jsonl"));
            for (String code : List.of("BAD_FD_INDEX", "DUPLICATE_FD", "INVALID_ARGUMENT", "BAD_FD_TYPE", "PEER_GONE")) {
                assertTrue(audit.contains("\"event\":\"rejected\"") && audit.contains("\"code\":\"" + code + "\""),
                        code + " has an audit line:\n" + audit);
            }
        } finally {
            Fd.closeAll(List.of(listeners));
        }
    }

    @Test
    void nearTheFdLimitNewPairsAreRefusedAndExistingOnesCarryOn() throws Exception {
        // a Splicer process whose hard fd limit is 200
        Path sock = dir.resolve("low.sock");
        Path conf = Files.writeString(dir.resolve("low.conf"), "splice.fd_reserve = 16\naudit.path = /dev/null\n");
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process p = new ProcessBuilder("bash", "-c", "ulimit -n 200 && exec \"$0\" \"$@\"", java, "-cp",
                System.getProperty("java.class.path"), Main.class.getName(), "--control", sock.toString(),
                "--config", conf.toString()).redirectErrorStream(true).start();
        Fd[] listeners = Relayed.listeners();
        List<Relayed> live = new ArrayList<>();
        List<CompletableFuture<SplicerClient.Result>> fs = new ArrayList<>();
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (!Files.exists(sock)) {
                assertTrue(System.nanoTime() < deadline && p.isAlive(), "splicer came up");
                Thread.sleep(20);
            }
            try (SplicerClient c = SplicerClient.connect(sock)) {
                Throwable refused = null;
                for (int i = 0; i < 150 && refused == null; i++) {
                    Relayed r = Relayed.open(listeners);
                    CompletableFuture<Long> accepted = new CompletableFuture<>();
                    CompletableFuture<SplicerClient.Result> f = c.splice(r.a, r.b, null, null, accepted::complete);
                    try {
                        CompletableFuture.anyOf(accepted, f).get(10, TimeUnit.SECONDS);
                    } catch (java.util.concurrent.ExecutionException e) {
                        refused = e.getCause();
                    }
                    r.closeHandedOver();
                    if (refused == null) {
                        live.add(r);
                        fs.add(f);
                    } else {
                        r.close();
                    }
                }
                assertTrue(refused instanceof SplicerClient.SpliceRefused, "refused near the limit: " + refused);
                Error e = ((SplicerClient.SpliceRefused) refused).error();
                assertEquals(Error.Code.RESOURCE_EXHAUSTED, e.getCode());
                // the reserve check ("fd limit near"), or, when a lazily loaded class took the last
                // fds first, the kernel could not install the request's fds (MSG_CTRUNC): both refuse
                // with RESOURCE_EXHAUSTED and lose nothing
                assertTrue(e.getMessage().contains("fd limit near") || e.getMessage().contains("out of fds"),
                        e.getMessage());
                assertTrue(live.size() > 20, live.size() + " pairs before the limit");
                // every existing pair still relays
                Pointer scratch = Native.allocate(64);
                byte[] got = new byte[5];
                for (Relayed r : live) {
                    TcpSockets.writeFully(r.c, scratch, "hello".getBytes(), 0, 5);
                    assertEquals(5, TcpSockets.read(r.u, scratch, got, 0, 5));
                    TcpSockets.shutdownOutput(r.c);
                    TcpSockets.shutdownOutput(r.u);
                }
                for (CompletableFuture<SplicerClient.Result> f : fs) {
                    try (SplicerClient.Result res = f.get(10, TimeUnit.SECONDS)) {
                        assertEquals(EndReason.BOTH_EOF, res.spliced().getReason());
                    }
                }
            }
        } finally {
            live.forEach(Relayed::close);
            Fd.closeAll(List.of(listeners));
            p.destroy();
            p.waitFor(10, TimeUnit.SECONDS);
        }
    }
}
