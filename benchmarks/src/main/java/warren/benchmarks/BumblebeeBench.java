package warren.benchmarks;

import java.lang.management.ManagementFactory;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import warren.bumblebee.onramp.OnRamp;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Status;
import warren.control.v1.Upgrade;
import warren.daemon.Daemon;
import warren.daemon.DaemonSpec;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.config.Config;
import warren.fdpass.Fd;
import warren.fdpass.epoll.Epoll;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;
import warren.linux.net.Netns;
import warren.netns.ip.IpNetns;
import warren.packet.Checksum;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.PacketView;
import warren.splicer.client.SplicerClient;

/**
 * Bumblebee side by side with pasta, in private namespaces made here and removed at the end:
 * <ul>
 *   <li>bulk TCP (iperf3, 5 s) from an on-ramp client namespace through Bumblebee, its upgraded
 *       socket spliced by Splicer to an iperf3 server, at MTU 1500 and 65520; and through pasta at
 *       the same MTU (pasta in the server's namespace, iperf3 client in pasta's namespace);</li>
 *   <li>upgrades per second and upgrade latency (first SYN in to Upgraded out) with 1 and 1,000
 *       flows at once, handshakes made by hand on flow sockets;</li>
 *   <li>bytes allocated on Bumblebee's loop thread per packet during the bulk run.</li>
 * </ul>
 * {@code --threads LIST} (default 1,N; see {@link BenchThreads}): Bumblebee's figures once per
 * value, each from its own daemon with {@code threads = T}; pasta's once.
 * A benchmark, not a test: it prints a table.
 */
public final class BumblebeeBench {
    private BumblebeeBench() {}

    private static final boolean DEBUG = Boolean.getBoolean("bench.debug");
    private static final IpNetns NETNS = new IpNetns("wb-bb-");

