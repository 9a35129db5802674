package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.google.protobuf.ByteString;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.control.v1.Status;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.SystemdBoot;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;

/**
 * {@code ./warren bench crash}: how long Splicer takes to relay again after {@code kill -9} under a
 * real systemd (issue 16: "time from crash to relaying again", goal < 1 s), with N live pairs in
 * systemd's fd store. The shipped units, unmodified, in a {@link SystemdBoot}; N idle TCP pairs
 * plus one probe pair whose client writes a byte every millisecond while its far end notes when
 * each read returns. The recovery time of a crash is the longest gap between two consecutive
 * arrivals around it: the last byte the killed process relayed to the first the restarted one
 * did (systemd's restart delay, the new JVM, the fd store's recovery of every pair, and the
 * probe pair's first relay). After the last crash every pair must still relay a byte each way
 * (nothing lost). Not a test ({@code *Bench}: surefire's default includes leave it out of
 * {@code ./warren test}); {@code -Dwarren.crash.pairs=500,1000 -Dwarren.crash.runs=3}. Each run kills twice,
 * alternating: restarted with the postinst's class-data sharing archive and without it
 * ({@code WARREN_CDS=off} in a drop-in), so the two are compared side by side.
 *
 * <p>Ceiling here: systemd holds 4 fds per pair (two sockets, the read ends of two pinned pipes;
 * the description in the shared pair book) and must hand them back beside its own copies, about
 * half its RLIMIT_NOFILE hard limit of 20,000 (no CAP_SYS_RESOURCE): about 2,370 pairs (1,890 with
 * a memfd per pair, 1,350 when the write ends were stored too).
 */
class CrashRecoveryBench {
    private static final int PROBE_BYTES_MAX = 1 << 20;
    /**
     * What each run's two kills compare ({@code -Dwarren.crash.compare}): {@code cds} (the default)
     * restarts with the postinst's class archive, then without; {@code debug} restarts with the
     * archive both times, first with systemd at debug level during the kill (its lines say when it
     * forked and exec'd), then at info level (no debug lines, so no fork and exec phases), to see what
     * the debug logging itself costs a restart.
     */
    private static final boolean COMPARE_DEBUG = "debug".equals(System.getProperty("warren.crash.compare", "cds"));
    private static final String[] MODES = COMPARE_DEBUG ? new String[] {"on, systemd debug", "on, systemd info"}
            : new String[] {"on", "off (WARREN_CDS=off)"};
    /**
     * {@code -Dwarren.crash.java-opts=...}: the restarted daemon's JVM options instead of the
     * launcher's (e.g. {@code -XX:+UseSerialGC -Xmn16m -Xlog:startuptime} to see the JVM's own start
     * in the journal); empty: as shipped.
     */
    private static final String JAVA_OPTS = System.getProperty("warren.crash.java-opts", "").strip();

    @Test
    void killNineRecovery() throws Exception {
        assumeTrue(SystemdBoot.available(), "needs root and systemd");
        int[] sizes = Arrays.stream(System.getProperty("warren.crash.pairs", "500,1000").split(","))
                .mapToInt(s -> Integer.parseInt(s.strip())).toArray();
        int runs = Integer.getInteger("warren.crash.runs", 3);
        StringBuilder table = new StringBuilder(String.format(Locale.ROOT, "%-8s %-10s %-20s %-30s %-10s %-10s%n", "pairs",
                "fd store", "class archive", "crash -> relaying ms (runs)", "median", "max"));
        for (int n : sizes) {
            double[][] gaps = measure(n, runs, table);
            double[] medians = new double[2];
            for (int mode = 0; mode < 2; mode++) {
                double[] sorted = gaps[mode].clone();
                Arrays.sort(sorted);
                medians[mode] = sorted[sorted.length / 2];
                StringBuilder each = new StringBuilder();
                for (double g : gaps[mode]) {
                    each.append(each.length() == 0 ? "" : ", ").append(String.format(Locale.ROOT, "%.0f", g));
                }
                table.append(String.format(Locale.ROOT, "%-8d %-10s %-20s %-30s %-10.0f %-10.0f%n", n, 4 * n + 4 + 2,
                        MODES[mode], each, medians[mode], sorted[sorted.length - 1]));
            }
            table.append(String.format(Locale.ROOT, (COMPARE_DEBUG ? "# %d pairs: systemd at debug / at info = %.2f" : "# %d pairs: with the archive / without = %.2f")
                    + " (medians, runs alternated)%n",
                    n, medians[0] / medians[1]));
            System.out.print("\n" + table);
        }
        Path report = Path.of("target", "crash-report.txt");
        Files.writeString(report, table.toString());
    }

