package warren.demo;

import java.io.PrintStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.file.Path;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import warren.linux.net.Netns;
import warren.netns.ip.IpNetns;

/**
 * One daemon's part of the demo. {@link Demo} calls {@link #start} on every part first (the
 * daemons' JVMs start in parallel), then {@link #job} on each, then {@link #upgrade} on each,
 * and {@link #close} always (also from the shutdown hook on Ctrl-C).
 */
abstract class Part implements AutoCloseable {
    private final String name;
    final PrintStream out;
    /** The demo's temporary directory: configs, control sockets, audit files, daemon output. */
    final Path dir;
    /** The demo's namespaces (null without root). */
    final IpNetns netns;
    /** The part's servers and proxies (daemon threads). */
    final ExecutorService pool;

    Part(String name, PrintStream out, Path dir, IpNetns netns) {
        this.name = name;
        this.out = out;
        this.dir = dir;
        this.netns = netns;
        this.pool = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r, "demo-" + name);
            t.setDaemon(true);
            return t;
        });
    }

    /** "splicer", "bumblebee" or "fish". */
    final String name() {
        return name;
    }

    /** Why this part cannot run here (a tool missing), or null when it can. */
    abstract String cannotRun();

    /** Makes its namespaces and starts its daemon's process (not waiting for it). */
    abstract void start() throws Exception;

    /** The daemon doing its job: prints its section and records checks. */
    abstract void job(Checks checks) throws Exception;

    /** The daemon upgraded in place while a long transfer runs through it. */
    abstract void upgrade(Checks checks) throws Exception;

    /** A TCP connection made from inside namespace {@code ns} (its socket lives there). */
    static Socket connectIn(String ns, InetSocketAddress to) throws Exception {
        return Netns.call("/run/netns/" + ns, () -> {
            Socket s = new Socket();
            s.connect(to, 5000);
            return s;
        });
    }

    /** Stops the daemon and removes what the part made; idempotent. */
    @Override
    public abstract void close();
}
