package warren.netns.testing;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;

/**
 * Private network namespaces for one test, removed afterwards even when the test fails.
 *
 * <ul>
 *   <li>Names are {@code wt-<pid>-<n>-<label>}: unique per test run, and {@link #sweep()} removes
 *       only {@code wt-*} namespaces whose pid is no longer alive (a crashed earlier run), never
 *       anything else.</li>
 *   <li>veth pairs are created inside a test namespace with their peer placed directly in the
 *       other ({@code ip -n A link add ... peer ... netns B}), so no interface ever appears in the
 *       root namespace; deleting a namespace deletes its veth ends.</li>
 *   <li>Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking range) and fd00::/8, /30 and
 *       /126 per link; no namespace gets a default route out.</li>
 *   <li>{@link Namespace#call} runs Java code on a fresh thread that has entered the namespace
 *       (setns(2)), so sockets it creates live there; {@link Namespace#start} runs a program inside
 *       ({@code ip netns exec}); every process started is killed at close.</li>
 *   <li>A shutdown hook closes networks still open if the JVM is interrupted.</li>
 * </ul>
 * Root is needed; {@link NetnsExtension} skips (not passes) a test without it.
 */
public final class TestNetwork implements AutoCloseable {
    public static final String PREFIX = "wt-";
    private static final AtomicInteger SEQ = new AtomicInteger();
    private static final AtomicInteger SUBNET = new AtomicInteger();
    private static final List<TestNetwork> OPEN = Collections.synchronizedList(new ArrayList<>());
    private static final long PID = ProcessHandle.current().pid();

