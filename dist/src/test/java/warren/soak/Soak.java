package warren.soak;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import warren.daemon.testing.SystemdBoot;
import warren.netns.testing.TestNetwork;

/**
 * The soak with faults (issue 16, item 2; docs/testing.md, "Soak"): one real systemd
 * ({@link SystemdBoot}: private pid, mount, network namespaces; the built .deb installed) runs all
 * three daemons from their shipped units while traffic flows through each (Splicer: TCP pairs;
 * Bumblebee: TCP and UDP flows from the on-ramp simulator; Fish: TCP and UDP flows to an internet
 * namespace), every flow of known bytes hashed end to end, a fixed number at once, a new one
 * started as one ends. Meanwhile, at seeded random moments, one fault at a time ({@link Kind}):
 * each kind at least once however short the run. At the end: every flow's bytes equal (or a loss
 * by design counted apart), every request answered once, each daemon's fds and RSS near their
 * baseline, every process and namespace gone; the table of what was injected and what happened.
 *
 * <p>Limits made small so that a burst reaches them: splice.max_pairs 40, bumblebee.slots 64
 * (quarantine 2 s, idle timeout 5 s), a Fish tenant of 8 ports (tcp_close_timeout 2 s).
 */
final class Soak {
    static final int SPLICER_MAX_PAIRS = 40;
    static final int BUMBLEBEE_SLOTS = 64;
    /**
     * fds a daemon may hold above its baseline at the end: Splicer keeps up to splice.pipes_kept = 8
     * idle pipes (16 fds), and a successor or a recovered process opens the jars of the classes it
     * loads lazily (a recovered process loads the fd store's, not the handoff's), ~10 more.
     */
    static final int FD_TOLERANCE = 32;
    /**
     * RSS a daemon may have above its baseline at the end (KiB): a JVM's heap grows to what its
     * collector lets it (serial, 16 MiB young generation, old generation collected only when full), so
     * a leak shows as growth past this, not as any growth.
     */
    static final long RSS_TOLERANCE_KIB = 128 << 10;
    static final List<String> DAEMONS = List.of("splicer", "bumblebee", "fish");

    /** What the soak injects. */
    enum Kind {
        RELOAD("reload", "systemctl reload (upgrade in place)"),
        UPGRADE("upgrade", "warren upgrade (in place)"),
        SIGHUP("sighup", "SIGHUP to the main pid"),
        KILL9("kill9", "kill -9 of the main pid"),
        SUCCESSOR_CRASH("crash", "successor that exits 3"),
        SUCCESSOR_HANG("hang", "successor that hangs (sleep)"),
        DISCONNECT("disconnect", "front proxy gone mid-request"),
        BURST("burst", "burst to slot/port exhaustion");

        /** The name {@code --faults} knows it by. */
        final String flag;
        final String words;

        Kind(String flag, String words) {
            this.flag = flag;
            this.words = words;
        }

        static Kind of(String flag) {
            for (Kind k : values()) {
                if (k.flag.equals(flag)) {
                    return k;
                }
            }
            throw new IllegalArgumentException("warren.soak.faults: no fault '" + flag + "' (one of "
                    + java.util.Arrays.stream(values()).map(k -> k.flag).toList() + ")");
        }
    }

    /**
     * Which faults go to which daemons: {@code ""} (all), or {@code kind,kind...[@daemon,daemon...]}
     * (e.g. {@code upgrade,kill9@splicer}: only those, only on Splicer; to chase one failure with
     * many more of its injections per minute). Traffic still flows through all three.
     */
    record Faults(List<Kind> kinds, List<String> daemons) {
        static final Faults ALL = new Faults(List.of(Kind.values()), DAEMONS);

        static Faults parse(String spec) {
            if (spec == null || spec.isBlank()) {
                return ALL;
            }
            String[] kd = spec.strip().split("@", 2);
            List<Kind> kinds = java.util.Arrays.stream(kd[0].split(",")).map(String::strip).map(Kind::of).distinct().toList();
            List<String> daemons = kd.length < 2 ? DAEMONS
                    : java.util.Arrays.stream(kd[1].split(",")).map(String::strip).distinct().toList();
            for (String d : daemons) {
                if (!DAEMONS.contains(d)) {
                    throw new IllegalArgumentException("warren.soak.faults: no daemon '" + d + "' (one of " + DAEMONS + ")");
                }
            }
            if (kinds.contains(Kind.DISCONNECT) && !daemons.contains("splicer")) {
                throw new IllegalArgumentException("warren.soak.faults: disconnect is a Splicer fault; add splicer");
            }
            return new Faults(kinds, daemons);
        }
    }

