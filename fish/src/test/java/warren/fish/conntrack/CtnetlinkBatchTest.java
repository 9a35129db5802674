package warren.fish.conntrack;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.net.InetAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import warren.fdpass.FdCount;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.fish.conntrack.Ctnetlink.Entry;
import warren.fish.conntrack.Ctnetlink.Tuple;
import warren.linux.net.Netns;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;

/**
 * ctnetlink batches (issue 15) against the real conntrack table of a private namespace: many
 * requests in one write, each answered on its own (a collision in the middle fails alone, the
 * others are made exactly), batches larger than one write's buffer, deletes, a delete and a create
 * of the same tuple in one batch (kernel order), no fd left behind; and what a batch saves.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class CtnetlinkBatchTest {
    private static final int FIXED = Ctnetlink.IPS_FIXED_TIMEOUT;

    private static InetAddress ip(String s) throws Exception {
        return InetAddress.getByName(s);
    }

    /** The egress tuple of Fish's reservation for port {@code port} (soft-unicast 198.18.30.3 to 198.18.20.2:80). */
    private static Tuple egress(int port) throws Exception {
        return new Tuple(6, ip("198.18.30.3"), ip("198.18.20.2"), port, 80);
    }

    private static Set<Tuple> originals(Ctnetlink ct, int family) throws Exception {
        Set<Tuple> out = new HashSet<>();
        for (Entry e : ct.dump(family)) {
            out.add(e.original());
        }
        return out;
    }

    @Test
    void aCollisionInTheMiddleOfABatchFailsAloneAndTheOthersAreMadeExactly(TestNetwork net) throws Exception {
        assumeTrue(Files.isExecutable(Path.of("/usr/sbin/conntrack")), "conntrack-tools not installed");
        TestNetwork.Namespace ns = net.namespace("egress");
        try (Ctnetlink ct = Netns.call("/run/netns/" + ns.name, Ctnetlink::new)) {
            // someone holds the egress tuple of port 50004 (its reply tuple collides)
            Tuple taken = new Tuple(6, ip("198.18.10.1"), ip("198.18.20.2"), 40001, 80);
            assertTrue(ct.createExclusive(taken, egress(50004).reversed(), 120, Ctnetlink.TCP_CONNTRACK_ESTABLISHED));
            Ctnetlink.Batch b = ct.batch();
            b.begin();
            int[] req = new int[9];
            for (int i = 0; i < 9; i++) {
                Tuple t = egress(50000 + i);
                req[i] = b.create(t, t.reversed(), 120, Ctnetlink.TCP_CONNTRACK_ESTABLISHED, 0x10000 | i, FIXED);
            }
            int again = b.create(egress(50002), egress(50002).reversed(), 120, Ctnetlink.TCP_CONNTRACK_ESTABLISHED, 0, FIXED);
            Tuple udp = new Tuple(17, ip("fd00:30::3"), ip("fd00:20::2"), 50010, 53);
            int v6 = b.create(udp, udp.reversed(), 30, 0, 0, FIXED);
            b.send();
            assertEquals(1, b.writes(), "one write");
            for (int i = 0; i < 9; i++) {
                assertEquals(i == 4 ? Errno.EEXIST : 0, b.answer(req[i]), "request " + i);
            }
            assertEquals(Errno.EEXIST, b.answer(again), "the same tuple twice in one batch: the second is refused");
            assertEquals(0, b.answer(v6));
            for (int i = 0; i < 9; i++) {
                Entry e = ct.get(egress(50000 + i));
                if (i == 4) {
                    assertNull(e, "the collision made nothing");
                    continue;
                }
                assertNotNull(e, "request " + i);
                assertEquals(egress(50000 + i).reversed(), e.reply(), "exactly the tuple asked for");
                assertEquals(0x10000 | i, e.mark());
                assertTrue((e.status() & FIXED) != 0 && e.timeout() <= 120, e.toString());
                assertEquals(Ctnetlink.TCP_CONNTRACK_ESTABLISHED, e.tcpState());
            }
            assertEquals(udp.reversed(), ct.get(udp).reply());
            Set<Tuple> v4 = originals(ct, Native.AF_INET);
            assertEquals(9, v4.size(), v4.toString()); // 8 made + the one that was there
            assertTrue(v4.contains(taken));
            assertEquals(Set.of(udp), originals(ct, Native.AF_INET6));
            String listed = ns.exec("conntrack", "-L").output();
            assertTrue(listed.contains("sport=50003 dport=80") && !listed.contains("sport=50004 dport=80"), listed);
        }
    }

    @Test
    void aBatchLargerThanOneWriteAndItsDeletes(TestNetwork net) throws Exception {
        assumeTrue(Files.isExecutable(Path.of("/usr/sbin/conntrack")), "conntrack-tools not installed");
        TestNetwork.Namespace ns = net.namespace("egress");
        int n = 300; // 5 writes of at most 64 requests
        try (Ctnetlink ct = Netns.call("/run/netns/" + ns.name, Ctnetlink::new)) {
            Ctnetlink.Batch b = ct.batch();
            b.begin();
            for (int i = 0; i < n; i++) {
                Tuple t = i % 2 == 0 ? egress(40000 + i) : new Tuple(17, ip("fd00:30::3"), ip("fd00:20::2"), 40000 + i, 53);
                assertEquals(i, b.create(t, t.reversed(), 120, Ctnetlink.TCP_CONNTRACK_ESTABLISHED, 7, FIXED));
            }
            b.send();
            assertEquals(n, b.size());
            assertEquals((n + Ctnetlink.CHUNK_REQUESTS - 1) / Ctnetlink.CHUNK_REQUESTS, b.writes());
            for (int i = 0; i < n; i++) {
                assertEquals(0, b.answer(i), "request " + i);
            }
            assertEquals(n / 2, originals(ct, Native.AF_INET).size());
            assertEquals(n / 2, originals(ct, Native.AF_INET6).size());
            assertEquals(Integer.toString(n), ns.exec("conntrack", "-C").output().strip());

            // deletes, batched: every entry and one that is not there
            b.begin();
            for (int i = 0; i < n; i++) {
                b.delete(i % 2 == 0 ? egress(40000 + i) : new Tuple(17, ip("fd00:30::3"), ip("fd00:20::2"), 40000 + i, 53));
            }
            int none = b.delete(egress(39999));
            b.send();
            for (int i = 0; i < n; i++) {
                assertEquals(0, b.answer(i), "delete " + i);
            }
            assertEquals(Errno.ENOENT, b.answer(none), "nothing to delete: ENOENT for it alone");
            assertEquals(0, ct.dump(Native.AF_INET).size() + ct.dump(Native.AF_INET6).size());
            assertEquals("0", ns.exec("conntrack", "-C").output().strip());
        }
    }

    @Test
    void aDeleteAheadOfACreateOfTheSameTupleIsDoneFirst(TestNetwork net) throws Exception {
        TestNetwork.Namespace ns = net.namespace("egress");
        try (Ctnetlink ct = Netns.call("/run/netns/" + ns.name, Ctnetlink::new)) {
            Tuple t = egress(51000);
            assertTrue(ct.createExclusive(t, t.reversed(), 120, Ctnetlink.TCP_CONNTRACK_ESTABLISHED, 1, FIXED));
            Ctnetlink.Batch b = ct.batch();
            b.begin();
            int del = b.delete(t);
            int create = b.create(t, t.reversed(), 60, Ctnetlink.TCP_CONNTRACK_ESTABLISHED, 2, FIXED);
            b.send();
            assertEquals(0, b.answer(del));
            assertEquals(0, b.answer(create), "the port is free again when the create is handled");
            assertEquals(2, ct.get(t).mark(), "the new entry");
            // the single requests and the batch share the socket and its sequence numbers
            assertTrue(ct.delete(t));
            assertNull(ct.get(t));
        }
    }

    @Test
    void noFdIsLeftBehind(TestNetwork net) throws Exception {
        TestNetwork.Namespace ns = net.namespace("egress");
        Set<String> before = FdCount.snapshot();
        for (int round = 0; round < 20; round++) {
            try (Ctnetlink ct = Netns.call("/run/netns/" + ns.name, Ctnetlink::new)) {
                Ctnetlink.Batch b = ct.batch();
                b.begin();
                for (int i = 0; i < 100; i++) {
                    b.create(egress(52000 + i), egress(52000 + i).reversed(), 60, Ctnetlink.TCP_CONNTRACK_ESTABLISHED, 0, FIXED);
                }
                b.send();
                b.begin();
                for (int i = 0; i < 100; i++) {
                    b.delete(egress(52000 + i));
                }
                b.send();
                assertEquals(0, b.answer(99));
            }
        }
        Set<String> leaked = FdCount.openedSince(before);
        assertTrue(leaked.isEmpty(), "left open: " + leaked);
    }

    /**
     * What a batch saves: microseconds per create-exclusive (and per delete) one at a time, and in
     * batches of 16 and 64, in a private namespace; wall-clock and this thread's CPU time (the
     * kernel does the work in the write's own context), medians of 5 rounds in rotating order after
     * a warm-up. A figure for the log, not an assertion (the machine is shared).
     */
    @Test
    void createsOneAtATimeAndBatched(TestNetwork net) throws Exception {
        TestNetwork.Namespace ns = net.namespace("egress");
        int n = 4096;
        int[] sizes = {1, 16, 64};
        int rounds = 5;
        java.lang.management.ThreadMXBean mx = java.lang.management.ManagementFactory.getThreadMXBean();
        try (Ctnetlink ct = Netns.call("/run/netns/" + ns.name, Ctnetlink::new)) {
            Tuple[] t = new Tuple[n];
            for (int i = 0; i < n; i++) {
                t[i] = new Tuple(6, ip("198.18.30.3"), ip("198.18.20." + (2 + i / 1000)), 20000 + i % 1000, 80);
            }
            double[][][] us = new double[sizes.length][4][rounds]; // [size][create wall, create cpu, delete wall, delete cpu][round]
            for (int round = -1; round < rounds; round++) { // round -1 warms the JIT up
                for (int k = 0; k < sizes.length; k++) {
                    int s = (k + Math.max(round, 0)) % sizes.length;
                    long w0 = System.nanoTime();
                    long c0 = mx.getCurrentThreadCpuTime();
                    run(ct, t, sizes[s], true);
                    long w1 = System.nanoTime();
                    long c1 = mx.getCurrentThreadCpuTime();
                    run(ct, t, sizes[s], false);
                    long w2 = System.nanoTime();
                    long c2 = mx.getCurrentThreadCpuTime();
                    assertEquals(0, ct.dump(Native.AF_INET).size());
                    if (round >= 0) {
                        us[s][0][round] = (w1 - w0) / 1e3 / n;
                        us[s][1][round] = (c1 - c0) / 1e3 / n;
                        us[s][2][round] = (w2 - w1) / 1e3 / n;
                        us[s][3][round] = (c2 - c1) / 1e3 / n;
                    }
                }
            }
            StringBuilder line = new StringBuilder("ctnetlink, " + n + " entries, medians of " + rounds
                    + " rounds (shared 2-core machine), us per request wall/cpu:");
            for (int s = 0; s < sizes.length; s++) {
                line.append(String.format(" %s: create %.1f/%.1f, delete %.1f/%.1f;", sizes[s] == 1 ? "one at a time"
                        : "batches of " + sizes[s], median(us[s][0]), median(us[s][1]), median(us[s][2]), median(us[s][3])));
            }
            System.out.println(line);
        }
    }

    private static double median(double[] v) {
        double[] c = v.clone();
        java.util.Arrays.sort(c);
        return c[c.length / 2];
    }

    /** Every tuple of {@code t} created (or deleted), one request at a time or in batches of {@code size}. */
    private static void run(Ctnetlink ct, Tuple[] t, int size, boolean create) throws Exception {
        if (size > 1) {
            batches(ct, t, size, create);
            return;
        }
        for (Tuple x : t) {
            assertTrue(create ? ct.createExclusive(x, x.reversed(), 60, Ctnetlink.TCP_CONNTRACK_ESTABLISHED, 1, FIXED)
                    : ct.delete(x));
        }
    }

    private static void batches(Ctnetlink ct, Tuple[] t, int size, boolean create) {
        Ctnetlink.Batch b = ct.batch();
        for (int from = 0; from < t.length; from += size) {
            b.begin();
            for (int i = from; i < Math.min(t.length, from + size); i++) {
                if (create) {
                    b.create(t[i], t[i].reversed(), 60, Ctnetlink.TCP_CONNTRACK_ESTABLISHED, 1, FIXED);
                } else {
                    b.delete(t[i]);
                }
            }
            b.send();
            for (int i = 0; i < b.size(); i++) {
                assertEquals(0, b.answer(i), (create ? "create " : "delete ") + t[from + i] + ", request " + i + " of " + b.size()
                        + " from " + from);
            }
        }
    }
}
