package warren.benchmarks;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The namespaces of one benchmark run: named {@code PREFIX<name>}, removed by {@link #cleanup()}
 * (also from a shutdown hook), with the few shell steps the benchmarks need. Benchmarks may shell
 * out to ip(8); production code does not.
 */
final class BenchNetns {
    private final String prefix;
    private final List<String> made = new ArrayList<>();

    BenchNetns(String prefix) {
        this.prefix = prefix + ProcessHandle.current().pid() + "-";
        Runtime.getRuntime().addShutdownHook(new Thread(this::cleanup));
    }

    static void sh(String... cmd) throws Exception {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        if (!p.waitFor(60, TimeUnit.SECONDS) || p.exitValue() != 0) {
            throw new IllegalStateException(String.join(" ", cmd) + ": " + out);
        }
    }

    /** A new namespace with loopback up; returns its name. */
    synchronized String add(String name) throws Exception {
        String n = prefix + name;
        sh("ip", "netns", "add", n);
        made.add(n);
        sh("ip", "-n", n, "link", "set", "lo", "up");
        return n;
    }

    /** A veth pair between two namespaces, addressed and up. */
    static void veth(String a, String ifa, String addrA, String b, String ifb, String addrB) throws Exception {
        sh("ip", "-n", a, "link", "add", ifa, "type", "veth", "peer", "name", ifb, "netns", b);
        sh("ip", "-n", a, "addr", "add", addrA, "dev", ifa);
        sh("ip", "-n", b, "addr", "add", addrB, "dev", ifb);
        sh("ip", "-n", a, "link", "set", ifa, "up");
        sh("ip", "-n", b, "link", "set", ifb, "up");
    }

    /** Runs a command in a namespace and returns its output. */
    static String exec(String ns, String... cmd) throws Exception {
        List<String> c = new ArrayList<>(List.of("ip", "netns", "exec", ns));
        c.addAll(List.of(cmd));
        Process p = new ProcessBuilder(c).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        p.waitFor(120, TimeUnit.SECONDS);
        return out;
    }

    /** Starts a command in a namespace, its output discarded. */
    static Process start(String ns, String... cmd) throws Exception {
        List<String> c = new ArrayList<>(List.of("ip", "netns", "exec", ns));
        c.addAll(List.of(cmd));
        return new ProcessBuilder(c).redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
    }

    synchronized void cleanup() {
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