    private static double[][] measure(int n, int runs, StringBuilder log) throws Exception {
        Path stage = Files.createDirectories(Path.of("target", "crash-bench-" + ProcessHandle.current().pid() + "-" + n))
                .toAbsolutePath();
        SystemdBoot.stagePackage(stage, SystemdBoot.builtPackage());
        List<Fd> ends = new ArrayList<>();
        AtomicBoolean stop = new AtomicBoolean();
        long[] arrivals = new long[PROBE_BYTES_MAX];
        AtomicInteger arrived = new AtomicInteger();
        Thread writer = null;
        Thread reader = null;
        try (SystemdBoot sd = new SystemdBoot(stage)) {
            sd.configurePackage();
            sd.systemctl("start", "warren-splicer.socket");
            Path sock = sd.path("/run/warren/splicer.sock");
            try (ControlClient proxy = ControlClient.connect(sock);
                    Fd listener = TcpSockets.listen(new InetSocketAddress("127.0.0.1", 0), 512)) {
                try (Reply r = proxy.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                        .get(60, TimeUnit.SECONDS)) {
                    assertEquals("splicer", r.response().getStatus().getDaemon());
                }
                InetSocketAddress at = TcpSockets.localAddress(listener);
                List<CompletableFuture<Response>> accepted = new ArrayList<>();
                for (int i = 0; i <= n; i++) { // pair n is the probe
                    Fd c1 = TcpSockets.connect(at);
                    ends.add(c1);
                    Fd a0 = TcpSockets.accept(listener);
                    Fd b0 = TcpSockets.connect(at);
                    Fd c2 = TcpSockets.accept(listener);
                    ends.add(c2);
                    try (Fd a = a0; Fd b = b0) {
                        CompletableFuture<Response> ok = new CompletableFuture<>();
                        proxy.call(Request.newBuilder().setId(1 + i).setMetadata(ByteString.copyFromUtf8("c" + i))
                                .setSplice(Splice.newBuilder().setFdA(0).setFdB(1)), List.of(a, b), ok::complete)
                                .whenComplete((rep, x) -> {
                                    if (rep != null) {
                                        rep.close(); // the final Spliced (at the stop): its sockets closed
                                    }
                                });
                        accepted.add(ok);
                    }
                    if (accepted.size() >= 256) {
                        awaitAccepted(accepted);
                    }
                }
                awaitAccepted(accepted);
                int want = 4 * (n + 1) + 2; // each pair's 4 (the probe's too), the pair book, the control connection
                awaitStore(sd, want);
                Fd probeIn = ends.get(2 * n);
                Fd probeOut = ends.get(2 * n + 1);
                writer = new Thread(() -> {
                    jnr.ffi.Pointer one = Native.allocate(1);
                    long deadline = System.nanoTime() + TimeUnit.MINUTES.toNanos(10);
                    try {
                        while (!stop.get() && System.nanoTime() < deadline) {
                            if (Native.write(probeIn.get(), one, 1) != 1) {
                                return;
                            }
                            java.util.concurrent.locks.LockSupport.parkNanos(1_000_000);
                        }
                    } catch (Exception e) {
                        // ended below
                    }
                }, "probe-writer");
                reader = new Thread(() -> {
                    jnr.ffi.Pointer buf = Native.allocate(4096);
                    try {
                        while (!stop.get()) {
                            long got = Native.read(probeOut.get(), buf, 4096);
                            if (got <= 0) {
                                return;
                            }
                            int k = arrived.get();
                            if (k < arrivals.length) {
                                arrivals[k] = System.nanoTime();
                                arrived.set(k + 1);
                            }
                        }
                    } catch (Exception e) {
                        // ended below
                    }
                }, "probe-reader");
                writer.setDaemon(true);
                reader.setDaemon(true);
                writer.start();
                reader.start();
                awaitArrivals(arrived, 50);
                double[][] gaps = new double[2][runs];
                for (int kill9 = 0; kill9 < 2 * runs; kill9++) {
                    int r = kill9 / 2;
                    int mode = kill9 % 2;
                    // the next start's environment (a drop-in; daemon-reload applies it to the restart)
                    sd.exec("sh", "-c", "mkdir -p /run/systemd/system/warren-splicer.service.d && printf '[Service]\\nEnvironment=WARREN_CDS="
                            + (mode == 0 || COMPARE_DEBUG ? "on" : "off") + "\\n" + (JAVA_OPTS.isEmpty() ? "" : "Environment=\"WARREN_JAVA_OPTS="
                            + JAVA_OPTS + "\"\\n") + "' > /run/systemd/system/warren-splicer.service.d/cds.conf");
                    sd.systemctl("daemon-reload");
                    int before = arrived.get();
                    // systemd's debug lines say when it forked the new process and when that exec'd
                    if (mode == 0 || !COMPARE_DEBUG) {
                        sd.exec("systemd-analyze", "log-level", "debug");
                    }
                    long kill = System.nanoTime();
                    String pid = sd.killMainAndAwaitRestart("warren-splicer.service");
                    try {
                        awaitArrivals(arrived, arrived.get() + 50); // relaying again, and for a while
                    } catch (AssertionError e) {
                        throw new AssertionError(e.getMessage() + " after kill -9 #" + (kill9 + 1) + " of " + n
                                + " pairs; fd store " + sd.show("warren-splicer.service", "NFileDescriptorStore") + ", state "
                                + sd.show("warren-splicer.service", "ActiveState") + "; the journal:\n" + sd.exec("journalctl",
                                "--no-pager", "-o", "short-precise", "-n", "40", "-u", "warren-splicer.service"), e);
                    }
                    int after = arrived.get();
                    long worst = 0;
                    for (int k = Math.max(1, before - 1); k < after; k++) {
                        if (arrivals[k] >= kill - 50_000_000L) {
                            worst = Math.max(worst, arrivals[k] - arrivals[k - 1]);
                        }
                    }
                    gaps[mode][r] = worst / 1e6;
                    sd.exec("systemd-analyze", "log-level", "info");
                    String recovered = sd.journal("warren-splicer.service").lines()
                            .filter(l -> l.contains("recovered after a crash from")).reduce((x, y) -> y).orElse("(no line)");
                    String maps = sd.exec("sh", "-c", "grep -c /var/lib/warren/warren.jsa /proc/" + pid + "/maps || true").strip();
                    System.out.printf(Locale.ROOT, "splicer %d pairs, kill -9 #%d, class archive %s (%s mappings): relaying again after %.1f ms (pid %s): %s%n",
                            n, r + 1, MODES[mode], maps, gaps[mode][r], pid, recovered);
                    System.out.println("  " + phases(sd.exec("journalctl", "--no-pager", "-o", "short-unix", "-u",
                            "warren-splicer.service"), gaps[mode][r]));
                    if (kill9 == 2 * runs - 1) { // what took the time, as the journal saw it
                        System.out.println(sd.exec("journalctl", "--no-pager", "-o", "short-precise", "-n", "25",
                                "-u", "warren-splicer.service"));
                    }
                    awaitStore(sd, want);
                    Thread.sleep(3000); // systemd's start limit: 5 starts per 10 s
                }
                stop.set(true);
                // nothing lost: every pair relays one byte each way after the last crash
                jnr.ffi.Pointer one = Native.allocate(1);
                for (int i = 0; i < n; i++) {
                    Fd c1 = ends.get(2 * i);
                    Fd c2 = ends.get(2 * i + 1);
                    assertEquals(1, Native.write(c1.get(), one, 1));
                    assertEquals(1, readWithin(c2, one), "pair " + i + " relays a -> b after the crashes");
                    assertEquals(1, Native.write(c2.get(), one, 1));
                    assertEquals(1, readWithin(c1, one), "pair " + i + " relays b -> a after the crashes");
                }
                log.append(String.format(Locale.ROOT, "# %d pairs: every pair relayed a byte each way after %d kill -9%n", n,
                        2 * runs));
                return gaps;
            } finally {
                stop.set(true);
                Fd.closeAll(ends); // the pairs end; their answers go nowhere; the boot goes with sd
                if (writer != null) {
                    writer.join(5000);
                }
                if (reader != null) {
                    reader.join(5000);
                }
            }
        } finally {
            SystemdBoot.deleteTree(stage);
        }
    }

