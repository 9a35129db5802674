package warren.demo;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import warren.netns.ip.IpNetns;

/**
 * {@code ./warren demo [splicer|bumblebee|fish]}: each daemon doing its job, then each upgraded
 * in place while a long transfer runs through it. Exit status 0 when every check passed, 1 when
 * one failed, 2 on a usage error. Without root only Splicer's part runs (the others need network
 * namespaces, TUN devices and conntrack) and the demo says so.
 */
public final class Demo {
    private final PrintStream out;
    private final Path dir;
    private final IpNetns netns;
    private final List<Part> parts = new ArrayList<>();
    private final Map<String, String> skipped = new LinkedHashMap<>();

    private Demo(PrintStream out, List<String> which) throws IOException {
        this.out = out;
        this.dir = Files.createTempDirectory("warren-demo-");
        boolean root = isRoot();
        this.netns = root ? new IpNetns("wdemo-") : null;
        for (String name : which) {
            Part p = switch (name) {
                case "splicer" -> new SplicerPart(out, dir);
                case "bumblebee" -> new BumblebeePart(out, dir, netns);
                case "fish" -> new FishPart(out, dir, netns);
                default -> throw new IllegalArgumentException(name);
            };
            String why = root || name.equals("splicer") ? p.cannotRun()
                    : "needs root (network namespaces, a TUN device" + (name.equals("fish") ? ", conntrack)" : ")")
                            + "; run ./warren demo as root";
            if (why == null) {
                parts.add(p);
            } else {
                skipped.put(name, why);
            }
        }
    }

    public static void main(String[] args) {
        List<String> which = List.of("splicer", "bumblebee", "fish");
        if (args.length > 1) {
            usageError("one part at most");
        }
        if (args.length == 1) {
            switch (args[0]) {
                case "-h", "--help" -> {
                    System.out.println("""
                            usage: ./warren demo [splicer|bumblebee|fish]

                            Shows the three daemons doing their job, each as its own process, then each upgraded in
                            place while a long transfer runs through it (pids before and after, SHA-256 of what was
                            sent and of what came back, the flow's audit lines). Needs nothing configured; as root it
                            makes its own network namespaces (198.18.0.0/15, fd00::/8, nothing routed out) and removes
                            them on exit and on Ctrl-C. Without root only Splicer's part runs (on loopback).
                              splicer    a front proxy hands its connections to Splicer
                              bumblebee  curl's raw IP packets, handed over by an on-ramp, become kernel TCP sockets
                              fish       a tenant's curl and ping egress through Fish from a soft-unicast IP
                            Exit status: 0 when every check passed, 1 when one failed.""");
                    System.exit(0);
                }
                case "splicer", "bumblebee", "fish" -> which = List.of(args[0]);
                default -> usageError("unknown part '" + args[0] + "'");
            }
        }
        int rc;
        try {
            Demo d = new Demo(System.out, which);
            Thread hook = new Thread(d::cleanup, "demo-cleanup");
            Runtime.getRuntime().addShutdownHook(hook);
            rc = d.run();
            d.cleanup();
            Runtime.getRuntime().removeShutdownHook(hook);
        } catch (Exception e) {
            System.err.println("demo: failed: " + e);
            e.printStackTrace();
            rc = 1;
        }
        System.exit(rc);
    }

    private static void usageError(String what) {
        System.err.println("demo: " + what + " (usage: ./warren demo [splicer|bumblebee|fish]; try --help)");
        System.exit(2);
    }

    private int run() throws Exception {
        long t0 = System.nanoTime();
        out.println("== warren demo: " + String.join(", ", parts.stream().map(Part::name).toList())
                + (skipped.isEmpty() ? "" : " (not run: " + String.join(", ", skipped.keySet()) + ")"));
        skipped.forEach((n, why) -> out.println(n + ": not run, " + why));
        Map<String, Checks> checks = new LinkedHashMap<>();
        List<Part> started = new ArrayList<>();
        for (Part p : parts) {
            Checks c = new Checks(out);
            checks.put(p.name(), c);
            try {
                p.start();
                started.add(p);
            } catch (Exception e) {
                c.check(false, p.name() + " set up: " + e.getMessage());
            }
        }
        for (Part p : started) {
            attempt(p, checks.get(p.name()), false);
            out.printf("(at %.1f s)%n", (System.nanoTime() - t0) / 1e9);
        }
        for (Part p : started) {
            attempt(p, checks.get(p.name()), true);
            out.printf("(at %.1f s)%n", (System.nanoTime() - t0) / 1e9);
        }
        closeAll();
        double seconds = (System.nanoTime() - t0) / 1e9;
        out.println("\n== summary");
        int failed = 0;
        for (Map.Entry<String, Checks> e : checks.entrySet()) {
            Checks c = e.getValue();
            failed += c.failed();
            out.printf("%-10s %d of %d checks passed%n", e.getKey(), c.passed(), c.passed() + c.failed());
        }
        skipped.forEach((n, why) -> out.printf("%-10s not run: %s%n", n, why));
        if (!checks.isEmpty()) {
            out.printf("%s in %.1f s%n", failed == 0 ? "demo OK" : "demo FAILED (" + failed + " checks)", seconds);
        }
        if (checks.isEmpty()) {
            out.println("nothing ran");
            return 1;
        }
        return exitStatus(checks.values());
    }

    /** 0 when no check failed, else 1. */
    static int exitStatus(java.util.Collection<Checks> all) {
        return all.stream().anyMatch(c -> c.failed() > 0) ? 1 : 0;
    }

    /** Runs a part's job or upgrade; an exception is a failed check (the daemon's log is shown). */
    private void attempt(Part p, Checks c, boolean upgrade) {
        try {
            if (upgrade) {
                p.upgrade(c);
            } else {
                p.job(c);
            }
        } catch (Exception e) {
            c.check(false, p.name() + (upgrade ? " upgrade" : "") + " ran to the end: " + e);
            Path log = dir.resolve(p.name() + ".log");
            if (Files.exists(log)) {
                out.println("  " + p.name() + "'s output:");
                DaemonRun.tail(log, 20).forEach(l -> out.println("    " + l));
            }
        }
    }

    /** Stops every part at once (each daemon drains on SIGTERM; no need to wait for one after the other). */
    private void closeAll() {
        List<Thread> closing = new ArrayList<>();
        for (Part p : parts) {
            Thread t = new Thread(p::close, "demo-close-" + p.name());
            t.start();
            closing.add(t);
        }
        for (Thread t : closing) {
            try {
                t.join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
        }
    }

    private synchronized void cleanup() {
        closeAll();
        if (netns != null) {
            netns.cleanup();
        }
        try (var files = Files.walk(dir)) {
            files.sorted(Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
        } catch (IOException ignored) {
            // already gone
        }
    }

    static boolean isRoot() {
        try {
            return Files.readAllLines(Path.of("/proc/self/status")).stream()
                    .anyMatch(l -> l.startsWith("Uid:") && l.split("\\s+")[2].equals("0")); // effective uid
        } catch (IOException e) {
            return false;
        }
    }

    /** The first of {@code tools} not installed, or null. */
    static String missing(String... tools) {
        for (String t : tools) {
            if (!Files.isExecutable(Path.of("/usr/bin", t)) && !Files.isExecutable(Path.of("/usr/sbin", t))
                    && !Files.isExecutable(Path.of("/bin", t)) && !Files.isExecutable(Path.of("/sbin", t))) {
                return t + " is not installed (./warren test installs what the demo uses)";
            }
        }
        return null;
    }
}
