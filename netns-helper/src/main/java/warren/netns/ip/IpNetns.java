package warren.netns.ip;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The named network namespaces of one program run (the demo, a benchmark): each named
 * {@code PREFIX<pid>-<name>} so that parallel runs never collide, removed by {@link #cleanup()},
 * which a shutdown hook also runs (normal exit, Ctrl-C, SIGTERM). Plus the few ip(8) steps such
 * programs need. Programs may shell out to ip(8); the daemons do not (they use
 * {@link warren.linux.net.Rtnetlink}).
 */
public final class IpNetns {
    private final String prefix;
    private final List<String> made = new ArrayList<>();
    private final Thread hook = new Thread(this::cleanup, "netns-cleanup");

    /** {@code prefix} should be short: interface-free, but names show in {@code ip netns list}. */
    public IpNetns(String prefix) {
        this.prefix = prefix + ProcessHandle.current().pid() + "-";
        Runtime.getRuntime().addShutdownHook(hook);
    }

    /** Runs a command; throws with its output when it fails. */
    public static void sh(String... cmd) throws Exception {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        if (!p.waitFor(60, TimeUnit.SECONDS) || p.exitValue() != 0) {
            throw new IllegalStateException(String.join(" ", cmd) + ": " + out);
        }
    }

    /** A new namespace with loopback up; returns its name (its path is /run/netns/NAME). */
    public synchronized String add(String name) throws Exception {
        String n = prefix + name;
        sh("ip", "netns", "add", n);
        made.add(n);
        sh("ip", "-n", n, "link", "set", "lo", "up");
        return n;
    }

    /** The namespaces made so far, oldest first. */
    public synchronized List<String> names() {
        return List.copyOf(made);
    }

    /** A veth pair between two namespaces, addressed and up. */
    public static void veth(String a, String ifa, String addrA, String b, String ifb, String addrB) throws Exception {
        sh("ip", "-n", a, "link", "add", ifa, "type", "veth", "peer", "name", ifb, "netns", b);
        sh("ip", "-n", a, "addr", "add", addrA, "dev", ifa);
        sh("ip", "-n", b, "addr", "add", addrB, "dev", ifb);
        sh("ip", "-n", a, "link", "set", ifa, "up");
        sh("ip", "-n", b, "link", "set", ifb, "up");
    }

    /** Runs a command in a namespace and returns its output (stdout and stderr). */
    public static String exec(String ns, String... cmd) throws Exception {
        return run(ns, cmd).output;
    }

    /** A command's exit status and output (stdout and stderr). */
    public record Result(int status, String output) {}

    /** Runs a command in a namespace; its exit status (-1: still running after 120 s, killed) and output. */
    public static Result run(String ns, String... cmd) throws Exception {
        List<String> c = new ArrayList<>(List.of("ip", "netns", "exec", ns));
        c.addAll(List.of(cmd));
        Process p = new ProcessBuilder(c).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        if (!p.waitFor(120, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            return new Result(-1, out);
        }
        return new Result(p.exitValue(), out);
    }

    /** Starts a command in a namespace, its output discarded. */
    public static Process start(String ns, String... cmd) throws Exception {
        List<String> c = new ArrayList<>(List.of("ip", "netns", "exec", ns));
        c.addAll(List.of(cmd));
        return new ProcessBuilder(c).redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
    }

    /** Removes every namespace made here (tolerates ones already gone); idempotent. */
    public synchronized void cleanup() {
        for (String n : made) {
            try {
                sh("ip", "netns", "del", n);
            } catch (Exception ignored) {
                // already gone
            }
        }
        made.clear();
    }
}
