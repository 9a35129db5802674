package warren.fish;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.management.ManagementFactory;
import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.SocketTimeoutException;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.daemon.metrics.Counters;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.linux.net.Netns;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;

/**
 * Fish's packet paths allocate nothing: bytes allocated by its loop thread
 * (com.sun.management.ThreadMXBean#getThreadAllocatedBytes), after a warm-up, while UDP requests
 * and their answers go through one flow (client path and reply path), and while malformed packets
 * are dropped and counted. Not a timing: an allocation count. At threads = 1 and 2 (all loop
 * threads summed); at 2 the measured flow's port is of the other loop's class, so each reply is
 * read on loop 1 and handed over to loop 0 through the hand-over ring.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class FishAllocationTest {
    private static final int EXCHANGES = 10_000;
    private static final int DROPS = 20_000;
    /** The loop also wakes for epoll and timers; a per-packet allocation of 16 bytes would show as >= 300 KiB. */
    private static final long BUDGET = 64 << 10;

    @TempDir
    Path dir;

    @ParameterizedTest(name = "threads = {0}")
    @ValueSource(ints = {1, 2})
    void forwardingRepliesAndDropsAllocateNothingOnTheLoopThreads(int threads, TestNetwork net) throws Exception {
        try (Topology t = new Topology(net, dir, "threads = " + threads + "\n")) {
            // at 2: a tie between the classes puts the client on loop 0; a first flow takes 25000 (class 0),
            // the measured one gets 25001, whose replies the steering program puts on loop 1
            TestNetwork.Namespace client = t.client("a", 25000, threads == 2 ? 25001 : 25009, null);
            Fd raw = t.rawClient("b", 26000, 26009);
            Counters counters = ((RunningDaemon) t.fish).daemon.counters();
            com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
            long[] loopTids = Thread.getAllStackTraces().keySet().stream()
                    .filter(th -> th.getName().equals("fish-loop") || th.getName().startsWith("fish-loop-"))
                    .mapToLong(Thread::getId).toArray();
            assertEquals(threads, loopTids.length, "one thread per loop");
            try (DatagramSocket first = Netns.call("/run/netns/" + client.name, DatagramSocket::new);
                    DatagramSocket s = Netns.call("/run/netns/" + client.name, DatagramSocket::new)) {
                first.connect(t.server, 7);
                first.setSoTimeout(1000);
                exchange(first, 1);
                s.connect(t.server, 7);
                s.setSoTimeout(1000);
                exchange(s, EXCHANGES / 5); // warm-up: JIT, the flow's reservation, first-time paths
                long handedBefore = counters.get("handover.packets");
                long before = allocated(mx, loopTids);
                exchange(s, EXCHANGES);
                long allocated = allocated(mx, loopTids) - before;
                System.out.printf("fish loops (%d) allocated %d bytes for %d UDP exchanges (%d packets through Fish):"
                        + " %.4f bytes per packet%n", threads, allocated, EXCHANGES, 2 * EXCHANGES,
                        allocated / (2.0 * EXCHANGES));
                assertTrue(allocated < BUDGET, allocated + " bytes allocated on the client and reply paths");
                if (threads == 2 && counters.get("tun.steering_unavailable") == 0) {
                    assertTrue(counters.get("handover.packets") - handedBefore >= EXCHANGES,
                            "every reply was handed over: " + (counters.get("handover.packets") - handedBefore));
                }
            }
            drop(raw, counters, DROPS / 5);
            long before = allocated(mx, loopTids);
            drop(raw, counters, DROPS);
            long allocated = allocated(mx, loopTids) - before;
            System.out.printf("fish loop allocated %d bytes for %d dropped packets: %.4f bytes per drop%n", allocated, DROPS,
                    (double) allocated / DROPS);
            assertTrue(allocated < BUDGET, allocated + " bytes allocated on the drop path");
        }
    }

    private static long allocated(com.sun.management.ThreadMXBean mx, long[] tids) {
        long n = 0;
        for (long b : mx.getThreadAllocatedBytes(tids)) {
            n += b;
        }
        return n;
    }

    /** {@code n} request/answer exchanges; a request unanswered within 1 s is sent again. */
    private static void exchange(DatagramSocket s, int n) throws Exception {
        byte[] req = {'p', 'i', 'n', 'g'};
        DatagramPacket in = new DatagramPacket(new byte[256], 256);
        for (int i = 0; i < n; i++) {
            for (int tries = 0; ; tries++) {
                s.send(new DatagramPacket(req, req.length));
                try {
                    s.receive(in);
                    break;
                } catch (SocketTimeoutException e) {
                    if (tries == 5) {
                        throw e;
                    }
                }
            }
        }
    }

    /** Writes {@code n} packets of IP version 0 to Fish and waits until it has counted them dropped. */
    private static void drop(Fd raw, Counters counters, int n) throws Exception {
        Pointer junk = Native.allocate(40);
        junk.put(0, new byte[40], 0, 40); // IP version 0
        long target = counters.get("drops.bad_version") + n;
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        for (int sent = 0; sent < n; ) {
            if (Native.send(raw.get(), junk, 40, Native.MSG_NOSIGNAL | Native.MSG_DONTWAIT) == 40) {
                sent++;
            } else {
                Thread.onSpinWait(); // the socket is full: Fish reads on
            }
            assertTrue(System.nanoTime() < deadline, "Fish stopped reading");
        }
        while (counters.get("drops.bad_version") < target) {
            assertTrue(System.nanoTime() < deadline, "dropped " + counters.get("drops.bad_version") + " of " + target);
            Thread.sleep(5); // polling an in-process counter: nothing runs on Fish's loop for it
        }
    }
}
