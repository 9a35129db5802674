package warren.benchmarks;

import com.google.protobuf.ByteString;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import warren.control.v1.Egress;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Restart;
import warren.control.v1.Restarted;
import warren.control.v1.Splice;
import warren.control.v1.Upgrade;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;
import warren.netns.ip.IpNetns;
import warren.packet.FlowKey;
import warren.packet.PacketView;

/**
 * The upgrade-in-place pause of each daemon with N live flows: every daemon runs as its own
 * process, gets N flows, and is upgraded {@code --runs} times per N. Reported per upgrade:
 * the pause the old process measured (tasks paused until commit sent; {@code Restarted.pause_us})
 * and, for Splicer, the longest gap seen by traffic: a probe pair carries a 16-byte message every
 * 200 us and the receiver notes the largest gap between arrivals around the upgrade (last byte
 * relayed by the old process to the first by the new).
 *
 * <p>Flows: Splicer N idle TCP loopback pairs; Fish N UDP flows of one client (N conntrack
 * reservations, packets crafted here) in a private egress namespace; Bumblebee N UDP flows (a
 * flow socket each). RLIMIT_NOFILE bounds N: each Splicer pair and Bumblebee UDP flow costs the
 * daemon 2 fds and this process 2.
 */
public final class UpgradePause {
    private UpgradePause() {}