    /** One row of the table: a kind on a daemon. */
    private static final class Row {
        int count;
        int expected;
        long millis;
        final List<String> outcomes = new ArrayList<>();
    }

    private final Duration length;
    private final long seed;
    private final Random random;
    private final Ledger ledger = new Ledger();
    private final Map<String, Row> rows = new TreeMap<>();
    private final Map<String, Long> lastKill = new LinkedHashMap<>();
    private final StringBuilder report = new StringBuilder();
    private SystemdBoot sd;
    private SplicerLoad splicer;
    private BumblebeeLoad bumblebee;
    private FishLoad fish;

    private final Path progress;
    private final Faults faults;
    /** Where each daemon's whole journal is copied at the end, or null. */
    private final Path journals;

    /** {@code progress}: a file that gets each line of the report as it happens (surefire shows a test's output only at its end). */
    Soak(Duration length, long seed, Path progress) throws java.io.IOException {
        this(length, seed, progress, Faults.ALL, null);
    }

    /** {@code journals}: a directory that gets {@code <daemon>.journal} at the end (the run's stage goes with it). */
    Soak(Duration length, long seed, Path progress, Faults faults, Path journals) throws java.io.IOException {
        this.faults = faults;
        this.journals = journals;
        this.length = length;
        this.seed = seed;
        this.random = new Random(seed);
        this.progress = progress;
        Files.deleteIfExists(progress);
        ledger.log = this::progress;
    }

    private synchronized void progress(String line) {
        try {
            Files.writeString(progress, String.format("%tT soak: %s%n", System.currentTimeMillis(), line),
                    java.nio.file.StandardOpenOption.CREATE, java.nio.file.StandardOpenOption.APPEND);
        } catch (java.io.IOException e) {
            System.err.println("soak: cannot write " + progress + ": " + e.getMessage());
        }
    }

    /** Runs the soak; the report (tables, failures); a failed assertion if anything failed. */
    String run(Path stage) throws Exception {
        say("seed " + seed + ", " + length.toSeconds() + " s of faults (./warren soak --seed " + seed + " repeats the schedule)");
        Files.createDirectories(stage);
        SystemdBoot.stagePackage(stage, SystemdBoot.builtPackage());
        TestNetwork net = new TestNetwork();
        List<String> namespaces = List.of();
        Map<String, long[]> baseline = new LinkedHashMap<>();
        Map<String, long[]> end = new LinkedHashMap<>();
        try {
            fish = new FishLoad(net, ledger, seed); // namespaces before the boot: it sees /run/netns as it is then
            try (SystemdBoot boot = new SystemdBoot(stage)) {
                sd = boot;
                configure();
                String common = sd.systemctl("start", "warren-splicer.socket", "warren-bumblebee.socket", "warren-fish.socket");
                if (!common.isBlank()) {
                    say("systemctl start: " + common.strip());
                }
                splicer = new SplicerLoad(sd.path("/run/warren/splicer.sock"), ledger, seed);
                bumblebee = new BumblebeeLoad(sd.path("/run/warren/bumblebee.sock"), net, ledger, seed);
                fish.begin(sd.path("/run/warren/fish.sock"));
                List<Load> loads = List.of(splicer, bumblebee, fish);
                for (Load l : loads) {
                    l.warmUp();
                }
                for (String d : DAEMONS) {
                    baseline.put(d, settle(d, null));
                }
                say("baseline (fds, RSS KiB): " + describe(baseline));
                for (Load l : loads) {
                    l.start();
                }
                inject();
                for (Load l : loads) {
                    l.stop();
                }
                for (String d : DAEMONS) {
                    end.put(d, settle(d, baseline.get(d)));
                }
                say("at the end (fds, RSS KiB): " + describe(end));
                String dropped = sd.exec("sh", "-c", "journalctl -u warren-splicer.service -o cat | grep -c 'gone: answer to request'");
                ledger.count("splicer answers dropped, their requester gone (journal lines)", Long.parseLong(dropped.strip()));
                for (Load l : loads) {
                    l.finish();
                }
                if (journals != null) {
                    Files.createDirectories(journals);
                    for (String d : DAEMONS) {
                        Files.writeString(journals.resolve(d + ".journal"), sd.exec("journalctl", "-u", "warren-" + d
                                + ".service", "-o", "short-precise", "--no-pager"));
                    }
                }
                if (!ledger.failures().isEmpty()) {
                    // what the daemons said about their crashes and handoffs, for the failures above
                    for (String d : DAEMONS) {
                        say(d + "'s journal on recoveries and handoffs:\n" + sd.exec("sh", "-c", "journalctl -u warren-" + d
                                + ".service -o short-precise --no-pager | grep -E 'fd store|recovered|dropped|upgrade:|took over|INTERNAL|warn' | tail -n 60"));
                    }
                }
                for (String d : DAEMONS) {
                    String unit = "warren-" + d + ".service";
                    sd.systemctl("stop", unit);
                    if (!sd.show(unit, "ActiveState").equals("inactive") || !sd.show(unit, "ExecMainStatus").equals("0")) {
                        ledger.fail(d + " did not stop cleanly: " + sd.report(d));
                    }
                    ledger.count(d + " restarts by systemd (NRestarts)", Long.parseLong(sd.show(unit, "NRestarts")));
                }
            } finally {
                for (Load l : new Load[] {splicer, bumblebee, fish}) {
                    if (l != null) {
                        l.close();
                    }
                }
            }
        } finally {
            namespaces = net.namespaceNames();
            net.close();
            SystemdBoot.deleteTree(stage);
        }
        leftovers(namespaces);
        checkResources(baseline, end);
        table();
        if (!ledger.failures().isEmpty()) {
            report.append("\nFAILURES (").append(ledger.failures().size()).append("):\n");
            ledger.failures().forEach(f -> report.append("  ").append(f).append('\n'));
        }
        return report.toString();
    }