    public static void main(String[] args) throws Exception {
        int seconds = 5;
        int runs = 3;
        boolean skipBulk = false;
        int[] threads = BenchThreads.parse(BenchThreads.DEFAULT);
        int streams = 0; // > 0: Bumblebee alone at each thread count with this many iperf3 streams
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--seconds": seconds = Integer.parseInt(args[++i]); break;
                case "--runs": runs = Integer.parseInt(args[++i]); break;
                case "--skip-bulk": skipBulk = true; break;
                case "--threads": threads = BenchThreads.parse(args[++i]); break;
                case "--streams": streams = Integer.parseInt(args[++i]); break;
                default:
                    System.err.println("bench bumblebee: unknown option '" + args[i] + "'");
                    System.exit(2);
            }
        }
        try {
            for (int t : threads) { // before any namespace exists: a build without the key runs 1 only
                BenchThreads.configLine(Daemon.configKeys(warren.bumblebee.Main.spec()), t);
            }
        } catch (IllegalArgumentException e) {
            System.err.println("bench bumblebee: " + e.getMessage());
            System.exit(2);
        }
        try {
            if (streams > 0) {
                runThreads(seconds, runs, threads, streams);
            } else {
                run(seconds, runs, skipBulk, threads);
            }
        } finally {
            NETNS.cleanup();
        }
        System.exit(0);
    }






    private static double gbps(String iperfJson) {
        int at = iperfJson.indexOf("\"sum_received\"");
        if (at < 0) {
            return Double.NaN;
        }
        int b = iperfJson.indexOf("\"bits_per_second\":", at);
        return Double.parseDouble(iperfJson.substring(b + 18).trim().split("[,\\s}]")[0]) / 1e9;
    }

    private static Thread serve(Daemon d) {
        Thread t = new Thread(() -> {
            try {
                d.run();
            } catch (Exception e) {
                e.printStackTrace();
            }
        }, d.name() + "-loop");
        t.start();
        return t;
    }

    /**
     * Bulk TCP at MTU 1500 with {@code streams} parallel iperf3 streams (flows) through Bumblebee at
     * each thread count: its flows spread over the loops (each loop a TUN queue and a share of the
     * slots). The on-ramp simulator's pump and the Splicer that relays the upgraded sockets to the
     * server run in the same process on the same cores.
     */
    private static void runThreads(int seconds, int runs, int[] threads, int streams) throws Exception {
        Path tmp = Files.createTempDirectory("warren-bench-bb");
        tmp.toFile().deleteOnExit(); // empty by then: each daemon removes its socket when it stops
        String srv = NETNS.add("srv");
        Process iperfServer = IpNetns.start(srv, "iperf3", "-s", "-B", "127.0.0.1", "-p", "5201");
        Thread.sleep(500);
        Splicer splicer = new Splicer(tmp, threads);
        double[][] bb = new double[threads.length][runs];
        for (int t = 0; t < threads.length; t++) {
            String client = NETNS.add("client" + t);
            DaemonSpec spec = warren.bumblebee.Main.spec();
            Path sock = tmp.resolve("bbt" + t + ".sock");
            Daemon d = Daemon.start(spec, sock, Config.parse("audit.path = /dev/null\nthreads = " + threads[t]
                    + "\nbumblebee.close_linger = 100ms\n", Daemon.configKeys(spec), "bench"));
            Thread loop = serve(d);
            try (ControlClient c = ControlClient.connect(sock);
                    OnRamp ramp = new OnRamp(client, 1500, c, r -> splicer.relay(r, srv))) {
                for (int r = 0; r < runs; r++) {
                    bb[t][r] = gbps(IpNetns.exec(client, "iperf3", "-c", "198.18.99.9", "-p", "5201", "-P", "" + streams,
                            "-t", "" + seconds, "-J"));
                    System.err.printf("threads %d run %d: bumblebee %.2f Gbit/s%n", threads[t], r + 1, bb[t][r]);
                }
            } finally {
                d.shutdown();
                loop.join(10_000);
            }
        }
        splicer.close();
        iperfServer.destroy();
        System.out.printf("Bumblebee by event loops, %s, %d cores, kernel %s, %d runs of %d s (median, min-max),"
                + " bulk TCP at MTU 1500, %d iperf3 streams%n", java.time.LocalDate.now(),
                Runtime.getRuntime().availableProcessors(), Files.readString(Path.of("/proc/sys/kernel/osrelease")).strip(),
                runs, seconds, streams);
        for (int t = 0; t < threads.length; t++) {
            System.out.printf("threads = %d: %s Gbit/s, %.2fx threads = %d%n", threads[t], fmt(bb[t]),
                    median(bb[t]) / median(bb[0]), threads[0]);
        }
    }

    private static void run(int seconds, int runs, boolean skipBulk, int[] threads) throws Exception {
        Path tmp = Files.createTempDirectory("warren-bench-bb");
        tmp.toFile().deleteOnExit(); // empty by then: each daemon removes its socket when it stops
        String srv = NETNS.add("srv");
        Process iperfServer = IpNetns.start(srv, "iperf3", "-s", "-B", "127.0.0.1", "-p", "5201");
        // pasta: its host side is a namespace with a veth and a default route to a peer namespace
        String pastaHost = NETNS.add("pasta-host");
        String pastaPeer = NETNS.add("pasta-peer");
        IpNetns.sh("ip", "-n", pastaHost, "link", "add", "pv0", "type", "veth", "peer", "name", "pv1", "netns", pastaPeer);
        IpNetns.sh("ip", "-n", pastaHost, "addr", "add", "198.18.77.1/24", "dev", "pv0");
        IpNetns.sh("ip", "-n", pastaHost, "link", "set", "pv0", "up");
        IpNetns.sh("ip", "-n", pastaPeer, "addr", "add", "198.18.77.2/24", "dev", "pv1");
        IpNetns.sh("ip", "-n", pastaPeer, "link", "set", "pv1", "up");
        IpNetns.sh("ip", "-n", pastaHost, "route", "add", "default", "via", "198.18.77.2", "dev", "pv0");
        Process pastaIperf = IpNetns.start(pastaHost, "iperf3", "-s", "-B", "198.18.77.1", "-p", "5201");
        Thread.sleep(500);
        Splicer splicer = new Splicer(tmp, threads);
        List<String> rows = new ArrayList<>();
        int nt = threads.length;
        double[][][] bb = new double[nt][2][runs];
        double[][] pa = new double[2][runs];
        double allocPerPacket = Double.NaN;
        int[] mtus = {1500, 65520};
        for (int m = 0; m < (skipBulk ? 0 : 2); m++) {
            int mtu = mtus[m];
            for (int t = 0; t < nt; t++) {
                String client = NETNS.add("client" + mtu + "t" + threads[t]);
                DaemonSpec spec = warren.bumblebee.Main.spec();
                Path sock = tmp.resolve("bb" + mtu + "t" + threads[t] + ".sock");
                Daemon d = Daemon.start(spec, sock, Config.parse("audit.path = /dev/null\n"
                        + "bumblebee.mtu = " + mtu + "\nbumblebee.close_linger = 100ms\n"
                        + BenchThreads.configLine(Daemon.configKeys(spec), threads[t]), Daemon.configKeys(spec), "bench"));
                Thread loop = serve(d);
                try (ControlClient c = ControlClient.connect(sock);
                        OnRamp ramp = new OnRamp(client, mtu, c, r -> splicer.relay(r, srv))) {
                    com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
                    for (int r = 0; r < runs; r++) {
                        long a0 = mx.getThreadAllocatedBytes(loop.getId());
                        long p0 = packets(c);
                        bb[t][m][r] = gbps(IpNetns.exec(client, "iperf3", "-c", "198.18.99.9", "-p", "5201", "-t",
                                "" + seconds, "-J"));
                        if (mtu == 1500 && r == runs - 1 && t == 0) { // the thread that runs the daemon's (first) loop
                            allocPerPacket = (double) (mx.getThreadAllocatedBytes(loop.getId()) - a0) / (packets(c) - p0);
                        }
                        if (t == 0) {
                            pa[m][r] = gbps(IpNetns.exec(pastaHost, "pasta", "--runas", "0", "-4", "--config-net", "-m",
                                    "" + mtu, "-a", "198.18.78.2", "-n", "24", "-g", "198.18.78.1", "--", "iperf3", "-c",
                                    "198.18.77.1", "-p", "5201", "-t", "" + seconds, "-J"));
                        }
                        System.err.printf("MTU %d run %d: bumblebee threads=%d %.2f, pasta %.2f Gbit/s%n", mtu, r + 1,
                                threads[t], bb[t][m][r], pa[m][r]);
                    }
                } finally {
                    d.shutdown();
                    loop.join(10_000);
                }
            }
        }
        // upgrade rate and latency, with handshakes made by hand
        double[][][] up = new double[nt][2][];
        UpgradeBurst.Result[] burst = new UpgradeBurst.Result[nt];
        for (int t = 0; t < nt; t++) {
            DaemonSpec spec = warren.bumblebee.Main.spec();
            Path sock = tmp.resolve("bbu" + threads[t] + ".sock");
            Daemon d = Daemon.start(spec, sock, Config.parse("audit.path = /dev/null\n"
                    + "bumblebee.slots = 30000\nbumblebee.quarantine = 100ms\nbumblebee.close_linger = 10ms\n"
                    + BenchThreads.configLine(Daemon.configKeys(spec), threads[t]), Daemon.configKeys(spec), "bench"));
            Thread loop = serve(d);
            try (ControlClient c = ControlClient.connect(sock)) {
                System.err.println("upgrades, threads=" + threads[t] + ": warm-up");
                upgrades(c, 1, 200); // warm-up
                System.err.println("upgrades, threads=" + threads[t] + ": 1 at a time");
                up[t][0] = upgrades(c, 1, 2000);
                upgrades(c, 1000, 1000); // warm-up
                up[t][1] = upgrades(c, 1000, 3000);
                System.err.println("upgrades, threads=" + threads[t] + ": 1,000 at once, SYN-ACKs answered as they come");
                UpgradeBurst.run(c, 1000, 1000); // warm-up
                burst[t] = UpgradeBurst.run(c, 1000, 5000);
            } finally {
                d.shutdown();
                loop.join(10_000);
            }
        }
        splicer.close();
        iperfServer.destroy();
        pastaIperf.destroy();

        System.out.printf("Bumblebee and pasta, %s, %d cores, kernel %s, %d runs of %d s (median, min-max)%n",
                java.time.LocalDate.now(), Runtime.getRuntime().availableProcessors(),
                Files.readString(Path.of("/proc/sys/kernel/osrelease")).strip(), runs, seconds);
        for (int m = 0; m < (skipBulk ? 0 : 2); m++) {
            System.out.printf("bulk TCP, MTU %5d: pasta %s Gbit/s%n", mtus[m], fmt(pa[m]));
            for (int t = 0; t < nt; t++) {
                System.out.printf("bulk TCP, MTU %5d: Bumblebee threads=%d %s Gbit/s, / pasta %.2fx%s%n", mtus[m],
                        threads[t], fmt(bb[t][m]), median(bb[t][m]) / median(pa[m]), t == 0 ? ""
                        : String.format(", / threads=%d %.2fx (target >= 1.6 at 2 threads)", threads[0],
                                median(bb[t][m]) / median(bb[0][m])));
            }
        }
        for (int t = 0; t < nt; t++) {
            System.out.printf("upgrades, threads=%d, 1 at a time:   %.0f/s, latency p50 %.0f us, p99 %.0f us%n", threads[t],
                    up[t][0][0], up[t][0][1], up[t][0][2]);
            System.out.printf("upgrades, threads=%d, 1,000 at once: %.0f/s, latency p50 %.0f us, p99 %.0f us%n",
                    threads[t], up[t][1][0], up[t][1][1], up[t][1][2]);
            System.out.printf("upgrades, threads=%d, 1,000 at once, SYN-ACKs answered as they arrive: %s%n", threads[t], burst[t]);
        }
        System.out.printf("loop-thread allocation during the MTU 1500 bulk run (threads=%d): %.3f bytes per packet%n",
                threads[0], allocPerPacket);
    }

    private static long packets(ControlClient c) throws Exception {
        try (Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of()).get(5, TimeUnit.SECONDS)) {
            var m = r.response().getStatus().getCountersMap();
            return m.getOrDefault("packets.flow_to_kernel", 0L) + m.getOrDefault("packets.kernel_to_flow", 0L);
        }
    }

    private static double median(double[] v) {
        double[] s = v.clone();
        java.util.Arrays.sort(s);
        return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    }

    private static String fmt(double[] v) {
        double[] s = v.clone();
        java.util.Arrays.sort(s);
        return String.format("%.2f (%.2f-%.2f)", median(v), s[0], s[s.length - 1]);
    }

    /** Splices each upgraded socket to a new connection to the iperf3 server in {@code ns}. */
    private static final class Splicer implements AutoCloseable {
        final Daemon daemon;
        final Thread loop;
        final SplicerClient client;

        /** With the most threads of the list: the relay behind Bumblebee should not be what limits it. */
        Splicer(Path tmp, int[] threads) throws Exception {
            DaemonSpec spec = warren.splicer.Main.spec();
            daemon = Daemon.start(spec, tmp.resolve("splicer.sock"), Config.parse("audit.path = /dev/null\n"
                    + BenchThreads.configLine(Daemon.configKeys(spec), java.util.Arrays.stream(threads).max().getAsInt()),
                    Daemon.configKeys(spec), "bench"));
            loop = serve(daemon);
            client = SplicerClient.connect(tmp.resolve("splicer.sock"));
        }

        void relay(Reply r, String ns) {
            try (r; Fd s = r.takeFd(r.response().getUpgraded().getFdSocket());
                    Fd u = Netns.call("/run/netns/" + ns, () -> TcpSockets.connect(
                            new InetSocketAddress(InetAddress.getLoopbackAddress(), 5201)))) {
                client.splice(s, u, null, null, null).whenComplete((res, e) -> {
                    if (res != null) {
                        res.close();
                    }
                });
            } catch (Exception e) {
                e.printStackTrace();
            }
        }

        @Override
        public void close() throws Exception {
            client.close();
            daemon.shutdown();
            loop.join(10_000);
        }
    }

    /**
     * {@code total} upgrades, {@code concurrency} at a time: each sends a SYN on a fresh flow, answers
     * the kernel's SYN-ACK with an ACK and waits for Upgraded. Returns {per second, p50 us, p99 us}.
     */
    private static double[] upgrades(ControlClient c, int concurrency, int total) throws Exception {
        List<Double> lat = new ArrayList<>();
        long t0 = System.nanoTime();
        int port = 1024;
        Pointer p = Native.allocate(256);
        ByteBuffer bb = ByteBuffer.allocate(256);
        PacketView view = new PacketView();
        FlowKey key = new FlowKey();
        try (Epoll ep = new Epoll(1024)) {
            for (int done = 0; done < total; done += concurrency) {
                int n = Math.min(concurrency, total - done);
                Fd[] flows = new Fd[n];
                long[] sent = new long[n];
                List<CompletableFuture<Reply>> answers = new ArrayList<>();
                long[] answered = new long[n];
                for (int i = 0; i < n; i++) {
                    int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
                    flows[i] = Fd.adopt(sv[0]);
                    final int k = i;
                    try (Fd theirs = Fd.adopt(sv[1])) {
                        CompletableFuture<Reply> f = c.call(Request.newBuilder().setUpgrade(Upgrade.newBuilder().setFdFlow(0)),
                                List.of(theirs));
                        f.thenRun(() -> answered[k] = System.nanoTime());
                        answers.add(f);
                    }
                    port = port >= 65000 ? 1024 : port + 1;
                    byte[] syn = segment(0x02, 1000, 0, port);
                    p.put(0, syn, 0, syn.length);
                    sent[i] = System.nanoTime();
                    Native.send(flows[i].get(), p, syn.length, Native.MSG_NOSIGNAL);
                    ep.add(flows[i].get(), Native.EPOLLIN, i);
                }
                int acked = 0;
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                while (acked < n && System.nanoTime() < deadline) {
                    int ready = ep.await(100);
                    for (int e = 0; e < ready; e++) {
                        int i = (int) ep.data(e);
                        long len = Native.recv(flows[i].get(), p, 256, Native.MSG_DONTWAIT);
                        if (DEBUG) {
                            System.err.println("flow " + i + ": " + len + " bytes");
                        }
                        if (len <= 0) {
                            continue;
                        }
                        byte[] got = new byte[(int) len];
                        p.get(0, got, 0, got.length);
                        bb.clear();
                        bb.put(0, got);
                        DropReason why = view.parse(bb, 0, (int) len, key);
                        if (DEBUG) {
                            System.err.println("  " + why + " " + key + " flags " + (why == DropReason.NONE ? view.tcpFlags() : -1));
                        }
                        if (why != DropReason.NONE || (view.tcpFlags() & 0x12) != 0x12) {
                            continue;
                        }
                        long y = bb.getInt(view.l4Offset() + 4) & 0xFFFFFFFFL;
                        byte[] ack = segment(0x10, 1001, y + 1, key.dstPort);
                        p.put(0, ack, 0, ack.length);
                        Native.send(flows[i].get(), p, ack.length, Native.MSG_NOSIGNAL);
                        ep.remove(flows[i].get());
                        acked++;
                    }
                }
                for (int i = 0; i < n; i++) {
                    try (Reply r = answers.get(i).get(30, TimeUnit.SECONDS)) {
                        if (r.response().getBodyCase() == Response.BodyCase.UPGRADED) {
                            r.takeFd(0).close();
                        }
                    }
                    lat.add((answered[i] - sent[i]) / 1000.0);
                    flows[i].close();
                }
            }
        }
        double secs = (System.nanoTime() - t0) / 1e9;
        Collections.sort(lat);
        return new double[] {total / secs, lat.get(lat.size() / 2), lat.get((int) (lat.size() * 0.99))};
    }

    /** A TCP segment 198.18.50.1:port -> 198.18.99.9:80. */
    private static byte[] segment(int flags, long seq, long ack, int port) {
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
