package warren.benchmarks;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Upgrade;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.fdpass.Fd;
import warren.fdpass.epoll.Epoll;
import warren.fdpass.libc.Native;
import warren.packet.Checksum;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.PacketView;

/**
 * Bumblebee's upgrade driver: {@code total} TCP upgrades, {@code concurrency} at a time, the
 * handshakes made by hand on fresh flow sockets (a SEQPACKET socketpair each; the far end goes to
 * Bumblebee in {@code Upgrade}). Per flow: Upgrade sent, then the SYN; the kernel's SYN-ACK is
 * answered with an ACK by a second thread as soon as it arrives, so the driver's own sending of a
 * burst does not delay the handshakes it already started (the earlier driver sent all 1,000 SYNs
 * before reading any SYN-ACK, which put its own sending time into every flow's latency).
 *
 * <p>Latency: the SYN's send to the {@code Upgraded} answer's arrival (the control client's
 * reader thread). Also reported: how long the driver took to send a burst (its arrival rate), so
 * a reader can tell queueing in Bumblebee from the driver's pace.
 */
final class UpgradeBurst {
    /**
     * Upgrades per second, latency p50/p90/p99/max (us), mean time to send one flow's request + SYN
     * (us), and each busy thread's CPU time per upgrade (us, this JVM's threads by name).
     */
    record Result(double perSecond, double p50, double p90, double p99, double max, double sendMicros,
            java.util.Map<String, Double> cpuMicros, java.util.Map<String, Double> allocBytes, String daemonLatency) {
        @Override
        public String toString() {
            StringBuilder cpu = new StringBuilder();
            cpuMicros.forEach((k, v) -> cpu.append(cpu.length() == 0 ? "" : ", ").append(String.format("%s %.1f", k, v)));
            StringBuilder alloc = new StringBuilder();
            allocBytes.forEach((k, v) -> alloc.append(alloc.length() == 0 ? "" : ", ").append(String.format("%s %.0f", k, v)));
            return String.format("%,.0f/s, latency p50 %.0f us, p90 %.0f us, p99 %.0f us, max %.0f us"
                    + " (driver: %.1f us to send one flow's Upgrade and SYN; CPU us per upgrade: %s; bytes allocated"
                    + " per upgrade: %s); the daemon's upgrade_latency (Upgrade received to Upgraded, tcp): %s",
                    perSecond, p50, p90, p99, max, sendMicros, cpu, alloc, daemonLatency);
        }
    }