    public static void main(String[] args) throws Exception {
        List<Integer> sizes = List.of(10, 1000, 4000, 8000); // 8,000: daemon and benchmark hold 2 fds per flow, RLIMIT_NOFILE here is 20,000
        List<String> daemons = List.of("splicer", "fish", "bumblebee");
        int runs = 3;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--flows" -> sizes = Arrays.stream(args[++i].split(",")).map(Integer::parseInt).toList();
                case "--runs" -> runs = Integer.parseInt(args[++i]);
                case "--daemons" -> daemons = List.of(args[++i].split(","));
                case "-h", "--help" -> {
                    System.out.println("usage: ./warren bench upgrade [--flows 10,1000,4000,8000] [--runs 3]"
                            + " [--daemons splicer,fish,bumblebee]");
                    return;
                }
                default -> {
                    System.err.println("bench upgrade: unknown option " + args[i] + " (try --help)");
                    System.exit(2);
                }
            }
        }
        List<String> table = new ArrayList<>();
        table.add(String.format("%-10s %7s %7s %-28s %-28s %s", "daemon", "flows", "fds", "pause ms (old side) med/max",
                "traffic gap ms med/max", "collections (all processes)"));
        for (String d : daemons) {
            for (int n : sizes) {
                table.add(switch (d) {
                    case "splicer" -> splicer(n, runs);
                    case "fish" -> fish(n, runs);
                    case "bumblebee" -> bumblebee(n, runs);
                    default -> throw new IllegalArgumentException("unknown daemon " + d);
                });
                System.err.println(table.get(table.size() - 1));
            }
        }
        System.out.println();
        table.forEach(System.out::println);
        System.exit(0);
    }

    private static Process start(String name, String mainClass, Path dir, String config) throws Exception {
        Path conf = Files.writeString(dir.resolve(name + ".conf"), "audit.path = /dev/null\n" + config);
        Path ctl = dir.resolve(name + ".sock");
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString()));
        cmd.addAll(Arrays.asList(DAEMON_JAVA_OPTS.strip().split("\\s+")));
        // every collection of every process (successors run the same command line: %p tells them apart)
        cmd.add("-Xlog:gc:file=" + dir.resolve("gc-%p.log") + ":timemillis");
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), mainClass, "--control", ctl.toString(), "--config",
                conf.toString()));
        Process p = new ProcessBuilder(cmd)
                .redirectErrorStream(true).redirectOutput(dir.resolve(name + ".log").toFile()).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (!Files.exists(ctl)) {
            if (!p.isAlive() || System.nanoTime() > deadline) {
                throw new IllegalStateException(name + " did not start: " + Files.readString(dir.resolve(name + ".log")));
            }
            Thread.sleep(20);
        }
        return p;
    }

    /**
     * The daemons' JVM options as the launcher and the units start them ({@code WARREN_DAEMON_JAVA_OPTS},
     * which ./warren sets from its DAEMON_JAVA_OPTS): the collector and young generation size change
     * what a pause costs, so the bench measures the daemons as they run.
     */
    private static final String DAEMON_JAVA_OPTS = System.getenv().getOrDefault("WARREN_DAEMON_JAVA_OPTS",
            "-XX:+UseSerialGC -Xmn16m");

    /** Matches a -Xlog:gc pause line with timemillis: "[1764749401123ms] GC(3) Pause Young (Allocation Failure) 14M->3M(59M) 2.345ms". */
    private static final java.util.regex.Pattern GC_PAUSE = java.util.regex.Pattern.compile(
            "^\\[(\\d+)ms\\].*(Pause [A-Za-z]+).* ([0-9.]+)ms$");

    /** Wall-clock windows (ms since the epoch) of this size's upgrades: from the Restart request to 300 ms after its answer. */
    private static final List<long[]> windows = new ArrayList<>();
    /** Wall-clock windows of the probe's longest gap in each of this size's upgrades (Splicer). */
    private static final List<long[]> gaps = new ArrayList<>();
    private static final long WALL_ORIGIN = System.currentTimeMillis();
    private static final long NANO_ORIGIN = System.nanoTime();

    /**
     * The collections of every process of a size's runs (its gc-PID.log files): how many, the
     * longest, and those that overlap an upgrade's window (from the Restart to 300 ms after the
     * answer: the pause and the successor's first cycles, where a probe sees the gap), each with
     * its process and kind.
     */
    private static String gcSummary(Path dir) {
        int n = 0;
        double max = 0;
        List<String> inside = new ArrayList<>();
        try (var files = Files.list(dir)) {
            for (Path f : files.filter(x -> x.getFileName().toString().startsWith("gc-")).sorted().toList()) {
                String pid = f.getFileName().toString().replaceAll("\\D", "");
                for (String line : Files.readAllLines(f)) {
                    java.util.regex.Matcher m = GC_PAUSE.matcher(line.strip());
                    if (!m.find()) {
                        continue;
                    }
                    n++;
                    double ms = Double.parseDouble(m.group(3));
                    max = Math.max(max, ms);
                    long end = Long.parseLong(m.group(1));
                    long begin = end - (long) Math.ceil(ms);
                    for (long[] w : windows) {
                        if (end >= w[0] && begin <= w[1]) {
                            String inGap = "";
                            for (long[] g : gaps) {
                                if (end >= g[0] && begin <= g[1]) {
                                    inGap = String.format(", inside the probe's longest gap (%d ms)", g[1] - g[0]);
                                }
                            }
                            inside.add(String.format("pid %s %s %.1f ms at +%d ms%s", pid, m.group(2), ms, begin - w[0], inGap));
                            break;
                        }
                    }
                }
            }
        } catch (java.io.IOException e) {
            return "gc ?";
        }
        windows.clear();
        gaps.clear();
        inside.forEach(x -> System.err.println("  gc in an upgrade window: " + x));
        return String.format("%d gc, max %.1f ms; %d in upgrade windows", n, max, inside.size());
    }

    /** The daemon's own account of each upgrade (its "upgrade:" log lines), to stderr before the run's directory goes. */
    private static void upgradeLines(Path dir, String name) {
        try {
            Files.readAllLines(dir.resolve(name + ".log")).stream().filter(l -> l.contains("upgrade:") && !l.contains("started pid"))
                    .distinct().forEach(l -> System.err.println("  " + l));
        } catch (java.io.IOException e) {
            System.err.println("  (no log: " + e.getMessage() + ")");
        }
    }

    /** The newest process of the daemon under test: killed if a run fails half-way. */
    private static long current;

    private static Restarted restart(ControlClient c) throws Exception {
        long[] w = {System.currentTimeMillis(), Long.MAX_VALUE};
        windows.add(w);
        try (Reply r = c.call(Request.newBuilder().setRestart(Restart.newBuilder().setTimeoutMs(60_000)), List.of())
                .get(120, TimeUnit.SECONDS)) {
            if (!r.response().hasRestarted()) {
                throw new IllegalStateException("upgrade failed: " + r.response());
            }
            current = r.response().getRestarted().getNewPid();
            w[1] = System.currentTimeMillis() + 300;
            return r.response().getRestarted();
        }
    }

    /** Kills the daemon's newest process if it is still there (a run that failed half-way). */
    private static void killCurrent() {
        if (current > 0) {
            ProcessHandle.of(current).ifPresent(ProcessHandle::destroyForcibly);
            current = 0;
        }
    }

    private static void stop(ControlClient c, Process first) throws Exception {
        long pid;
        try (Reply r = c.call(Request.newBuilder().setStatus(warren.control.v1.Status.getDefaultInstance()), List.of())
                .get(10, TimeUnit.SECONDS)) {
            pid = r.response().getStatus().getPid();
        }
        new ProcessBuilder("kill", "-TERM", Long.toString(pid)).start().waitFor();
        ProcessHandle.of(pid).ifPresent(h -> h.onExit().join());
        first.destroyForcibly();
    }

    private static String row(String daemon, int flows, int fds, double[] pause, double[] gap, String gc) {
        Arrays.sort(pause);
        String g = "-";
        if (gap != null) {
            Arrays.sort(gap);
            g = String.format("%.1f / %.1f", gap[gap.length / 2], gap[gap.length - 1]);
        }
        return String.format("%-10s %7d %7d %-28s %-28s %s", daemon, flows, fds,
                String.format("%.1f / %.1f", pause[pause.length / 2], pause[pause.length - 1]), g, gc);
    }

    // ---- Splicer: N idle pairs + one probe pair

    private static String splicer(int n, int runs) throws Exception {
        Path dir = Files.createTempDirectory("warren-bench-upgrade-");
        String gc = "gc ?";
        Process p = start("splicer", "warren.splicer.Main", dir, "");
        List<Fd> ends = new ArrayList<>();
        // each pair's final answer (Spliced, with both sockets, when the daemon stops): closed below,
        // or every size run leaks 2 fds per pair here and the next one meets RLIMIT_NOFILE
        List<CompletableFuture<Reply>> answers = new ArrayList<>();
        double[] pause = new double[runs];
        double[] gap = new double[runs];
        int fds = 0;
        try (ControlClient c = ControlClient.connect(dir.resolve("splicer.sock"));
                Fd listener = TcpSockets.listen(new InetSocketAddress("127.0.0.1", 0), 4096)) {
            InetSocketAddress at = TcpSockets.localAddress(listener);
            List<CompletableFuture<Response>> accepted = new ArrayList<>();
            Fd probeIn = null;
            Fd probeOut = null;
            for (int i = 0; i <= n; i++) {
                Fd c1 = TcpSockets.connect(at);
                try (Fd a = TcpSockets.accept(listener); Fd b = TcpSockets.connect(at)) {
                    Fd c2 = TcpSockets.accept(listener);
                    ends.add(c1);
                    ends.add(c2);
                    if (i == n) {
                        probeIn = c1;
                        probeOut = c2;
                    }
                    CompletableFuture<Response> acc = new CompletableFuture<>();
                    answers.add(c.call(Request.newBuilder().setId(i + 1).setSplice(Splice.newBuilder().setFdA(0)
                            .setFdB(1)), List.of(a, b), acc::complete));
                    accepted.add(acc);
                }
                if (accepted.size() >= 256 || i == n) {
                    for (CompletableFuture<Response> f : accepted) {
                        f.get(30, TimeUnit.SECONDS);
                    }
                    accepted.clear();
                }
            }
            Probe probe = new Probe(probeIn, probeOut);
            for (int r = 0; r < runs; r++) {
                Thread.sleep(300);
                long t0 = System.nanoTime();
                Restarted done = restart(c);
                double answeredMs = (System.nanoTime() - t0) / 1e6;
                Thread.sleep(300);
                pause[r] = done.getPauseUs() / 1000.0;
                gap[r] = probe.maxGapMs(t0, System.nanoTime());
                fds = (int) done.getFds();
                System.err.printf("splicer %d pairs: pause %.1f ms, traffic gap %.1f ms (from +%.0f ms after the Restart, "
                        + "answered at +%.0f ms), %d fds%n", n, pause[r], gap[r], probe.lastGapFromMs, answeredMs, fds);
            }
            probe.stop();
            stop(c, p);
            try {
                CompletableFuture.allOf(answers.toArray(new CompletableFuture<?>[0])).get(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                // some not answered (the daemon gone first): nothing was received for those
            }
            for (CompletableFuture<Reply> f : answers) {
                Reply r = f.isDone() && !f.isCompletedExceptionally() ? f.join() : null;
                if (r != null) {
                    r.close(); // and its two sockets
                }
            }
        } finally {
            Fd.closeAll(ends);
            p.destroyForcibly();
            killCurrent();
            gc = gcSummary(dir);
            upgradeLines(dir, "splicer");
            deleteTree(dir);
        }
        return row("splicer", n, fds, pause, gap, gc);
    }

    /** 16-byte messages every 200 us one way; arrival times kept for the gap measurement. */
    private static final class Probe {
        private final long[] arrivals = new long[1 << 20];
        private volatile int count;
        private volatile boolean run = true;
        private final Thread writer;
        private final Thread reader;

        Probe(Fd in, Fd out) {
            writer = new Thread(() -> {
                Pointer p = Native.allocate(16);
                while (run) {
                    Native.write(in.get(), p, 16);
                    java.util.concurrent.locks.LockSupport.parkNanos(200_000);
                }
            }, "probe-writer");
            reader = new Thread(() -> {
                Pointer p = Native.allocate(4096);
                while (run && count < arrivals.length) {
                    long got = Native.read(out.get(), p, 4096);
                    if (got <= 0) {
                        return;
                    }
                    arrivals[count] = System.nanoTime();
                    count = count + 1;
                }
            }, "probe-reader");
            writer.setDaemon(true);
            reader.setDaemon(true);
            writer.start();
            reader.start();
        }

        /** Where the last {@link #maxGapMs}'s gap began, in ms after its {@code from}. */
        double lastGapFromMs;

        double maxGapMs(long from, long to) {
            int n = count;
            long max = 0;
            long at = 0;
            for (int i = 1; i < n; i++) {
                if (arrivals[i] >= from && arrivals[i - 1] <= to && arrivals[i] - arrivals[i - 1] > max) {
                    max = arrivals[i] - arrivals[i - 1];
                    at = arrivals[i - 1];
                }
            }
            lastGapFromMs = max > 0 ? (at - from) / 1e6 : 0;
            if (max > 0) { // where it was, as wall-clock ms: the collections of that moment are named
                long wall = (at - NANO_ORIGIN) / 1_000_000 + WALL_ORIGIN;
                gaps.add(new long[] {wall, wall + max / 1_000_000 + 1});
            }
            return max / 1e6;
        }

        void stop() {
            run = false;
        }
    }

    // ---- Fish: one client, N UDP flows (N reservations)

    private static String fish(int n, int runs) throws Exception {
        IpNetns netns = new IpNetns("wb-up-");
        Path dir = Files.createTempDirectory("warren-bench-upgrade-");
        String gc = "gc ?";
        String egress = netns.add("egress");
        IpNetns.exec(egress, "sysctl", "-w", "net.ipv4.ip_forward=1"); // the operator's to set; Fish checks it
        Process p = start("fish", "warren.fish.Main", dir, "fish.netns = /run/netns/" + egress + "\n"
                + "fish.soft_unicast_prefixes = 198.18.222.0/24\n");
        double[] pause = new double[runs];
        int fds = 0;
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
        try (ControlClient c = ControlClient.connect(dir.resolve("fish.sock")); Fd mine = Fd.adopt(sv[0])) {
            try (Fd theirs = Fd.adopt(sv[1])) {
                CompletableFuture<Response> acc = new CompletableFuture<>();
                c.call(Request.newBuilder().setEgress(Egress.newBuilder().setFdPackets(0)
                        .setSoftUnicastIp(ByteString.copyFrom(InetAddress.getByName("198.18.222.5").getAddress()))
                        .setPortFirst(10000).setPortLast(10000 + n + 99).setTenant("bench")), List.of(theirs), acc::complete);
                acc.get(10, TimeUnit.SECONDS);
            }
            ByteBuffer pkt = ByteBuffer.allocateDirect(64);
            Pointer ptr = Pointer.wrap(Native.RUNTIME, pkt);
            PacketView view = new PacketView();
            FlowKey key = new FlowKey();
            for (int i = 0; i < n; i++) {
                udp4(pkt, new byte[] {(byte) 198, 18, 60, 1}, 1024 + i, new byte[] {(byte) 198, 18, 0, 2}, 7);
                view.parse(pkt, 0, 36, key);
                view.fixChecksums();
                if (Native.send(mine.get(), ptr, 36, 0) < 0) {
                    throw new IllegalStateException("send: errno " + Native.errno());
                }
            }
            waitForCounter(c, "reservations.made", n);
            for (int r = 0; r < runs; r++) {
                Thread.sleep(300);
                Restarted done = restart(c);
                pause[r] = done.getPauseUs() / 1000.0;
                fds = (int) done.getFds();
                System.err.printf("fish %d flows: pause %.1f ms, %d fds%n", n, pause[r], fds);
            }
            stop(c, p);
        } finally {
            p.destroyForcibly();
            killCurrent();
            netns.cleanup();
            gc = gcSummary(dir);
            upgradeLines(dir, "fish");
            deleteTree(dir);
        }
        return row("fish", n, fds, pause, null, gc);
    }

    private static void udp4(ByteBuffer b, byte[] src, int sport, byte[] dst, int dport) {
        for (int i = 0; i < 36; i++) {
            b.put(i, (byte) 0);
        }
        b.put(0, (byte) 0x45).putShort(2, (short) 36).put(8, (byte) 64).put(9, (byte) 17);
        b.put(12, src).put(16, dst);
        b.putShort(20, (short) sport).putShort(22, (short) dport).putShort(24, (short) 16);
        b.put(28, "warren-b".getBytes(java.nio.charset.StandardCharsets.US_ASCII));
        b.putShort(10, (short) warren.packet.Checksum.finish(warren.packet.Checksum.sum(b, 0, 20))); // parse checks it
    }

    private static void waitForCounter(ControlClient c, String name, long want) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        long have = 0;
        while (System.nanoTime() < deadline) {
            try (Reply r = c.call(Request.newBuilder().setStatus(warren.control.v1.Status.getDefaultInstance()), List.of())
                    .get(10, TimeUnit.SECONDS)) {
                have = r.response().getStatus().getCountersOrDefault(name, 0);
            }
            if (have >= want) {
                return;
            }
            Thread.sleep(100);
        }
        try (Reply r = c.call(Request.newBuilder().setStatus(warren.control.v1.Status.getDefaultInstance()), List.of())
                .get(10, TimeUnit.SECONDS)) {
            throw new IllegalStateException(name + " reached " + have + " of " + want + "; counters "
                    + r.response().getStatus().getCountersMap());
        }
    }

    // ---- Bumblebee: N UDP flows

    private static String bumblebee(int n, int runs) throws Exception {
        Path dir = Files.createTempDirectory("warren-bench-upgrade-");
        String gc = "gc ?";
        Process p = start("bumblebee", "warren.bumblebee.Main", dir, "bumblebee.idle_timeout = 10m\nbumblebee.slots = 16384\n");
        double[] pause = new double[runs];
        int fds = 0;
        List<Fd> held = new ArrayList<>();
        try (ControlClient c = ControlClient.connect(dir.resolve("bumblebee.sock"))) {
            ByteBuffer pkt = ByteBuffer.allocateDirect(64);
            Pointer ptr = Pointer.wrap(Native.RUNTIME, pkt);
            PacketView view = new PacketView();
            FlowKey key = new FlowKey();
            List<CompletableFuture<Reply>> answers = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
                Fd mine = Fd.adopt(sv[0]);
                held.add(mine);
                try (Fd theirs = Fd.adopt(sv[1])) {
                    answers.add(c.call(Request.newBuilder().setUpgrade(Upgrade.newBuilder().setFdFlow(0)), List.of(theirs)));
                }
                udp4(pkt, new byte[] {(byte) 198, 18, 50, 1}, 1024 + i % 60000, new byte[] {(byte) 198, 18, 99, (byte) (1 + i / 60000)}, 53);
                view.parse(pkt, 0, 36, key);
                view.fixChecksums();
                Native.send(mine.get(), ptr, 36, 0);
                if (answers.size() >= 256 || i == n - 1) {
                    for (CompletableFuture<Reply> f : answers) {
                        try (Reply r = f.get(30, TimeUnit.SECONDS)) {
                            if (!r.response().hasUpgraded()) {
                                throw new IllegalStateException("upgrade " + r.response());
                            }
                            held.add(r.takeFd(r.response().getUpgraded().getFdSocket()));
                        }
                    }
                    answers.clear();
                }
            }
            for (int r = 0; r < runs; r++) {
                Thread.sleep(300);
                Restarted done = restart(c);
                pause[r] = done.getPauseUs() / 1000.0;
                fds = (int) done.getFds();
                System.err.printf("bumblebee %d flows: pause %.1f ms, %d fds%n", n, pause[r], fds);
            }
            Fd.closeAll(held); // this process is near its fd limit: stop() starts kill(1)
            held.clear();
            stop(c, p);
        } finally {
            Fd.closeAll(held);
            p.destroyForcibly();
            killCurrent();
            gc = gcSummary(dir);
            upgradeLines(dir, "bumblebee");
            deleteTree(dir);
        }
        return row("bumblebee", n, fds, pause, null, gc);
    }

    private static void deleteTree(Path dir) {
        try (var lines = Files.lines(dir.resolve(dir.toFile().list((d, n) -> n.endsWith(".log"))[0]))) {
            lines.filter(l -> l.contains("upgrade: handoff ") || l.contains("adopted in") || l.contains("warm-up:")
                    || l.contains("on the loop after")).forEach(l -> System.err.println("  " + l));
        } catch (Exception e) {
            // no log
        }
        try (var s = Files.walk(dir)) {
            s.sorted(java.util.Comparator.reverseOrder()).forEach(q -> q.toFile().delete());
        } catch (java.io.IOException e) {
            System.err.println("cannot remove " + dir + ": " + e.getMessage());
        }
    }
}