    /**
     * Where the last crash's time went, from the journal (systemd at debug level during the kill):
     * ms after systemd saw the main process die to its restart job, the fork, the exec of the
     * launcher, the daemon's main (its "recovered" line says how long after main it was serving)
     * and serving; then the probe's relaying again (the gap, which starts at the last byte before
     * the kill).
     */
    static String phases(String journal, double gapMs) {
        String[] lines = journal.split("\n");
        int from = -1;
        for (int i = 0; i < lines.length; i++) {
            if (lines[i].contains("Main process exited")) {
                from = i;
            }
        }
        if (from < 0) {
            return "phases: no 'Main process exited' in the journal";
        }
        double t0 = unixMs(lines[from]);
        StringBuilder out = new StringBuilder("phases, ms after systemd saw the exit:");
        String[][] marks = {{"Scheduled restart job", "restart job"}, {"Forked ", "forked"}, {"Executing: ", "exec"},
                {"control socket", "first line"}};
        for (String[] m : marks) {
            for (int i = from; i < lines.length; i++) {
                if (lines[i].contains(m[0])) {
                    out.append(String.format(Locale.ROOT, " %s +%.0f,", m[1], unixMs(lines[i]) - t0));
                    break;
                }
            }
        }
        for (int i = from; i < lines.length; i++) {
            java.util.regex.Matcher x = java.util.regex.Pattern.compile("serving ([0-9.]+) ms after main").matcher(lines[i]);
            if (lines[i].contains("recovered after a crash from") && x.find()) {
                double serving = unixMs(lines[i]) - t0;
                out.append(String.format(Locale.ROOT, " main +%.0f, serving +%.0f,", serving - Double.parseDouble(x.group(1)),
                        serving));
                break;
            }
        }
        return out.append(String.format(Locale.ROOT, " (kill to relaying %.0f)", gapMs)).toString();
    }