    /** Bytes allocated by every live thread of this JVM, by name (equal names summed). */
    static java.util.Map<String, Long> threadAlloc() {
        com.sun.management.ThreadMXBean mx =
                (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory.getThreadMXBean();
        java.util.Map<String, Long> m = new java.util.TreeMap<>();
        for (long id : mx.getAllThreadIds()) {
            java.lang.management.ThreadInfo ti = mx.getThreadInfo(id);
            long b = mx.getThreadAllocatedBytes(id);
            if (ti != null && b > 0) {
                m.merge(ti.getThreadName(), b, Long::sum);
            }
        }
        return m;
    }

    /**
     * The daemon's own histogram warren_upgrade_latency_seconds{protocol="tcp"} (Metrics: Status
     * carries counters only), cumulative counts by upper bound ("le"), in order.
     */
    static java.util.Map<String, Long> daemonLatency(ControlClient c) throws Exception {
        java.util.Map<String, Long> m = new java.util.LinkedHashMap<>();
        try (Reply r = c.call(Request.newBuilder().setMetrics(warren.control.v1.Metrics.getDefaultInstance()), List.of())
                .get(10, TimeUnit.SECONDS)) {
            if (r.response().getBodyCase() != Response.BodyCase.METRICS) {
                return m;
            }
            for (String line : r.response().getMetrics().getText().split("\n")) {
                if (line.startsWith("warren_upgrade_latency_seconds_bucket{") && line.contains("protocol=\"tcp\"")) {
                    int le = line.indexOf("le=\"") + 4;
                    m.put(line.substring(le, line.indexOf('"', le)), Long.parseLong(line.substring(line.lastIndexOf(' ') + 1)));
                }
            }
        }
        return m;
    }

    /** The share of the run's upgrades within each bound of the daemon's histogram, e.g. "<= 0.01 s 97.1%". */
    static String latencyShares(java.util.Map<String, Long> before, java.util.Map<String, Long> after) {
        Long all = after.get("+Inf");
        if (all == null) {
            return "not reported";
        }
        long total = all - before.getOrDefault("+Inf", 0L);
        StringBuilder sb = new StringBuilder();
        after.forEach((le, n) -> {
            if (!le.equals("+Inf")) {
                sb.append(sb.length() == 0 ? "" : ", ").append(String.format("<= %s s %.1f%%", le,
                        total == 0 ? 0.0 : 100.0 * (n - before.getOrDefault(le, 0L)) / total));
            }
        });
        return sb.append(String.format(" of %d", total)).toString();
    }

    /** CPU time (ns) of every live thread of this JVM, by name (equal names summed). */
    static java.util.Map<String, Long> threadCpu() {
        java.lang.management.ThreadMXBean mx = java.lang.management.ManagementFactory.getThreadMXBean();
        java.util.Map<String, Long> m = new java.util.TreeMap<>();
        for (long id : mx.getAllThreadIds()) {
            java.lang.management.ThreadInfo ti = mx.getThreadInfo(id);
            long ns = mx.getThreadCpuTime(id);
            if (ti != null && ns > 0) {
                m.merge(ti.getThreadName(), ns, Long::sum);
            }
        }
        return m;
    }

    /** Threads that used at least 1 us per upgrade between two {@link #threadCpu} samples, busiest first. */
    static java.util.Map<String, Double> perUpgrade(java.util.Map<String, Long> before, java.util.Map<String, Long> after,
            int upgrades) {
        java.util.Map<String, Double> m = new java.util.LinkedHashMap<>();
        after.entrySet().stream()
                .map(e -> java.util.Map.entry(e.getKey(), (e.getValue() - before.getOrDefault(e.getKey(), 0L)) / 1000.0 / upgrades))
                .filter(e -> e.getValue() >= 1.0)
                .sorted((a, b) -> Double.compare(b.getValue(), a.getValue()))
                .forEach(e -> m.put(e.getKey(), e.getValue()));
        return m;
    }

    private UpgradeBurst() {}

    static Result run(ControlClient c, int concurrency, int total) throws Exception {
        double[] lat = new double[total];
        int filled = 0;
        long sendNanos = 0;
        int port = 1024;
        java.util.Map<String, Long> hist0 = daemonLatency(c);
        java.util.Map<String, Long> alloc0 = threadAlloc();
        java.util.Map<String, Long> cpu0 = threadCpu();
        long t0 = System.nanoTime();
        for (int done = 0; done < total; done += concurrency) {
            int n = Math.min(concurrency, total - done);
            Fd[] flows = new Fd[n];
            long[] sent = new long[n];
            long[] answered = new long[n];
            List<CompletableFuture<Reply>> answers = new ArrayList<>(n);
            try (Epoll ep = new Epoll(Math.max(16, n)); Acker acker = new Acker(ep, flows, n)) {
                Pointer p = Native.allocate(64);
                long s0 = System.nanoTime();
                for (int i = 0; i < n; i++) {
                    int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
                    flows[i] = Fd.adopt(sv[0]);
                    synchronized (ep) { // Epoll's control buffer is shared: the acker removes meanwhile
                        ep.add(sv[0], Native.EPOLLIN, i); // before the SYN: the acker sees the SYN-ACK
                    }
                    final int k = i;
                    try (Fd theirs = Fd.adopt(sv[1])) {
                        CompletableFuture<Reply> f = c.call(Request.newBuilder().setUpgrade(Upgrade.newBuilder().setFdFlow(0)),
                                List.of(theirs));
                        answers.add(f.whenComplete((r, e) -> answered[k] = System.nanoTime()));
                    }
                    port = port >= 65000 ? 1024 : port + 1;
                    byte[] syn = segment(0x02, 1000, 0, port);
                    p.put(0, syn, 0, syn.length);
                    sent[i] = System.nanoTime();
                    Native.send(sv[0], p, syn.length, Native.MSG_NOSIGNAL);
                }
                sendNanos += System.nanoTime() - s0;
                for (int i = 0; i < n; i++) {
                    try (Reply r = answers.get(i).get(30, TimeUnit.SECONDS)) {
                        if (r.response().getBodyCase() != Response.BodyCase.UPGRADED) {
                            throw new IllegalStateException("upgrade " + i + ": " + r.response());
                        }
                        r.takeFd(0).close();
                    }
                    lat[filled++] = (answered[i] - sent[i]) / 1000.0;
                }
            } finally {
                for (Fd f : flows) {
                    if (f != null) {
                        f.close();
                    }
                }
            }
        }
        double secs = (System.nanoTime() - t0) / 1e9;
        java.util.Map<String, Double> cpu = perUpgrade(cpu0, threadCpu(), total);
        java.util.Map<String, Double> alloc = perUpgrade(alloc0, threadAlloc(), total);
        alloc.replaceAll((k, v) -> v * 1000); // perUpgrade divides by 1000 (ns to us)
        String hist = latencyShares(hist0, daemonLatency(c));
        Arrays.sort(lat, 0, filled);
        return new Result(total / secs, lat[filled / 2], lat[(int) (filled * 0.90)], lat[(int) (filled * 0.99)],
                lat[filled - 1], sendNanos / 1000.0 / total, cpu, alloc, hist);
    }

    /** Answers each flow's SYN-ACK with an ACK as it arrives (its own thread). */
    private static final class Acker implements AutoCloseable {
        private final Thread thread;
        private volatile boolean running = true;
        private volatile Throwable failed;

        Acker(Epoll ep, Fd[] flows, int n) {
            thread = new Thread(() -> {
                Pointer p = Native.allocate(256);
                ByteBuffer bb = ByteBuffer.allocate(256);
                PacketView view = new PacketView();
                FlowKey key = new FlowKey();
                int acked = 0;
                try {
                    while (running && acked < n) {
                        int ready = ep.await(50);
                        for (int e = 0; e < ready; e++) {
                            long d = ep.data(e);
                            if (d == Epoll.WAKEUP) {
                                continue;
                            }
                            int i = (int) d;
                            int fd = flows[i].get();
                            long len = Native.recv(fd, p, 256, Native.MSG_DONTWAIT);
                            if (len <= 0) {
                                continue;
                            }
                            byte[] got = new byte[(int) len];
                            p.get(0, got, 0, got.length);
                            bb.clear();
                            bb.put(0, got);
                            DropReason why = view.parse(bb, 0, (int) len, key);
                            if (why != DropReason.NONE || (view.tcpFlags() & 0x12) != 0x12) {
                                continue;
                            }
                            long y = bb.getInt(view.l4Offset() + 4) & 0xFFFFFFFFL;
                            byte[] ack = segment(0x10, 1001, y + 1, key.dstPort);
                            p.put(0, ack, 0, ack.length);
                            Native.send(fd, p, ack.length, Native.MSG_NOSIGNAL);
                            synchronized (ep) {
                                ep.remove(fd);
                            }
                            acked++;
                        }
                    }
                } catch (Throwable t) {
                    failed = t;
                }
            }, "bench-acker");
            thread.setDaemon(true);
            thread.start();
        }

        @Override
        public void close() throws Exception {
            running = false;
            thread.join(10_000);
            if (failed != null) {
                throw new IllegalStateException("acker failed", failed);
            }
        }
    }

    /** A TCP segment 198.18.50.1:port -> 198.18.99.9:80. */
    static byte[] segment(int flags, long seq, long ack, int port) {
        ByteBuffer b = ByteBuffer.allocate(40);
        b.put(0, (byte) 0x45).putShort(2, (short) 40).put(6, (byte) 0x40).put(8, (byte) 64).put(9, (byte) 6);
        b.put(12, new byte[] {(byte) 198, 18, 50, 1}).put(16, new byte[] {(byte) 198, 18, 99, 9});
        b.putShort(20, (short) port).putShort(22, (short) 80).putInt(24, (int) seq).putInt(28, (int) ack);
        b.put(32, (byte) 0x50).put(33, (byte) flags).putShort(34, (short) 65535);
        b.putShort(10, (short) Checksum.finish(Checksum.sum(b, 0, 20)));
        PacketView v = new PacketView();
        v.parse(b, 0, 40, new FlowKey());
        v.fixChecksums();
        return b.array();
    }
}
