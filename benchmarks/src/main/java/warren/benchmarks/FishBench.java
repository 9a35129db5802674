package warren.benchmarks;

import com.google.protobuf.ByteString;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import warren.control.v1.Egress;
import warren.control.v1.Request;
import warren.daemon.Daemon;
import warren.daemon.DaemonSpec;
import warren.daemon.client.ControlClient;
import warren.daemon.config.Config;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.linux.net.Netns;
import warren.netns.ip.IpNetns;

/**
 * Fish side by side with the kernel's own NAT, in private namespaces made here and removed at the
 * end. Fish: client namespace (TUN + a pump to one Egress socket) -> Fish's egress namespace ->
 * veth -> internet namespace. Peer: client namespace -> veth -> a router namespace doing nftables
 * SNAT to the same soft-unicast IP -> veth -> internet namespace. Figures: iperf3 TCP (5 s) and UDP
 * 64-byte packets per second, and new TCP connections per second (each one a new reservation).
 *
 * <p>{@code --vnet off|on|both} (default both): Fish with plain clients (one IP packet per
 * message), with vnet clients ({@code Egress.vnet_hdr}: each message a virtio_net_hdr and a GSO
 * super-packet of up to 64 KiB; the pump's TUN in vnet mode, issue #15), or both, plain first. A
 * vnet run that fails (a Fish that does not take vnet_hdr) is reported as a line; the plain runs
 * go on.
 */
public final class FishBench {
    private FishBench() {}

    private static final IpNetns NETNS = new IpNetns("wb-fi-");
    private static final String SOFT = "198.18.212.5";
    /** The SNAT router's own soft-unicast IP: the internet routes each path's address its own way. */
    private static final String SOFT2 = "198.18.215.5";

