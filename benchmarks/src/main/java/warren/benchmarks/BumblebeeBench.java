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
import java.util.Map;
import java.util.Set;
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
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.PacketView;
import warren.splicer.client.SplicerClient;

/**
 * Bumblebee side by side with pasta, in private namespaces made here and removed at the end:
 * <ul>
 *   <li>bulk TCP (one iperf3 stream, {@code --seconds} per run, default 5) at MTU 1500 and 65520,
 *       {@code --runs} (default 10) per path, interleaved: pasta, then Bumblebee at each thread
 *       count, in turn. Each run's rate, retransmitted segments (iperf3's sum_sent.retransmits) and
 *       CPU seconds per GB of every part of the path (/proc utime + stime): the iperf3 client and
 *       server, and the relay (pasta's process; the on-ramp pump thread, Bumblebee's loop threads,
 *       Splicer's loop threads and the rest of this JVM). The table gives the median and the
 *       interquartile range (p25-p75) and the ratio of medians per MTU and thread count;</li>
 *   <li>upgrades per second and upgrade latency (first SYN in to Upgraded out) with 1 and 1,000
 *       flows at once, handshakes made by hand on flow sockets;</li>
 *   <li>bytes allocated on Bumblebee's loop thread per packet during the bulk run.</li>
 * </ul>
 *
 * <p>The two paths, both namespace -> a TUN/tap -> userspace -> a kernel socket -> an iperf3
 * server on 127.0.0.1: Bumblebee's, iperf3 in an on-ramp client namespace whose default route is
 * a TUN, a pump (a thread here, standing in for the front proxy) sending each packet on a flow
 * socket to Bumblebee, Bumblebee's kernel TCP in its namespace, the upgraded socket spliced by
 * Splicer to the server; pasta's, its tap path as its documentation runs a namespace, the iperf3
 * client in pasta's namespace connecting to the gateway address, which pasta maps to the host's
 * loopback ({@link PastaPeer}). pasta's splice path (a connection to the namespace's own loopback,
 * forwarded with -T) is not measured: it has no tap, and Bumblebee's path has a TUN. Bumblebee's
 * path has hops pasta's does not (the pump, the flow socket, Splicer's relay): their CPU is
 * printed beside the rate.
 *
 * <p>Placement ({@code --pin on|off}, default on; {@link CpuPlacement}): the iperf3 server on the
 * first CPU, the client on the last, for both paths; pasta (one process) on the server's CPU, where
 * its runs hold still (off a CPU shared with the server they were bimodal, 0.02-10 Gbit/s, through
 * losses inside pasta: see {@link PastaPeer}); the JVM's threads where the scheduler puts them.
 * iperf3's window at MTU 1500 is the one passt's own tap-path test uses there (-w 512k), for both.
 *
 * <p>{@code --threads LIST} (default 1,N; see {@link BenchThreads}): Bumblebee's figures once per
 * value, each from its own daemon with {@code threads = T}. {@code --vnet off|on|both} (default
 * on): the on-ramp's flows plain (one packet per message) or declaring {@code Upgrade.vnet_hdr}
 * (onramp0 with IFF_VNET_HDR: the client kernel's TSO super-packets pass whole both ways), or
 * both, each its own Bumblebee variant per thread count. With {@code -Dbench.debug=true} (in
 * WARREN_JAVA_OPTS) each MTU's runs end with every JVM thread's CPU, each Bumblebee's counters,
 * the on-ramp pump's CPU over 1 s without traffic (it should be 0) and the on-ramp TUN's
 * statistics. A benchmark, not a test: it prints a table.
 */
public final class BumblebeeBench {
    private BumblebeeBench() {}

    private static final boolean DEBUG = Boolean.getBoolean("bench.debug");
    private static final IpNetns NETNS = new IpNetns("wb-bb-");