    boolean failed() {
        return !ledger.failures().isEmpty();
    }

    private void configure() throws Exception {
        sd.configurePackage();
        String common = "audit.path = /var/log/warren/audit.jsonl\nupgrade.allow_command = true\n";
        sd.appendConfig("splicer", common + "splice.max_pairs = " + SPLICER_MAX_PAIRS + "\nsplice.pipes_kept = 8\n");
        sd.appendConfig("bumblebee", common + "bumblebee.slots = " + BUMBLEBEE_SLOTS
                + "\nbumblebee.quarantine = 2s\nbumblebee.idle_timeout = 5s\n");
        sd.appendConfig("fish", common + "fish.netns = " + sd.netns(fish.egressNamespace())
                + "\nfish.soft_unicast_prefixes = 198.18.202.0/24\nfish.tcp_close_timeout = 2s\nfish.udp_timeout = 3s\n");
    }

    /** Faults until the run's length is up: first each kind once (shuffled), then kinds at random. */
    private void inject() throws Exception {
        List<Kind> first = new ArrayList<>(faults.kinds());
        Collections.shuffle(first, random);
        List<String> targets = faults.daemons();
        long deadline = System.nanoTime() + length.toNanos();
        long n = 0;
        while (!first.isEmpty() || System.nanoTime() < deadline) {
            Thread.sleep(500 + random.nextInt(2500)); // a random moment: the flows are at random points of their lives
            Kind k = first.isEmpty() ? faults.kinds().get(random.nextInt(faults.kinds().size())) : first.remove(0);
            String d = k == Kind.DISCONNECT ? "splicer" : targets.get(random.nextInt(targets.size()));
            if (k == Kind.KILL9) {
                d = killable(d, targets);
                if (d == null) {
                    if (faults.kinds().size() == 1) {
                        Thread.sleep(1000); // kill -9 alone: wait for systemd's start limit to allow the next
                        continue;
                    }
                    k = faults.kinds().contains(Kind.RELOAD) || faults == Faults.ALL ? Kind.RELOAD
                            : faults.kinds().stream().filter(x -> x != Kind.KILL9).findFirst().orElseThrow();
                    d = k == Kind.DISCONNECT ? "splicer" : targets.get(random.nextInt(targets.size()));
                }
            }
            long t0 = System.nanoTime();
            String outcome;
            boolean ok;
            try {
                outcome = once(k, d, ++n);
                ok = !outcome.startsWith("UNEXPECTED");
            } catch (Exception e) {
                outcome = "UNEXPECTED: " + e;
                ok = false;
            }
            long ms = (System.nanoTime() - t0) / 1_000_000;
            if (!ok) {
                ledger.fail(k.words + " on " + d + ": " + outcome + sd.report(d));
            }
            Row r = rows.computeIfAbsent(k.ordinal() + " " + d, x -> new Row());
            r.count++;
            r.expected += ok ? 1 : 0;
            r.millis += ms;
            if (r.outcomes.size() < 2 && !r.outcomes.contains(outcome)) {
                r.outcomes.add(outcome);
            }
            say(String.format("injection %d: %s on %s (%d ms): %s", n, k.words, d, ms, outcome));
        }
    }