    public static void main(String[] args) throws Exception {
        int seconds = 5;
        int runs = 3;
        int[] threads = BenchThreads.parse(BenchThreads.DEFAULT);
        int clients = 0;
        boolean[] vnetModes = {false, true};
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--seconds": seconds = Integer.parseInt(args[++i]); break;
                case "--runs": runs = Integer.parseInt(args[++i]); break;
                case "--threads": threads = BenchThreads.parse(args[++i]); break;
                case "--clients": clients = Integer.parseInt(args[++i]); break;
                case "--vnet": vnetModes = vnetModes(args[++i]); break;
                default:
                    System.err.println("bench fish: unknown option '" + args[i] + "'");
                    System.exit(2);
            }
        }
        if (clients == 0) { // one client lives on one loop: as many clients as the most loops asked for
            clients = threads == null ? 1 : java.util.Arrays.stream(threads).max().getAsInt();
        }
        try {
            run(seconds, runs, threads, clients, vnetModes);
        } finally {
            NETNS.cleanup();
        }
        System.exit(0);
    }

    /** {@code --vnet}: off = plain clients only, on = vnet clients only, both = plain then vnet. */
    private static boolean[] vnetModes(String v) {
        switch (v) {
            case "off": return new boolean[] {false};
            case "on": return new boolean[] {true};
            case "both": return new boolean[] {false, true};
            default:
                System.err.println("bench fish: --vnet takes off, on or both, not '" + v + "'");
                System.exit(2);
                return null;
        }
    }






    private static double json(String out, String section, String field) {
        int at = out.indexOf("\"" + section + "\"");
        if (at < 0) { // iperf3 failed: say why (its JSON's "error"), not only NaN
            int e = out.indexOf("\"error\"");
            System.err.println("bench fish: iperf3 gave no " + section + ": "
                    + (e >= 0 ? out.substring(e, Math.min(out.length(), e + 200)).replaceAll("\\s+", " ") : "no output"));
            return Double.NaN;
        }
        int b = out.indexOf("\"" + field + "\":", at);
        return Double.parseDouble(out.substring(b + field.length() + 3).trim().split("[,\\s}]")[0]);
    }

    private static double median(double[] v) {
        double[] s = v.clone();
        java.util.Arrays.sort(s);
        return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    }

    private static String fmt(double[] v, String unit) {
        double[] s = v.clone();
        java.util.Arrays.sort(s);
        return String.format("%.2f (%.2f-%.2f) %s", median(v), s[0], s[s.length - 1], unit);
    }

    /** Connector threads per client namespace: one blocking connect at a time each. */
    static final int CONNECTORS = 16;
    /** The port of the accept-and-close server in the internet namespace. */
    static final int ACCEPT_PORT = 7000;

    /**
     * A storm's connect gives up after this: a lost SYN is retransmitted only after 1 s, so a
     * connect that takes longer failed (counted and printed); with 2 s each failure idled a
     * connector for 2 of the storm's 2 s and a handful of failures swung the kernel's rate from
     * 862 to 9,617/s between runs.
     */
    private static final int CONNECT_TIMEOUT_MS = 250;

    /**
     * New TCP connections per second for {@code seconds}, from {@code ns} to server:port, each
     * closed at once with an RST (SO_LINGER 0: no TIME_WAIT on either side), made by
     * {@link #CONNECTORS} threads in parallel. The server is {@link #acceptAndClose}'s, not
     * iperf3's (its server handles one client at a time and capped both paths near 2,600/s with
     * failed connects, issue 15). Failures are printed, and counted against nobody.
     */
    private static double connectsPerSecond(String ns, InetAddress server, int port, int seconds) throws Exception {
        java.util.concurrent.ExecutorService ex = java.util.concurrent.Executors.newFixedThreadPool(CONNECTORS);
        try {
            List<java.util.concurrent.Future<long[]>> fs = new ArrayList<>();
            long t0 = System.nanoTime();
            long end = t0 + seconds * 1_000_000_000L;
            for (int i = 0; i < CONNECTORS; i++) {
                fs.add(ex.submit(() -> Netns.call("/run/netns/" + ns, () -> {
                    long n = 0;
                    long failed = 0;
                    while (System.nanoTime() < end) {
                        try (Socket s = new Socket()) {
                            s.setSoLinger(true, 0);
                            s.connect(new InetSocketAddress(server, port), CONNECT_TIMEOUT_MS);
                            n++;
                        } catch (java.io.IOException e) {
                            failed++;
                        }
                    }
                    return new long[] {n, failed};
                })));
            }
            long n = 0;
            long failed = 0;
            for (java.util.concurrent.Future<long[]> f : fs) {
                long[] r = f.get();
                n += r[0];
                failed += r[1];
            }
            if (failed > 0) {
                System.err.println(ns + ": " + failed + " connections failed (" + n + " made)");
            }
            return n / ((System.nanoTime() - t0) / 1e9);
        } finally {
            ex.shutdownNow();
        }
    }

    /**
     * A server in namespace {@code ns} on port {@link #ACCEPT_PORT} that accepts every connection
     * and closes it at once (backlog 4,096), on two threads; closing the returned socket stops it.
     */
    private static java.net.ServerSocket acceptAndClose(String ns) throws Exception {
        java.net.ServerSocket ss = Netns.call("/run/netns/" + ns, () -> {
            java.net.ServerSocket x = new java.net.ServerSocket();
            x.setReuseAddress(true);
            x.bind(new InetSocketAddress("0.0.0.0", ACCEPT_PORT), 4096);
            return x;
        });
        for (int i = 0; i < 2; i++) {
            Thread t = new Thread(() -> {
                while (!ss.isClosed()) {
                    try (Socket s = ss.accept()) {
                        s.setSoLinger(true, 0);
                    } catch (java.io.IOException e) {
                        // closed, or the client reset first
                    }
                }
            }, "accept-and-close-" + i);
            t.setDaemon(true);
            t.start();
        }
        return ss;
    }

    /**
     * The kernel's SNAT path once ({@code clients} parallel iperf3 streams), then Fish once per
     * thread count ({@code threads}; null: the daemon's default) and client kind ({@code vnetModes})
     * with {@code clients} clients, each its own namespace, pump, port range (so they spread over
     * the loops) and iperf3 server. A failed vnet run is a line of its own; a failed plain run ends
     * the benchmark, as before.
     */
    private static void run(int seconds, int runs, int[] threads, int clients, boolean[] vnetModes) throws Exception {
        Path tmp = Files.createTempDirectory("warren-bench-fish");
        String internet = NETNS.add("internet");
        String egress = NETNS.add("egress");
        IpNetns.veth(egress, "e0", "198.18.210.1/30", internet, "i0", "198.18.210.2/30");
        IpNetns.sh("ip", "-n", egress, "route", "add", "default", "via", "198.18.210.2");
        IpNetns.exec(egress, "sysctl", "-w", "net.ipv4.ip_forward=1"); // the operator's to set; Fish checks it
        IpNetns.sh("ip", "-n", internet, "route", "add", SOFT + "/32", "via", "198.18.210.1");
        String[] client = new String[clients];
        for (int k = 0; k < clients; k++) {
            client[k] = NETNS.add("client" + k);
        }
        // the kernel's NAT: client2 -> router (SNAT to the soft-unicast IP) -> internet
        String client2 = NETNS.add("client2");
        String router = NETNS.add("router");
        IpNetns.veth(client2, "c0", "198.18.211.1/30", router, "r0", "198.18.211.2/30");
        IpNetns.veth(router, "r1", "198.18.213.1/30", internet, "i1", "198.18.213.2/30");
        IpNetns.sh("ip", "-n", client2, "route", "add", "default", "via", "198.18.211.2");
        IpNetns.sh("ip", "-n", router, "route", "add", "default", "via", "198.18.213.2");
        IpNetns.sh("ip", "-n", router, "addr", "add", SOFT2 + "/32", "dev", "r1");
        IpNetns.sh("ip", "-n", internet, "route", "add", SOFT2 + "/32", "via", "198.18.213.1");
        IpNetns.exec(router, "sysctl", "-w", "net.ipv4.ip_forward=1");
        IpNetns.sh("ip", "netns", "exec", router, "nft", "add table ip nat; add chain ip nat post { type nat hook postrouting priority 100; };"
                + " add rule ip nat post oifname r1 meta l4proto { tcp, udp } snat to " + SOFT2 + ":20000-29999");
        // the router's conntrack forgets a closed connection as soon as Fish does (fish.tcp_close_timeout
        // = 1s below): with the default 10 s its 10,000 ports would run out at 1,000 new connections/s
        // (these sysctls are the router namespace's own)
        IpNetns.exec(router, "sysctl", "-w", "net.netfilter.nf_conntrack_tcp_timeout_close=1");
        IpNetns.exec(router, "sysctl", "-w", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1");
        List<Process> servers = iperfServers(internet, clients);
        java.net.ServerSocket acceptor = acceptAndClose(internet);
        Thread.sleep(500);
        InetAddress server = InetAddress.getByName("198.18.210.2");
        InetAddress server2 = InetAddress.getByName("198.18.213.2");
        try {
            double[] tcp2 = new double[runs];
            double[] pps2 = new double[runs];
            double[] cps2 = new double[runs];
            for (int r = 0; r < runs; r++) {
                String[] one = new String[clients];
                java.util.Arrays.fill(one, client2);
                tcp2[r] = parallel(one, k -> json(iperf3(one[k], "-c", "198.18.213.2", "-p", "" + (5201 + k),
                        "-t", "" + seconds, "-J"), "sum_received", "bits_per_second") / 1e9);
                pps2[r] = parallel(one, k -> udpPps(iperf3(one[k], "-c", "198.18.213.2", "-p", "" + (5201 + k),
                        "-u", "-b", "0", "-l", "64", "-t", "" + seconds, "-J"), seconds));
                System.err.printf("kernel SNAT run %d: tcp %.2f Gbit/s, udp %.0f pps%n", r + 1, tcp2[r], pps2[r]);
            }
            // the connection storms last: their closed flows hold ports for a while (iperf3 needs some)
            String[] one2 = new String[clients];
            java.util.Arrays.fill(one2, client2);
            for (int r = 0; r < runs; r++) {
                double machine = machineBusy();
                long t0 = System.nanoTime();
                cps2[r] = parallel(one2, k -> connectsPerSecond(one2[k], server2, ACCEPT_PORT, 2));
                double made = cps2[r] * (System.nanoTime() - t0) / 1e9;
                System.err.printf("kernel SNAT run %d: %.0f connections/s; CPU per connection: the machine %.1f us%n", r + 1,
                        cps2[r], (machineBusy() - machine) * 1e6 / made);
            }
            System.out.printf("Fish and nftables SNAT, %s, %d cores, kernel %s, %d runs of %d s (median, min-max),"
                    + " %d client(s) in parallel%n", java.time.LocalDate.now(), Runtime.getRuntime().availableProcessors(),
                    Files.readString(Path.of("/proc/sys/kernel/osrelease")).strip(), runs, seconds, clients);
            System.out.printf("kernel SNAT:       TCP %s, UDP 64 B %s, new connections %s%n", fmt(tcp2, "Gbit/s"),
                    fmt(pps2, "pps"), fmt(cps2, "/s"));
            for (boolean vnet : vnetModes) {
                for (int n : threads == null ? new int[] {0} : threads) {
                    String label = label(vnet, n);
                    // each Fish starts clean: the last one's connection storms left conntrack entries in the
                    // egress namespace and an iperf3 server could still be waiting on a test whose client
                    // failed (its next runs then failed too: NaN); both are this benchmark's own
                    servers.forEach(Process::destroy);
                    for (Process x : servers) {
                        x.waitFor(5, TimeUnit.SECONDS);
                    }
                    servers = iperfServers(internet, clients);
                    IpNetns.run(egress, "conntrack", "-F");
                    Thread.sleep(500);
                    double[][] fish;
                    try {
                        fish = fishRuns(tmp, egress, client, server, seconds, runs, n, vnet);
                    } catch (Exception e) {
                        if (!vnet) {
                            throw e;
                        }
                        System.out.printf("%-18s failed: %s%n", label + ":", e);
                        continue;
                    }
                    System.out.printf("%-18s TCP %s (%.2fx), UDP 64 B %s (%.2fx), new connections %s (%.2fx)%n", label + ":",
                            fmt(fish[0], "Gbit/s"), median(fish[0]) / median(tcp2), fmt(fish[1], "pps"),
                            median(fish[1]) / median(pps2), fmt(fish[2], "/s"), median(fish[2]) / median(cps2));
                }
            }
        } finally {
            servers.forEach(Process::destroy);
            acceptor.close();
            Files.deleteIfExists(tmp); // the control sockets went with their daemons
        }
    }

    /** "Fish", "Fish threads = N", "Fish vnet", "Fish vnet threads = N". */
    private static String label(boolean vnet, int threads) {
        return (vnet ? "Fish vnet" : "Fish") + (threads == 0 ? "" : " threads = " + threads);
    }

    /** One iperf3 server per parallel client in {@code ns} (a server runs one test at a time), ports 5201.. */
    private static List<Process> iperfServers(String ns, int clients) throws Exception {
        List<Process> servers = new ArrayList<>();
        for (int k = 0; k < clients; k++) {
            servers.add(new ProcessBuilder("ip", "netns", "exec", ns, "iperf3", "-s", "-p", "" + (5201 + k))
                    .redirectOutput(ProcessBuilder.Redirect.DISCARD).redirectErrorStream(true).start());
        }
        return servers;
    }

    /**
     * Fish with {@code threads} loops (0: its default) and one client per namespace of
     * {@code client}, plain or ({@code vnet}) vnet_hdr clients: {tcp, pps, cps} by run. A vnet
     * client that cannot make one connection (within 3 s) to the accept-and-close server before
     * the measurements is an exception, not minutes of iperf3 timeouts.
     */
    private static double[][] fishRuns(Path tmp, String egress, String[] client, InetAddress server, int seconds, int runs,
            int threads, boolean vnet) throws Exception {
        DaemonSpec spec = warren.fish.Main.spec();
        Path sock = tmp.resolve("fish" + (vnet ? "-vnet" : "") + threads + ".sock");
        Daemon fish = Daemon.start(spec, sock, Config.parse("audit.path = /dev/null\nfish.netns = /run/netns/"
                + egress + "\nfish.soft_unicast_prefixes = " + SOFT + "/32\nfish.tcp_close_timeout = 1s\n"
                + (threads > 0 ? "threads = " + threads + "\n" : ""), Daemon.configKeys(spec), "bench"));
        Thread loop = new Thread(() -> {
            try {
                fish.run();
            } catch (Exception e) {
                e.printStackTrace();
            }
        }, "fish-loop");
        loop.start();
        double[][] out = new double[3][runs];
        List<warren.netns.TunPump> pumps = new ArrayList<>();
        try (ControlClient c = ControlClient.connect(sock)) {
            int span = 10_000 / client.length;
            for (int k = 0; k < client.length; k++) {
                int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
                Fd mine = Fd.adopt(sv[0]);
                try (Fd theirs = Fd.adopt(sv[1])) {
                    c.call(Request.newBuilder().setEgress(Egress.newBuilder().setFdPackets(0)
                            .setSoftUnicastIp(ByteString.copyFrom(InetAddress.getByName(SOFT).getAddress()))
                            .setPortFirst(20000 + k * span).setPortLast(20000 + (k + 1) * span - 1).setTenant("bench" + k)
                            .setVnetHdr(vnet)), List.of(theirs));
                } catch (Exception e) {
                    mine.close();
                    throw e;
                }
                pumps.add(new warren.netns.TunPump("/run/netns/" + client[k], "cl0", 1500, List.of("198.18.214.1/24"), mine,
                        vnet)); // owns mine from here, closes it if it fails
            }
            Thread.sleep(300);
            if (vnet) {
                for (String ns : client) {
                    reachable(ns, server);
                }
            }
            for (int r = 0; r < runs; r++) {
                out[0][r] = parallel(client, k -> json(iperf3(client[k], "-c", "198.18.210.2", "-p",
                        "" + (5201 + k), "-t", "" + seconds, "-J"), "sum_received", "bits_per_second") / 1e9);
                out[1][r] = parallel(client, k -> udpPps(iperf3(client[k], "-c", "198.18.210.2", "-p",
                        "" + (5201 + k), "-u", "-b", "0", "-l", "64", "-t", "" + seconds, "-J"), seconds));
                System.err.printf("%s run %d: tcp %.2f Gbit/s, udp %.0f pps%s%n", label(vnet, threads), r + 1, out[0][r],
                        out[1][r], vnet ? superPackets(pumps) : "");
            }
            // the connection storms last: a client's 5,000 ports at ~7,000/s with 1 s close timeouts run out, and
            // iperf3 after a storm found none (NaN runs)
            int[] fishLoops = named("fish-loop");
            int[] pumpThreads = named("tun-pump");
            for (int r = 0; r < runs; r++) {
                double loopCpu = ProcCpu.threads(fishLoops);
                double pumpCpu = ProcCpu.threads(pumpThreads);
                double all = ProcCpu.self();
                double machine = machineBusy();
                long t0 = System.nanoTime();
                out[2][r] = parallel(client, k -> connectsPerSecond(client[k], server, ACCEPT_PORT, 2));
                double made = out[2][r] * (System.nanoTime() - t0) / 1e9; // about: the rate over the storm's wall time
                // where the CPU went, per connection: Fish's loops, the pumps (the stand-in front proxy),
                // and this whole JVM (the connector threads and the acceptor too)
                System.err.printf("%s run %d: %.0f connections/s; CPU per connection: Fish loops %.1f us, pumps %.1f us,"
                        + " the bench's JVM in all %.1f us, the machine %.1f us%n", label(vnet, threads), r + 1, out[2][r],
                        (ProcCpu.threads(fishLoops) - loopCpu) * 1e6 / made, (ProcCpu.threads(pumpThreads) - pumpCpu) * 1e6 / made,
                        (ProcCpu.self() - all) * 1e6 / made, (machineBusy() - machine) * 1e6 / made);
            }
        } finally {
            fish.shutdown();
            loop.join(10_000);
            for (warren.netns.TunPump p : pumps) {
                p.close();
            }
        }
        return out;
    }

    /** One TCP connection from {@code ns} to the accept-and-close server, or an IOException saying which client failed. */
    private static void reachable(String ns, InetAddress server) throws Exception {
        Netns.call("/run/netns/" + ns, () -> {
            java.io.IOException last = null;
            for (int attempt = 0; attempt < 5; attempt++) { // one failed connect is no verdict: the driver sees some too
                try (Socket s = new Socket()) {
                    s.setSoLinger(true, 0);
                    s.connect(new InetSocketAddress(server, ACCEPT_PORT), 3000);
                    return null;
                } catch (java.io.IOException e) {
                    last = e;
                }
            }
            throw new java.io.IOException(ns + " cannot connect to " + server.getHostAddress() + ":" + ACCEPT_PORT
                    + " through Fish as a vnet_hdr client in 5 attempts (does this Fish take Egress.vnet_hdr?): " + last,
                    last);
        });
    }

    /** The pumps' super-packet counts so far, for the progress line: a vnet run without any measured nothing of GSO. */
    private static String superPackets(List<warren.netns.TunPump> pumps) {
        long from = 0;
        long to = 0;
        for (warren.netns.TunPump p : pumps) {
            from += p.superPacketsFromTun();
            to += p.superPacketsToTun();
        }
        return ", super-packets from/to the TUNs " + from + "/" + to;
    }

    /** One measurement per namespace at once; their sum. */
    private static double parallel(String[] ns, Measure m) throws Exception {
        java.util.concurrent.ExecutorService ex = java.util.concurrent.Executors.newFixedThreadPool(ns.length);
        try {
            List<java.util.concurrent.Future<Double>> fs = new ArrayList<>();
            for (int k = 0; k < ns.length; k++) {
                int i = k;
                fs.add(ex.submit(() -> m.of(i)));
            }
            double sum = 0;
            for (java.util.concurrent.Future<Double> f : fs) {
                sum += f.get();
            }
            return sum;
        } finally {
            ex.shutdownNow();
        }
    }

    @FunctionalInterface
    private interface Measure {
        double of(int k) throws Exception;
    }

    /** Packets per second the receiver got, from iperf3's UDP JSON. */
    /** Seconds of CPU the whole machine has been busy (every core; /proc/stat's first line less idle and iowait). */
    private static double machineBusy() throws java.io.IOException {
        String[] f = Files.readAllLines(Path.of("/proc/stat")).get(0).trim().split("\\s+");
        long busy = 0;
        for (int i = 1; i < f.length && i <= 8; i++) { // user nice system idle iowait irq softirq steal
            if (i != 4 && i != 5) {
                busy += Long.parseLong(f[i]);
            }
        }
        return busy / ProcCpu.TICKS_PER_SECOND;
    }

    /** This JVM's threads whose name starts with {@code prefix}. */
    private static int[] named(String prefix) {
        return ProcCpu.threads().entrySet().stream().filter(e -> e.getValue().startsWith(prefix))
                .mapToInt(java.util.Map.Entry::getKey).toArray();
    }

    /**
     * An iperf3 client run in {@code ns}, again (up to 50 times, 100 ms apart) while the server
     * says it is busy: an iperf3 server runs one test at a time and may still be closing the last
     * one when the next client comes (the NaN runs of issue 15's final bench were this).
     */
    private static String iperf3(String ns, String... args) throws Exception {
        String[] cmd = new String[args.length + 1];
        cmd[0] = "iperf3";
        System.arraycopy(args, 0, cmd, 1, args.length);
        String out = IpNetns.exec(ns, cmd);
        for (int i = 0; i < 50 && out.contains("the server is busy"); i++) {
            Thread.sleep(100);
            out = IpNetns.exec(ns, cmd);
        }
        if (out.contains("the server is busy")) { // what holds the server: each namespace's view of port 5201..
            for (String n : new String(new ProcessBuilder("ip", "netns", "list").start().getInputStream().readAllBytes()).lines().map(l -> l.split(" ")[0])
                    .filter(n -> n.startsWith("wb-fi-")).toList()) {
                System.err.println("bench fish: server busy; in " + n + ":\n" + IpNetns.exec(n, "ss", "-tuanio", "( sport >= :5201 and sport <= :5210 ) or ( dport >= :5201 and dport <= :5210 )"));
            }
        }
        return out;
    }

    private static double udpPps(String out, int seconds) {
        double packets = json(out, "sum_received", "packets");
        double lost = json(out, "sum_received", "lost_packets");
        return (packets - (Double.isNaN(lost) ? 0 : lost)) / seconds;
    }
}