    static {
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            for (TestNetwork n : new ArrayList<>(OPEN)) {
                n.close();
            }
        }, "warren-netns-cleanup"));
    }

    private final List<Namespace> namespaces = new ArrayList<>();
    private final List<Process> processes = new ArrayList<>();
    private boolean closed;

    public TestNetwork() {
        OPEN.add(this);
    }

    /** True if this process can create namespaces (root and the ip tool present). */
    public static boolean available() {
        boolean ip = Files.isExecutable(Path.of("/usr/sbin/ip")) || Files.isExecutable(Path.of("/sbin/ip"))
                || Files.isExecutable(Path.of("/usr/bin/ip"));
        return ip && Native.getuid() == 0 && Files.isDirectory(Path.of("/proc/self/ns"));
    }

    /** A new namespace with loopback up. */
    public synchronized Namespace namespace(String label) throws IOException {
        String name = PREFIX + PID + "-" + SEQ.incrementAndGet() + "-" + label;
        run("ip", "netns", "add", name);
        Namespace ns = new Namespace(this, name);
        namespaces.add(ns);
        run("ip", "-n", name, "link", "set", "lo", "up");
        return ns;
    }

    /** A veth pair between two namespaces, both ends up, with IPv4 /30 and IPv6 /126 addresses. */
    public synchronized Link link(Namespace a, Namespace b) throws IOException {
        int n = SUBNET.getAndIncrement();
        if (n >= 1 << 15) {
            throw new IllegalStateException("out of 198.18.0.0/15 test subnets");
        }
        String tag = String.format("wt%06x%04x", PID & 0xFFFFFF, n & 0xFFFF);
        String ifA = tag + "a";
        String ifB = tag + "b";
        int base = n * 4; // /30 blocks within 198.18.0.0/15
        String v4a = "198." + (18 + (base >> 16)) + "." + ((base >> 8) & 0xFF) + "." + ((base & 0xFF) + 1);
        String v4b = "198." + (18 + (base >> 16)) + "." + ((base >> 8) & 0xFF) + "." + ((base & 0xFF) + 2);
        String v6a = String.format("fd00:%x:%x::1", PID & 0xFFFF, n);
        String v6b = String.format("fd00:%x:%x::2", PID & 0xFFFF, n);
        run("ip", "-n", a.name, "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", b.name);
        run("ip", "-n", a.name, "addr", "add", v4a + "/30", "dev", ifA);
        run("ip", "-n", b.name, "addr", "add", v4b + "/30", "dev", ifB);
        run("ip", "-n", a.name, "-6", "addr", "add", v6a + "/126", "dev", ifA, "nodad");
        run("ip", "-n", b.name, "-6", "addr", "add", v6b + "/126", "dev", ifB, "nodad");
        run("ip", "-n", a.name, "link", "set", ifA, "up");
        run("ip", "-n", b.name, "link", "set", ifB, "up");
        return new Link(a, ifA, v4a, v6a, b, ifB, v4b, v6b);
    }

    synchronized Process track(Process p) {
        processes.add(p);
        return p;
    }

    /** The namespaces this network made. */
    public synchronized List<Namespace> namespaces() {
        return new ArrayList<>(namespaces);
    }

    /** Names of the namespaces this network made (for assertions). */
    public synchronized List<String> namespaceNames() {
        List<String> out = new ArrayList<>();
        namespaces.forEach(ns -> out.add(ns.name));
        return out;
    }

    /** What a person would ask for when a test fails: addresses, routes, sockets of each namespace. */
    public synchronized String dump() {
        StringBuilder sb = new StringBuilder();
        for (Namespace ns : namespaces) {
            sb.append("== ").append(ns.name).append('\n');
            for (String[] cmd : new String[][] {{"ip", "-n", ns.name, "-br", "addr"}, {"ip", "-n", ns.name, "route"},
                    {"ip", "netns", "exec", ns.name, "ss", "-tuanp"}}) {
                try {
                    sb.append(exec(cmd).output);
                } catch (IOException e) {
                    sb.append(e.getMessage()).append('\n');
                }
            }
        }
        return sb.toString();
    }

    /** Kills every process started here and deletes every namespace (with its veth ends). */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        for (Process p : processes) {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroy();
        }
        for (Process p : processes) {
            try {
                if (!p.waitFor(5, TimeUnit.SECONDS)) {
                    p.destroyForcibly();
                    p.waitFor(5, TimeUnit.SECONDS);
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        for (Namespace ns : namespaces) {
            try {
                run("ip", "netns", "del", ns.name);
            } catch (IOException e) {
                System.err.println("warning: could not delete namespace " + ns.name + ": " + e.getMessage());
            }
        }
        OPEN.remove(this);
    }

    /**
     * Removes {@code wt-<pid>-*} namespaces left by earlier runs whose process is gone. Touches no
     * other name. Returns what it removed.
     */
    public static List<String> sweep() throws IOException {
        List<String> removed = new ArrayList<>();
        for (String line : exec("ip", "netns", "list").output.split("\n")) {
            String name = line.split(" ")[0].trim();
            if (!name.startsWith(PREFIX)) {
                continue;
            }
            String[] parts = name.substring(PREFIX.length()).split("-", 2);
            long pid;
            try {
                pid = Long.parseLong(parts[0]);
            } catch (NumberFormatException e) {
                continue; // not of our making
            }
            if (pid != PID && ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false)) {
                continue; // a live run's namespace
            }
            if (pid == PID) {
                continue; // ours: closed by its own TestNetwork
            }
            exec("ip", "netns", "del", name);
            removed.add(name);
        }
        return removed;
    }

    /** Output and exit status of a command. */
    public record Result(int status, String output) {}

    static Result exec(String... cmd) throws IOException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        try {
            String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            if (!p.waitFor(30, TimeUnit.SECONDS)) {
                p.destroyForcibly();
                throw new IOException(String.join(" ", cmd) + ": timed out");
            }
            return new Result(p.exitValue(), out);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            p.destroyForcibly();
            throw new IOException("interrupted", e);
        }
    }

    static void run(String... cmd) throws IOException {
        Result r = exec(cmd);
        if (r.status != 0) {
            throw new IOException(String.join(" ", cmd) + " failed (" + r.status + "): " + r.output.strip());
        }
    }

    /** One test namespace. */
    public static final class Namespace {
        private final TestNetwork net;
        public final String name;

        Namespace(TestNetwork net, String name) {
            this.net = net;
            this.name = name;
        }

        /** Runs a command inside and waits for it. */
        public Result exec(String... cmd) throws IOException {
            return TestNetwork.exec(prefixed(cmd));
        }

        /** Starts a program inside; it is killed when the network closes. */
        public Process start(String... cmd) throws IOException {
            return net.track(new ProcessBuilder(prefixed(cmd)).redirectErrorStream(true).start());
        }

        /** Starts a program inside with a custom builder (redirects, environment). */
        public Process start(ProcessBuilder pb) throws IOException {
            List<String> cmd = new ArrayList<>(List.of("ip", "netns", "exec", name));
            cmd.addAll(pb.command());
            return net.track(pb.command(cmd).start());
        }

        private String[] prefixed(String... cmd) {
            List<String> out = new ArrayList<>(List.of("ip", "netns", "exec", name));
            out.addAll(List.of(cmd));
            return out.toArray(new String[0]);
        }

        /** Runs {@code body} on a new thread inside this namespace (setns); sockets it opens live here. */
        public <T> T call(Callable<T> body) throws Exception {
            CompletableFuture<T> result = new CompletableFuture<>();
            Thread t = new Thread(() -> {
                try (Fd nsFd = Fd.adopt(Native.open("/run/netns/" + name, Native.O_RDONLY))) {
                    Native.setns(nsFd.get(), Native.CLONE_NEWNET);
                    result.complete(body.call());
                } catch (Throwable e) {
                    result.completeExceptionally(e);
                }
            }, "in-" + name);
            t.start();
            try {
                return result.get(60, TimeUnit.SECONDS);
            } catch (java.util.concurrent.ExecutionException e) {
                Throwable cause = e.getCause();
                if (cause instanceof Exception) {
                    throw (Exception) cause;
                }
                throw e;
            }
        }

        @Override
        public String toString() {
            return name;
        }
    }

    /** A veth pair: each end's namespace, interface and addresses. */
    public record Link(Namespace a, String ifA, String v4a, String v6a, Namespace b, String ifB, String v4b,
            String v6b) {}
}
