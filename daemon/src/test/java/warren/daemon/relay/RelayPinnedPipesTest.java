package warren.daemon.relay;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.EndReason;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.daemon.DaemonSpec;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.metrics.Counters;
import warren.daemon.testing.RunningDaemon;
import warren.daemon.testing.Streams;
import warren.fdpass.Fd;
import warren.fdpass.FdCount;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;

/**
 * With pinned pipes (systemd's fd store: a pair's pipes are stored with its sockets under
 * {@code p<TASK>}), no pair ever gets a pipe an earlier pair had. systemd keeps one copy of a file
 * in a service's fd store whatever the names it was stored under (service_add_fd_store drops an fd
 * that is the same file as one it holds), and a pair's entry is removed only once the control loop
 * has queued its answer: a pipe lent again from the pool to the next pair on another loop went into
 * that pair's entry as a duplicate (dropped), the old entry's removal then took it, and a crash
 * lost the pair (the soak: "p1065: unusable (fd 2 of 6 missing)", then a reset stream). Pairs here
 * run one after another on one relay, each ended before the next begins, beside one that lives
 * throughout (an idle relay closes its pool, which hid the reuse), as the soak's did.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class RelayPinnedPipesTest {
    @TempDir
    Path dir;

    @Test
    void aPinnedPipeIsNeverLentToALaterPair() throws Exception {
        List<long[]> started = new ArrayList<>(); // per pair: the inodes of its two pipes
        Relay[] relays = new Relay[1];
        DaemonSpec spec = new DaemonSpec("testd", "test", "relays with pinned pipes", List.of(), d -> {
            Relay relay = new Relay(d.loop(), new Counters(), new Relay.Settings(64 * 1024, 4, 64, true));
            relays[0] = relay;
            relay.journal(new Relay.Journal() {
                @Override
                public void started(Pair p) {
                    long[] ino = new long[2];
                    for (int dir = 0; dir < 2; dir++) {
                        try {
                            ino[dir] = Native.fstat(p.pipe[dir].r)[3];
                        } catch (Exception e) {
                            throw new IllegalStateException(e);
                        }
                    }
                    synchronized (started) {
                        started.add(ino);
                    }
                }

                @Override
                public void ended(Pair p) {}
            });
            return warren.daemon.testing.RelayingHandler.of(relay);
        });
        try (RunningDaemon d = new RunningDaemon(spec, dir.resolve("ctl.sock"), "audit.path = /dev/null\n");
                Fd listener = TcpSockets.listen(new InetSocketAddress(InetAddress.getByName("127.0.0.1"), 0), 8);
                ControlClient c = ControlClient.connect(d.control)) {
            InetSocketAddress at = TcpSockets.localAddress(listener);
            int before = FdCount.stable();
            Fd[] holder = {TcpSockets.connect(at), TcpSockets.accept(listener), TcpSockets.connect(at),
                TcpSockets.accept(listener)}; // c1, a, b, c2 of the pair that lives throughout
            var held = c.call(Request.newBuilder().setId(100).setSplice(Splice.newBuilder().setFdA(0).setFdB(1)),
                    List.of(holder[1], holder[2]));
            holder[1].close();
            holder[2].close();
            int pairs = 6;
            for (int i = 0; i < pairs; i++) {
                byte[] data = new byte[100_000 + i];
                java.util.Arrays.fill(data, (byte) i);
                try (Fd c1 = TcpSockets.connect(at); Fd a = TcpSockets.accept(listener); Fd b = TcpSockets.connect(at);
                        Fd c2 = TcpSockets.accept(listener)) {
                    var answer = c.call(Request.newBuilder().setId(i + 1).setSplice(Splice.newBuilder().setFdA(0).setFdB(1)),
                            List.of(a, b));
                    a.close();
                    b.close();
                    Streams.writeAll(c1.get(), data);
                    Native.shutdown(c1.get(), Native.SHUT_WR);
                    assertArrayEquals(Streams.sha256(data), Streams.readAllSha256(c2.get()), "pair " + i + "'s bytes");
                    Native.shutdown(c2.get(), Native.SHUT_WR);
                    try (Reply r = answer.get(10, TimeUnit.SECONDS)) {
                        Response resp = r.response();
                        assertEquals(EndReason.BOTH_EOF, resp.getSpliced().getReason(), resp::toString);
                        assertEquals(data.length, resp.getSpliced().getBytesAToB());
                        for (int f = 0; f < r.fdCount(); f++) {
                            r.takeFd(f).close();
                        }
                    }
                }
            }
            Native.shutdown(holder[0].get(), Native.SHUT_WR);
            Native.shutdown(holder[3].get(), Native.SHUT_WR);
            try (Reply r = held.get(10, TimeUnit.SECONDS)) {
                assertEquals(EndReason.BOTH_EOF, r.response().getSpliced().getReason(), r.response()::toString);
                for (int f = 0; f < r.fdCount(); f++) {
                    r.takeFd(f).close();
                }
            }
            holder[0].close();
            holder[3].close();
            Set<Long> seen = new HashSet<>();
            synchronized (started) {
                assertEquals(pairs + 1, started.size(), "every pair told the journal it started");
                for (int i = 0; i < started.size(); i++) {
                    for (long ino : started.get(i)) {
                        assertTrue(seen.add(ino), "pair " + i + " got pipe inode " + ino + ", which an earlier pair had"
                                + " (and whose fd store entry may not be removed yet)");
                    }
                }
            }
            assertEquals(0, d.daemon.loop().call(() -> relays[0].pipesOpen(), 5000), "no pipe held once every pair ended");
            assertEquals(before, FdCount.stable(), "every fd of the pairs closed");
        }
    }
}
