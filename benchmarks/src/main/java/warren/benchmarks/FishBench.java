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
 * {@code --threads LIST} (default 1,N; see {@link BenchThreads}): one Fish per value, a row each.
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
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--seconds": seconds = Integer.parseInt(args[++i]); break;
                case "--runs": runs = Integer.parseInt(args[++i]); break;
                case "--threads": threads = BenchThreads.parse(args[++i]); break;
                default:
                    System.err.println("bench fish: unknown option '" + args[i] + "'");
                    System.exit(2);
            }
        }
        try {
            for (int t : threads) { // before any namespace exists: a build without the key runs 1 only
                BenchThreads.configLine(Daemon.configKeys(warren.fish.Main.spec()), t);
            }
        } catch (IllegalArgumentException e) {
            System.err.println("bench fish: " + e.getMessage());
            System.exit(2);
        }
        try {
            run(seconds, runs, threads);
        } finally {
            NETNS.cleanup();
        }
        System.exit(0);
    }






    private static double json(String out, String section, String field) {
        int at = out.indexOf("\"" + section + "\"");
        if (at < 0) {
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
        String f = median(v) >= 100 ? "%.0f (%.0f-%.0f) %s" : "%.2f (%.2f-%.2f) %s";
        return String.format(f, median(v), s[0], s[s.length - 1], unit);
    }

    /** New TCP connections per second for {@code seconds}, from {@code ns} to server:80 (closed at once). */
    private static double connectsPerSecond(String ns, InetAddress server, int seconds) throws Exception {
        return Netns.call("/run/netns/" + ns, () -> {
            long end = System.nanoTime() + seconds * 1_000_000_000L;
            long n = 0;
            long failed = 0;
            long t0 = System.nanoTime();
            while (System.nanoTime() < end) {
                try (Socket s = new Socket()) {
                    s.setSoLinger(true, 0); // RST: no TIME_WAIT pile-up on the client side
                    s.connect(new InetSocketAddress(server, 5201), 2000);
                    n++;
                } catch (java.io.IOException e) {
                    failed++;
                }
            }
            if (failed > 0) {
                System.err.println(ns + ": " + failed + " connections failed (" + n + " made)");
            }
            return n / ((System.nanoTime() - t0) / 1e9);
        });
    }

    private static void run(int seconds, int runs, int[] threads) throws Exception {
        Path tmp = Files.createTempDirectory("warren-bench-fish");
        tmp.toFile().deleteOnExit(); // empty by then: each daemon removes its socket when it stops
        String internet = NETNS.add("internet");
        // Fish's path
        String client = NETNS.add("client");
        String egress = NETNS.add("egress");
        IpNetns.veth(egress, "e0", "198.18.210.1/30", internet, "i0", "198.18.210.2/30");
        IpNetns.sh("ip", "-n", egress, "route", "add", "default", "via", "198.18.210.2");
        IpNetns.exec(egress, "sysctl", "-w", "net.ipv4.ip_forward=1"); // the operator's to set; Fish checks it
        IpNetns.sh("ip", "-n", internet, "route", "add", SOFT + "/32", "via", "198.18.210.1");
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
        List<Process> servers = new ArrayList<>();
        servers.add(new ProcessBuilder("ip", "netns", "exec", internet, "iperf3", "-s", "-p", "5201")
                .redirectOutput(ProcessBuilder.Redirect.DISCARD).redirectErrorStream(true).start());
        Thread.sleep(500);
        InetAddress server = InetAddress.getByName("198.18.210.2");
        InetAddress server2 = InetAddress.getByName("198.18.213.2");

        // the kernel's NAT, once
        double[] tcpSnat = new double[runs];
        double[] ppsSnat = new double[runs];
        double[] cpsSnat = new double[runs];
        for (int r = 0; r < runs; r++) {
            tcpSnat[r] = json(IpNetns.exec(client2, "iperf3", "-c", "198.18.213.2", "-t", "" + seconds, "-J"), "sum_received",
                    "bits_per_second") / 1e9;
            ppsSnat[r] = udpPps(IpNetns.exec(client2, "iperf3", "-c", "198.18.213.2", "-u", "-b", "0", "-l", "64", "-t",
                    "" + seconds, "-J"), seconds);
            cpsSnat[r] = connectsPerSecond(client2, server2, 2);
            System.err.printf("kernel SNAT run %d: tcp %.2f Gbit/s, udp %.0f pps, %.0f connections/s%n", r + 1,
                    tcpSnat[r], ppsSnat[r], cpsSnat[r]);
        }
        // Fish, one daemon per thread count
        double[][] tcp = new double[threads.length][runs];
        double[][] pps = new double[threads.length][runs];
        double[][] cps = new double[threads.length][runs];
        for (int t = 0; t < threads.length; t++) {
            DaemonSpec spec = warren.fish.Main.spec();
            Path sock = tmp.resolve("fish" + threads[t] + ".sock");
            Daemon fish = Daemon.start(spec, sock, Config.parse("audit.path = /dev/null\nfish.netns = /run/netns/"
                    + egress + "\nfish.soft_unicast_prefixes = " + SOFT + "/32\nfish.tcp_close_timeout = 1s\n"
                    + BenchThreads.configLine(Daemon.configKeys(spec), threads[t]), Daemon.configKeys(spec), "bench"));
            Thread loop = new Thread(() -> {
                try {
                    fish.run();
                } catch (Exception e) {
                    e.printStackTrace();
                }
            }, "fish-loop");
            loop.start();
            warren.netns.TunPump pump = null;
            try (ControlClient c = ControlClient.connect(sock)) {
                int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
                try (Fd theirs = Fd.adopt(sv[1])) {
                    c.call(Request.newBuilder().setEgress(Egress.newBuilder().setFdPackets(0)
                            .setSoftUnicastIp(ByteString.copyFrom(InetAddress.getByName(SOFT).getAddress()))
                            .setPortFirst(20000).setPortLast(29999).setTenant("bench")), List.of(theirs));
                }
                pump = new warren.netns.TunPump("/run/netns/" + client, "cl0", 1500, List.of("198.18.214.1/24"),
                        Fd.adopt(sv[0]));
                Thread.sleep(300);
                for (int r = 0; r < runs; r++) {
                    tcp[t][r] = json(IpNetns.exec(client, "iperf3", "-c", "198.18.210.2", "-t", "" + seconds, "-J"),
                            "sum_received", "bits_per_second") / 1e9;
                    pps[t][r] = udpPps(IpNetns.exec(client, "iperf3", "-c", "198.18.210.2", "-u", "-b", "0", "-l", "64",
                            "-t", "" + seconds, "-J"), seconds);
                    cps[t][r] = connectsPerSecond(client, server, 2);
                    System.err.printf("Fish threads=%d run %d: tcp %.2f Gbit/s, udp %.0f pps, %.0f connections/s%n",
                            threads[t], r + 1, tcp[t][r], pps[t][r], cps[t][r]);
                }
            } finally {
                if (pump != null) {
                    pump.close(); // its TUN goes with it: the next Fish's client gets a fresh cl0
                }
                fish.shutdown();
                loop.join(10_000);
            }
        }
        servers.forEach(Process::destroy);
        System.out.printf("Fish and nftables SNAT, %s, %d cores, kernel %s, %d runs of %d s (median, min-max)%n",
                java.time.LocalDate.now(), Runtime.getRuntime().availableProcessors(),
                Files.readString(Path.of("/proc/sys/kernel/osrelease")).strip(), runs, seconds);
        System.out.printf("%-16s | %-26s | %-26s | %-24s%n", "", "TCP throughput", "UDP 64 B", "new connections");
        System.out.printf("%-16s | %-26s | %-26s | %-24s%n", "kernel SNAT", fmt(tcpSnat, "Gbit/s"), fmt(ppsSnat, "pps"),
                fmt(cpsSnat, "/s"));
        for (int t = 0; t < threads.length; t++) {
            System.out.printf("%-16s | %-26s | %-26s | %-24s%n", "Fish threads=" + threads[t], fmt(tcp[t], "Gbit/s"),
                    fmt(pps[t], "pps"), fmt(cps[t], "/s"));
        }
        for (int t = 0; t < threads.length; t++) {
            System.out.printf("Fish threads=%d / kernel SNAT: TCP %.2fx, UDP %.2fx, connections %.2fx", threads[t],
                    median(tcp[t]) / median(tcpSnat), median(pps[t]) / median(ppsSnat), median(cps[t]) / median(cpsSnat));
            if (t > 0) {
                System.out.printf("; / threads=%d: TCP %.2fx, UDP %.2fx, connections %.2fx (target >= 1.6 at 2 threads)",
                        threads[0], median(tcp[t]) / median(tcp[0]), median(pps[t]) / median(pps[0]),
                        median(cps[t]) / median(cps[0]));
            }
            System.out.println();
        }
    }

    /** Packets per second the receiver got, from iperf3's UDP JSON. */
    private static double udpPps(String out, int seconds) {
        double packets = json(out, "sum_received", "packets");
        double lost = json(out, "sum_received", "lost_packets");
        return (packets - (Double.isNaN(lost) ? 0 : lost)) / seconds;
    }
}
