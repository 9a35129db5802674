package warren.fish;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import warren.daemon.DaemonSpec;
import warren.daemon.loop.EventLoop;
import warren.daemon.loop.Loops;
import warren.daemon.metrics.Counters;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.Packets;
import warren.netns.testing.TestNetwork;

/**
 * Pausing Fish's loops for a handoff is one EventLoop.Group pause per loop: with many clients it
 * unregisters nothing (each loop's registrations are the same before and after), a packet a
 * client sends while its loop is paused waits in its socket, and after the resume it goes out
 * and its answer comes back. At threads = 1 and 2, driven as the upgrade coordinator drives a
 * failed handoff (pauseLoop on every loop, then resumeLoop, loop 0 last), on the loops' threads.
 * Prints how long each loop's pause and resume took.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class FishPauseTest {
    private static final int CLIENTS = 2000;
    /** Clients that send a packet while paused (at threads = 2, on both loops: placement alternates). */
    private static final int SENDERS = 4;
    private static final long LOOP_MS = 10_000;

    @TempDir
    Path dir;

    @ParameterizedTest(name = "threads = {0}")
    @ValueSource(ints = {1, 2})
    void pausingManyClientsUnregistersNothingAndWhatTheySendMeanwhileGoesOutAfterTheResume(int threads,
            TestNetwork net) throws Exception {
        EgressHandler[] handler = new EgressHandler[1];
        DaemonSpec fish = Main.spec();
        DaemonSpec keeping = new DaemonSpec(fish.name(), fish.version(), fish.summary(), fish.configKeys(), d -> {
            handler[0] = new EgressHandler(d);
            return handler[0];
        });
        try (Topology t = new Topology(net, dir, "threads = " + threads + "\n", keeping)) {
            List<Fd> clients = new ArrayList<>();
            for (int i = 0; i < CLIENTS; i++) {
                clients.add(t.rawClient("c" + i, 10000 + 10 * i, 10000 + 10 * i + 9));
            }
            Loops loops = ((RunningDaemon) t.fish).daemon.loops();
            Counters counters = ((RunningDaemon) t.fish).daemon.counters();
            EgressHandler h = handler[0];
            byte[] client = {(byte) 198, 18, 60, 1};
            Fd warm = clients.get(CLIENTS - 1); // the paths run once before the pause (the resume's figure is then not the JIT's)
            Packets.send(warm, Packets.udp4(client, 4999, t.server.getAddress(), 7, "before"));
            assertTrue(receive(warm).startsWith("before from " + Topology.SOFT + ":"));
            int[] before = registrations(loops);

            long[] pausedNanos = new long[threads];
            for (int i = 0; i < threads; i++) {
                int index = i;
                pausedNanos[i] = loops.get(i).call(() -> {
                    long t0 = System.nanoTime();
                    h.pauseLoop(index);
                    return System.nanoTime() - t0;
                }, LOOP_MS);
            }
            int[] paused = registrations(loops);
            for (int i = 0; i < threads; i++) {
                System.out.printf("threads = %d: loop %d paused with %d registrations in %.3f ms%n", threads, i,
                        before[i], pausedNanos[i] / 1e6);
            }
            for (int i = 0; i < threads; i++) {
                assertEquals(before[i], paused[i], "loop " + i + ": the pause unregistered nothing");
            }

            for (int i = 0; i < SENDERS; i++) {
                Packets.send(clients.get(i), Packets.udp4(client, 5000 + i, t.server.getAddress(), 7, "while paused " + i));
            }
            for (int round = 0; round < 3; round++) { // each loop sees the sockets readable and holds it
                for (int i = 0; i < threads; i++) {
                    loops.get(i).call(() -> null, LOOP_MS);
                }
            }
            assertEquals(1L, counters.get("reservations.made"), "nothing read while paused");
            assertEquals(0L, counters.get("drops.bad_version"));

            for (int i = threads - 1; i >= 0; i--) { // loop 0 last, as after a failed handoff
                int index = i;
                long resumedNanos = loops.get(i).call(() -> {
                    long t0 = System.nanoTime();
                    h.resumeLoop(index);
                    return System.nanoTime() - t0;
                }, LOOP_MS);
                System.out.printf("threads = %d: loop %d resumed in %.3f ms%n", threads, i, resumedNanos / 1e6);
            }
            assertEquals(before[0], registrations(loops)[0], "the resume registered nothing again");
            for (int i = 0; i < SENDERS; i++) {
                String answer = receive(clients.get(i));
                assertTrue(answer.startsWith("while paused " + i + " from " + Topology.SOFT + ":"), answer);
            }
            assertEquals(SENDERS + 1L, counters.get("reservations.made"));
        }
    }

    private static int[] registrations(Loops loops) throws Exception {
        int[] n = new int[loops.size()];
        for (int i = 0; i < n.length; i++) {
            EventLoop l = loops.get(i);
            n[i] = l.call(l::registrations, LOOP_MS);
        }
        return n;
    }

    /** The next packet Fish writes to a client's socket, as a UDP payload; waits up to 10 s. */
    private static String receive(Fd fd) throws Exception {
        Pointer buf = Native.allocate(2048);
        assertTrue(Native.pollOne(fd.get(), Native.POLLIN, 10_000) > 0, "no answer within 10 s");
        long n = Native.recv(fd.get(), buf, 2048, Native.MSG_DONTWAIT);
        assertTrue(n > 28, "recv: " + n);
        byte[] b = new byte[(int) n];
        buf.get(0, b, 0, b.length);
        return Packets.udp4Payload(b, b.length);
    }
}