    /**
     * {@code d} or another daemon not killed in the last 12 s (systemd refuses a 6th start within
     * 10 s, StartLimitBurst; a soak that tripped it would test the rate limit, not recovery), or null.
     */
    private String killable(String d, List<String> targets) {
        List<String> order = new ArrayList<>(targets);
        Collections.rotate(order, -targets.indexOf(d));
        for (String c : order) {
            Long t = lastKill.get(c);
            if (t == null || System.nanoTime() - t > 12_000_000_000L) {
                lastKill.put(c, System.nanoTime());
                return c;
            }
        }
        return null;
    }

    private String once(Kind k, String d, long n) throws Exception {
        String unit = "warren-" + d + ".service";
        String ctl = "/run/warren/" + d + ".sock";
        String pid0 = sd.show(unit, "MainPID");
        switch (k) {
            case RELOAD -> {
                String out = sd.systemctl("reload", unit);
                return replaced(unit, pid0, out);
            }
            case UPGRADE -> {
                String out = sd.exec("sh", "-c", "/usr/bin/warren upgrade " + d + " --control " + ctl + " 2>&1; echo status=$?");
                return out.strip().endsWith("status=0") ? replaced(unit, pid0, out) : "UNEXPECTED: " + out;
            }
            case SIGHUP -> {
                sd.exec("kill", "-HUP", pid0);
                return replaced(unit, awaitNewPid(unit, pid0), pid0, "");
            }
            case KILL9 -> {
                long h = ledger.openKill(d);
                String pid1;
                try {
                    pid1 = sd.killMainAndAwaitRestart(unit);
                } finally {
                    ledger.closeWindow(h);
                }
                return replaced(unit, pid1, pid0, "restarted by systemd from its fd store: ");
            }
            case SUCCESSOR_CRASH, SUCCESSOR_HANG -> {
                // the successor's command gets "--handoff PATH" appended: sh -c ignores it (sleep would not)
                boolean crash = k == Kind.SUCCESSOR_CRASH;
                String cmd = crash ? "--timeout 10000 -- sh -c 'exit 3'" : "--timeout 2000 -- sh -c 'sleep 60'";
                String out = sd.exec("sh", "-c", "/usr/bin/warren upgrade " + d + " --control " + ctl + " " + cmd
                        + " 2>&1; echo status=$?");
                String pid1 = sd.show(unit, "MainPID");
                String why = out.lines().filter(l -> l.contains("upgrade failed")).findFirst().orElse("").strip();
                String want = crash ? "exited" : "did not connect within 2000 ms";
                if (!out.strip().endsWith("status=1") || !pid1.equals(pid0) || !sd.show(unit, "ActiveState").equals("active")
                        || !why.contains(want)) {
                    return "UNEXPECTED: pid " + pid0 + " -> " + pid1 + ": " + out;
                }
                return "refused, pid " + pid0 + " serves on (" + trim(why.substring(why.indexOf("upgrade failed"))) + ")";
            }
            case DISCONNECT -> {
                return splicer.disconnect(n);
            }
            case BURST -> {
                return switch (d) {
                    case "splicer" -> splicer.burst();
                    case "bumblebee" -> bumblebee.burst();
                    default -> fish.burst();
                };
            }
            default -> throw new IllegalStateException(k.name());
        }
    }

    private String replaced(String unit, String pid0, String out) throws Exception {
        String r = replaced(unit, sd.show(unit, "MainPID"), pid0, "");
        return r.startsWith("UNEXPECTED") ? r + ": " + out.strip() : r;
    }

    private String replaced(String unit, String pid1, String pid0, String prefix) throws Exception {
        String state = sd.show(unit, "ActiveState");
        if (pid1.equals(pid0) || pid1.equals("0") || !state.equals("active")) {
            return "UNEXPECTED: pid " + pid0 + " -> " + pid1 + ", " + state;
        }
        return prefix + "pid " + pid0 + " -> " + pid1 + ", active";
    }

    private String awaitNewPid(String unit, String pid0) throws Exception {
        long deadline = System.nanoTime() + 60_000_000_000L;
        String now = pid0;
        while ((now.equals(pid0) || now.equals("0")) && System.nanoTime() < deadline) {
            Thread.sleep(50);
            now = sd.show(unit, "MainPID");
        }
        return now;
    }

    private static String trim(String s) {
        return s.length() > 140 ? s.substring(0, 140) + "..." : s;
    }