    private static double unixMs(String line) {
        return Double.parseDouble(line.substring(0, line.indexOf(' '))) * 1000;
    }

    private static void awaitAccepted(List<CompletableFuture<Response>> accepted) throws Exception {
        for (CompletableFuture<Response> f : accepted) {
            Response r = f.get(60, TimeUnit.SECONDS);
            assertTrue(r.hasAccepted(), "accepted: " + r);
        }
        accepted.clear();
    }

    private static void awaitStore(SystemdBoot sd, int want) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        String have = sd.show("warren-splicer.service", "NFileDescriptorStore");
        while (Integer.parseInt(have) < want && System.nanoTime() < deadline) {
            Thread.sleep(200);
            have = sd.show("warren-splicer.service", "NFileDescriptorStore");
        }
        assertTrue(Integer.parseInt(have) >= want, "fd store holds " + have + " of " + want);
    }

    private static void awaitArrivals(AtomicInteger arrived, int atLeast) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (arrived.get() < atLeast && System.nanoTime() < deadline) {
            Thread.sleep(5);
        }
        assertTrue(arrived.get() >= atLeast, "the probe pair relays: " + arrived.get() + " reads of " + atLeast);
    }

    private static long readWithin(Fd fd, jnr.ffi.Pointer buf) throws Exception {
        if ((Native.pollOne(fd.get(), Native.POLLIN, 10_000) & Native.POLLIN) == 0) {
            return 0;
        }
        return Native.read(fd.get(), buf, 1);
    }
}