    public static void main(String[] args) throws Exception {
        int seconds = 5;
        int runs = 10; // pasta's runs spread widely: a stable median needs 10 (issue #15)
        boolean skipBulk = false;
        int[] threads = BenchThreads.parse(BenchThreads.DEFAULT);
        int streams = 0; // > 0: Bumblebee alone at each thread count with this many iperf3 streams
        boolean pin = true;
        String vnet = "on";
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--seconds": seconds = Integer.parseInt(args[++i]); break;
                case "--runs": runs = Integer.parseInt(args[++i]); break;
                case "--skip-bulk": skipBulk = true; break;
                case "--threads": threads = BenchThreads.parse(args[++i]); break;
                case "--streams": streams = Integer.parseInt(args[++i]); break;
                case "--pin": pin = onOff(args[++i]); break;
                case "--vnet": // the on-ramp's flows plain (one packet per message), with virtio_net_hdr, or both
                    vnet = args[++i];
                    if (!List.of("off", "on", "both").contains(vnet)) {
                        System.err.println("bench bumblebee: --vnet takes off, on or both, not '" + vnet + "'");
                        System.exit(2);
                    }
                    break;
                case "--window1500": // iperf3's -w at MTU 1500, or "default": iperf3's own
                    String w = args[++i];
                    iperfOptions[0] = w.equals("default") ? new String[0] : new String[] {"-w", w};
                    break;
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
                run(seconds, runs, skipBulk, threads, CpuPlacement.of(pin), vnet);
            }
        } finally {
            NETNS.cleanup();
        }
        System.exit(0);
    }

    /** {@code --pin on|off}. */
    private static boolean onOff(String v) {
        if (!v.equals("on") && !v.equals("off")) {
            System.err.println("bench bumblebee: --pin takes on or off, not '" + v + "'");
            System.exit(2);
        }
        return v.equals("on");
    }

    private static double gbps(String iperfJson) {
        return BulkRun.number(iperfJson, "sum_received", "bits_per_second") / 1e9;
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

    private static void run(int seconds, int runs, boolean skipBulk, int[] threads, CpuPlacement place, String vnet)
            throws Exception {
        Path tmp = Files.createTempDirectory("warren-bench-bb");
        tmp.toFile().deleteOnExit(); // empty by then: each daemon removes its socket when it stops
        String srv = NETNS.add("srv");
        Process iperfServer = IpNetns.start(srv, place.server("iperf3", "-s", "-B", "127.0.0.1", "-p", "5201"));
        PastaPeer.awaitListening(srv, 5201);
        Splicer splicer = new Splicer(tmp, threads);
        int nt = threads.length;
        // Bumblebee's variants: each thread count with plain on-ramp flows, virtio_net_hdr ones, or both
        boolean[] modes = vnet.equals("both") ? new boolean[] {false, true} : new boolean[] {vnet.equals("on")};
        int nv = nt * modes.length;
        int[] vThreads = new int[nv];
        boolean[] vVnet = new boolean[nv];
        for (int k = 0; k < nv; k++) {
            vThreads[k] = threads[k % nt];
            vVnet[k] = modes[k / nt];
        }
        List<List<List<BulkRun>>> bb = new ArrayList<>(); // [variant][MTU] -> runs
        List<List<BulkRun>> pa = new ArrayList<>(); // [MTU] -> runs
        for (int t = 0; t < nv; t++) {
            bb.add(List.of(new ArrayList<>(), new ArrayList<>()));
        }
        double allocPerPacket = Double.NaN;
        if (!skipBulk) {
            try (PastaPeer pasta = new PastaPeer(NETNS, place)) {
                for (int m = 0; m < MTUS.length; m++) {
                    pa.add(new ArrayList<>());
                    allocPerPacket = bulk(m, seconds, runs, vThreads, vVnet, place, tmp, srv, iperfServer, splicer, pasta,
                            pa.get(m), bb, allocPerPacket);
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

        System.out.printf("Bumblebee and pasta, %s, %d cores, kernel %s%n", java.time.LocalDate.now(),
                Runtime.getRuntime().availableProcessors(), Files.readString(Path.of("/proc/sys/kernel/osrelease")).strip());
        if (!skipBulk) {
            report(seconds, runs, vThreads, vVnet, place, pa, bb);
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

    static final int[] MTUS = {1500, 65520};
    /**
     * iperf3's options at each of {@link #MTUS}, the same for both paths: at 1500 the window passt's
     * own test/perf/pasta_tcp gives its tap-path runs at that MTU (without it pasta's 16 MiB window
     * overflows the namespace's 1,000-frame tap queue and its runs stall); at 65520 iperf3's default
     * (that test's {@code -w 8M} assumes net.core.wmem_max = 128 MiB, per passt's test/README.md;
     * with this machine's 4 MiB it measured lower, 2.0-3.1 vs 2.5-6.4 Gbit/s). {@code --window1500
     * SIZE|default} replaces the first.
     */
    private static String[][] iperfOptions = {{"-w", "512k"}, {}};
    /** The relay parts whose CPU a run reports, per path. */
    private static final String[] PASTA_PARTS = {"pasta"};
    private static final String[] BUMBLEBEE_PARTS = {"on-ramp pump", "Bumblebee loops", "Splicer", "other JVM"};

    /** An iperf3 client's command line: one stream, JSON out. */
    static String[] iperfClient(String server, int seconds, String... options) {
        List<String> c = new ArrayList<>(List.of("iperf3", "-c", server, "-p", "5201", "-t", "" + seconds, "-J"));
        c.addAll(List.of(options));
        return c.toArray(String[]::new);
    }

    /**
     * The bulk runs at {@code MTUS[m]}: one pasta and one Bumblebee daemon (with its own on-ramp
     * client namespace) per thread count, then {@code runs} rounds of pasta and each Bumblebee in
     * turn, so that a change in the machine's load falls on every path alike. Returns the
     * loop-thread allocation per packet (measured in the last round at MTU 1500, threads[0]).
     */
    private static double bulk(int m, int seconds, int runs, int[] threads, boolean[] vnet, CpuPlacement place, Path tmp,
            String srv,
            Process iperfServer, Splicer splicer, PastaPeer pasta, List<BulkRun> pa, List<List<List<BulkRun>>> bb,
            double allocPerPacket) throws Exception {
        int mtu = MTUS[m];
        int nt = threads.length;
        pasta.start(NETNS, mtu);
        Daemon[] ds = new Daemon[nt];
        Thread[] loops = new Thread[nt];
        ControlClient[] cs = new ControlClient[nt];
        OnRamp[] ramps = new OnRamp[nt];
        int[][] loopTids = new int[nt][];
        int[][] pumpTids = new int[nt][];
        com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        try {
            for (int t = 0; t < nt; t++) {
                String client = NETNS.add("client" + mtu + "t" + threads[t] + (vnet[t] ? "v" : ""));
                DaemonSpec spec = warren.bumblebee.Main.spec();
                Path sock = tmp.resolve("bb" + mtu + "t" + threads[t] + (vnet[t] ? "v" : "") + ".sock");
                Set<Integer> before = ProcCpu.threads().keySet();
                ds[t] = Daemon.start(spec, sock, Config.parse("audit.path = /dev/null\n"
                        + "bumblebee.mtu = " + mtu + "\nbumblebee.close_linger = 100ms\n"
                        + BenchThreads.configLine(Daemon.configKeys(spec), threads[t]), Daemon.configKeys(spec), "bench"));
                loops[t] = serve(ds[t]);
                loopTids[t] = ProcCpu.newThreads(before, "bumblebee-loop", threads[t]);
                cs[t] = ControlClient.connect(sock);
                before = ProcCpu.threads().keySet();
                ramps[t] = new OnRamp(client, mtu, vnet[t], cs[t], r -> splicer.relay(r, srv));
                pumpTids[t] = ProcCpu.newThreads(before, "onramp-pump", 1);
            }
            for (int r = 0; r < runs; r++) {
                BulkRun p = pasta.run(seconds, iperfOptions[m]);
                pa.add(p);
                System.err.printf("MTU %d run %d: pasta %s%n", mtu, r + 1, line(p, PASTA_PARTS));
                for (int t = 0; t < nt; t++) {
                    long a0 = mx.getThreadAllocatedBytes(loops[t].getId());
                    long p0 = packets(cs[t]);
                    BulkRun b = bumblebeeRun(ramps[t].client, seconds, iperfOptions[m], place, iperfServer.pid(),
                            pumpTids[t], loopTids[t], splicer.tids);
                    bb.get(t).get(m).add(b);
                    if (mtu == 1500 && r == runs - 1 && t == 0) { // the thread that runs the daemon's (first) loop
                        allocPerPacket = (double) (mx.getThreadAllocatedBytes(loops[t].getId()) - a0) / (packets(cs[t]) - p0);
                    }
                    System.err.printf("MTU %d run %d: %s %s%n", mtu, r + 1, label(threads[t], vnet[t]),
                            line(b, BUMBLEBEE_PARTS));
                }
            }
            if (DEBUG) { // what "other JVM" holds: every thread's CPU so far, busiest first
                ProcCpu.threads().entrySet().stream()
                        .map(e -> Map.entry(e.getValue() + " " + e.getKey(), ProcCpu.threads(new int[] {e.getKey()})))
                        .sorted(Map.Entry.comparingByValue(java.util.Comparator.reverseOrder())).limit(15)
                        .forEach(e -> System.err.printf("  thread %s: %.2f CPU-s%n", e.getKey(), e.getValue()));
                for (int t = 0; t < nt; t++) {
                    try (Reply st = cs[t].call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                            .get(5, TimeUnit.SECONDS)) {
                        System.err.printf("  Bumblebee threads=%d counters: %s%n", threads[t],
                                new java.util.TreeMap<>(st.response().getStatus().getCountersMap()));
                    }
                    double idle0 = ProcCpu.threads(pumpTids[t]);
                    Thread.sleep(1000); // no traffic: a pump at rest should use nothing
                    System.err.printf("  on-ramp pump, 1 s without traffic: %.2f CPU-s%n", ProcCpu.threads(pumpTids[t]) - idle0);
                    System.err.printf("  on-ramp TUN (client namespace): %s%n",
                            IpNetns.exec(ramps[t].client, "ip", "-s", "link", "show", "onramp0").replaceAll("\\s+", " "));
                }
            }
        } finally {
            for (int t = nt - 1; t >= 0; t--) {
                if (ramps[t] != null) {
                    ramps[t].close();
                }
                if (cs[t] != null) {
                    cs[t].close();
                }
                if (ds[t] != null) {
                    ds[t].shutdown();
                    loops[t].join(10_000);
                }
            }
        }
        return allocPerPacket;
    }

    /**
     * One iperf3 run from an on-ramp client namespace through Bumblebee and Splicer; the relay
     * parts' CPU is that of the pump thread, Bumblebee's loop threads, Splicer's loop threads and
     * the rest of this JVM (control clients, the idle daemons of other thread counts, GC, JIT).
     */
    private static BulkRun bumblebeeRun(String client, int seconds, String[] options, CpuPlacement place, long serverPid,
            int[] pump, int[] loops, int[] splicerLoops) throws Exception {
        double u0 = ProcCpu.threads(pump);
        double l0 = ProcCpu.threads(loops);
        double s0 = ProcCpu.threads(splicerLoops);
        double j0 = ProcCpu.self();
        double v0 = ProcCpu.process(serverPid);
        String json = IpNetns.exec(client, place.client(iperfClient("198.18.99.9", seconds, options)));
        double u = ProcCpu.threads(pump) - u0;
        double l = ProcCpu.threads(loops) - l0;
        double s = ProcCpu.threads(splicerLoops) - s0;
        double j = ProcCpu.self() - j0;
        return BulkRun.parse(json, ProcCpu.process(serverPid) - v0, new double[] {u, l, s, j - u - l - s});
    }

    /** A run as one line: rate, retransmits, CPU seconds of each part and of the iperf3 ends. */
    private static String line(BulkRun b, String[] parts) {
        StringBuilder s = new StringBuilder(String.format("%.2f Gbit/s, %.0f retransmits, %.2f GB; CPU-s:", b.gbps(),
                b.retransmits(), b.gigabytes()));
        for (int i = 0; i < parts.length; i++) {
            s.append(String.format(" %s %.2f,", parts[i], b.parts()[i]));
        }
        return s.append(String.format(" iperf3 client %.2f, server %.2f", b.clientCpu(), b.serverCpu())).toString();
    }

    /** The bulk table: per MTU, each path's median (p25-p75), retransmits, CPU per GB by part; ratios. */
    private static void report(int seconds, int runs, int[] threads, boolean[] vnet, CpuPlacement place, List<List<BulkRun>> pa,
            List<List<List<BulkRun>>> bb) {
        System.out.printf("bulk TCP, one iperf3 stream, %d runs of %d s per path at each MTU, interleaved (pasta, then"
                + " Bumblebee at each thread count, in turn); median (p25-p75); CPU-s per GB received: median over runs%n",
                runs, seconds);
        System.out.printf("placement: %s%n", place.describe());
        for (int m = 0; m < MTUS.length; m++) {
            System.out.printf("MTU %d, iperf3 options: %s%n", MTUS[m], iperfOptions[m].length == 0 ? "default"
                    : String.join(" ", iperfOptions[m]));
            System.out.printf("  %-21s %-22s %-20s %s%n", "path", "Gbit/s", "retransmits", "CPU-s per GB");
            System.out.printf("  %-21s %-22s %-20s %s%n", "pasta", BulkRun.iqr(pa.get(m), BulkRun::gbps, "%.2f"),
                    BulkRun.iqr(pa.get(m), BulkRun::retransmits, "%.0f"), cpu(pa.get(m), PASTA_PARTS));
            for (int t = 0; t < threads.length; t++) {
                List<BulkRun> b = bb.get(t).get(m);
                System.out.printf("  %-21s %-22s %-20s %s%n", label(threads[t], vnet[t]),
                        BulkRun.iqr(b, BulkRun::gbps, "%.2f"), BulkRun.iqr(b, BulkRun::retransmits, "%.0f"),
                        cpu(b, BUMBLEBEE_PARTS));
            }
            double pasta = BulkRun.median(pa.get(m), BulkRun::gbps);
            for (int t = 0; t < threads.length; t++) {
                double x = BulkRun.median(bb.get(t).get(m), BulkRun::gbps);
                int first = 0; // the first variant of the same kind (plain or vnet): the thread-count ratio's base
                while (vnet[first] != vnet[t]) {
                    first++;
                }
                System.out.printf("  %s / pasta: %.2fx (target >= %s)%s%n", label(threads[t], vnet[t]), x / pasta,
                        MTUS[m] == 1500 ? "1.0x" : "1.5x", t == first ? "" : String.format("; / threads=%d: %.2fx (target >= 1.6x)",
                                threads[first], x / BulkRun.median(bb.get(first).get(m), BulkRun::gbps)));
            }
        }
    }

    /** A Bumblebee variant's name in the table: thread count, and whether its flows carry virtio_net_hdr. */
    private static String label(int threads, boolean vnet) {
        return "Bumblebee threads=" + threads + (vnet ? " vnet" : "");
    }

    /** "part a + part b ... = total; iperf3 client c, server s", each the median over runs of CPU-s per GB. */
    private static String cpu(List<BulkRun> runs, String[] parts) {
        StringBuilder s = new StringBuilder();
        for (int i = 0; i < parts.length; i++) {
            final int k = i;
            s.append(i == 0 ? "" : " + ").append(String.format("%s %.2f", parts[i], BulkRun.median(runs, b -> b.partPerGb(k))));
        }
        if (parts.length > 1) {
            s.append(String.format(" = %.2f", BulkRun.median(runs, b -> java.util.Arrays.stream(b.parts()).sum() / b.gigabytes())));
        }
        return s.append(String.format("; iperf3 client %.2f, server %.2f", BulkRun.median(runs, b -> b.clientCpu() / b.gigabytes()),
                BulkRun.median(runs, b -> b.serverCpu() / b.gigabytes()))).toString();
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
        /** Its loop threads' ids (/proc/self/task). */
        final int[] tids;

        /** With the most threads of the list: the relay behind Bumblebee should not be what limits it. */
        Splicer(Path tmp, int[] threads) throws Exception {
            DaemonSpec spec = warren.splicer.Main.spec();
            Set<Integer> before = ProcCpu.threads().keySet();
            int loops = java.util.Arrays.stream(threads).max().getAsInt();
            daemon = Daemon.start(spec, tmp.resolve("splicer.sock"), Config.parse("audit.path = /dev/null\n"
                    + BenchThreads.configLine(Daemon.configKeys(spec), loops), Daemon.configKeys(spec), "bench"));
            loop = serve(daemon);
            tids = ProcCpu.newThreads(before, "splicer-loop", loops);
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
                    byte[] syn = UpgradeBurst.segment(0x02, 1000, 0, port);
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
                        byte[] ack = UpgradeBurst.segment(0x10, 1001, y + 1, key.dstPort);
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
}