    /** {fds, RSS KiB} of a daemon's main process, read inside its pid namespace. */
    private long[] measure(String d) throws Exception {
        String pid = sd.show("warren-" + d + ".service", "MainPID");
        String[] out = sd.exec("sh", "-c", "ls /proc/" + pid + "/fd | wc -l; awk '/^VmRSS/{print $2}' /proc/" + pid + "/status")
                .strip().split("\\s+");
        return new long[] {Long.parseLong(out[0]), Long.parseLong(out[1]), Long.parseLong(pid)};
    }

    /**
     * The daemon once its flows have ended. With a baseline: polled every 2 s until its fds are
     * within {@link #FD_TOLERANCE} of it (ended flows close their fds after bumblebee.close_linger or
     * idle_timeout and Fish's expiries, all seconds here) or 120 s. Without (taking the baseline):
     * until 5 readings 2 s apart agree, 8 s, longer than any of those timers.
     */
    private long[] settle(String d, long[] base) throws Exception {
        long deadline = System.nanoTime() + 120_000_000_000L;
        long[] last = measure(d);
        int same = 1;
        while (System.nanoTime() < deadline) {
            Thread.sleep(2000);
            long[] now = measure(d);
            same = now[0] == last[0] ? same + 1 : 1;
            last = now;
            if (base == null ? same == 5 : now[0] <= base[0] + FD_TOLERANCE) {
                return now;
            }
        }
        return last;
    }

    private static String describe(Map<String, long[]> m) {
        StringBuilder sb = new StringBuilder();
        m.forEach((d, v) -> sb.append(d).append(" pid ").append(v[2]).append(": ").append(v[0]).append(" fds, ")
                .append(v[1]).append(" KiB; "));
        return sb.toString();
    }

    private void checkResources(Map<String, long[]> baseline, Map<String, long[]> end) {
        for (String d : baseline.keySet()) {
            long[] b = baseline.get(d);
            long[] e = end.get(d);
            if (e == null) {
                continue;
            }
            if (e[0] > b[0] + FD_TOLERANCE) {
                ledger.fail(d + ": " + e[0] + " fds at the end, baseline " + b[0] + " (tolerance " + FD_TOLERANCE + ")");
            }
            if (e[1] > b[1] + RSS_TOLERANCE_KIB) {
                ledger.fail(d + ": RSS " + e[1] + " KiB at the end, baseline " + b[1] + " (tolerance " + RSS_TOLERANCE_KIB + ")");
            }
        }
    }

    /** No process of the run left (the boot's pid namespace gone with its PID 1) and no namespace. */
    private void leftovers(List<String> namespaces) throws Exception {
        List<ProcessHandle> left = ProcessHandle.current().descendants().filter(ProcessHandle::isAlive).toList();
        if (!left.isEmpty()) {
            ledger.fail("processes left: " + left.stream().map(p -> p.pid() + " " + p.info().command().orElse("?")).toList());
        }
        Process p = new ProcessBuilder("ip", "netns", "list").redirectErrorStream(true).start();
        String list = new String(p.getInputStream().readAllBytes());
        p.waitFor();
        for (String ns : namespaces) {
            if (list.contains(ns)) {
                ledger.fail("namespace left: " + ns);
            }
        }
        ledger.count("processes left", left.size());
        say("left: " + left.size() + " processes; of " + namespaces.size() + " namespaces made, "
                + namespaces.stream().filter(list::contains).count() + " still there");
    }

    private void table() {
        report.append(String.format("%nsoak: seed %d, %d s of faults%n%n", seed, length.toSeconds()));
        report.append(String.format("| %-38s | %-9s | %5s | %11s | %7s | %s%n", "injected", "daemon", "count", "as expected",
                "mean ms", "what happened (first ones)"));
        report.append("|").append("-".repeat(40)).append("|").append("-".repeat(11)).append("|-------|-------------|---------|---\n");
        rows.forEach((key, r) -> {
            String[] kd = key.split(" ");
            Kind k = Kind.values()[Integer.parseInt(kd[0])];
            report.append(String.format("| %-38s | %-9s | %5d | %11s | %7d | %s%n", k.words, kd[1], r.count,
                    r.expected + "/" + r.count, r.millis / Math.max(1, r.count), String.join(" / ", r.outcomes)));
        });
        report.append(String.format("%n| %-78s | %8s%n", "traffic and accounting", "count"));
        ledger.counts().forEach((k, v) -> report.append(String.format("| %-78s | %8d%n", k, v.sum())));
    }

    private void say(String line) {
        progress(line);
        report.append(line).append('\n');
    }
}
