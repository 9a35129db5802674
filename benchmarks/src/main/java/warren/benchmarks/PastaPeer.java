package warren.benchmarks;

import java.util.concurrent.TimeUnit;
import warren.netns.ip.IpNetns;

/**
 * pasta (package passt) run as its documentation runs a namespace, for the bulk TCP baseline: a
 * namespace "host" (an uplink veth to an empty sink namespace and a default route, so that pasta
 * has an interface and a gateway to copy), an iperf3 server on the host's loopback, and per MTU one
 * pasta process attached to a new empty namespace, {@code pasta --config-net --netns NS --runas 0
 * -f -q -4 -m MTU -t none -u none -T none -U none} (pasta(1): --config-net sets up the tap
 * interface, the host's address and the default route in the namespace; no port forwarding). The
 * iperf3 client in that namespace connects to the gateway address pasta gave it, which pasta maps
 * to the host's loopback (pasta(1), NOTES; passt's own test/perf/pasta_tcp measures "connections
 * via tap" the same way).
 *
 * <p>That is pasta's tap path: the namespace's kernel TCP -> tap -> pasta's translation to a host
 * L4 socket -> the host's loopback. Not its splice path, which pasta takes only for a connection to
 * the namespace's own loopback on a port forwarded with {@code -T}: Bumblebee's path goes through
 * a TUN too (the on-ramp's), so the tap path is the like-for-like baseline.
 *
 * <p>Why pasta's figures were bimodal here (0.02-10 Gbit/s from one run to the next; issue #15,
 * measured on a shared 2-CPU machine, kernel 6.18, passt 0.0~git20230309): a slow run is a stall,
 * not a slow pasta. Every CPU idles while the namespace's TCP waits out retransmission timeouts
 * (nstat in the namespace: TCPTimeouts, TCPRenoFailures; pasta offers no SACK and sends one
 * duplicate ACK, so a hole in a window of 60 KiB segments costs an RTO and its back-off). The
 * segments are lost inside pasta: its write to the host socket comes back short (that socket's
 * send buffer, 8 MiB with this machine's net.core.wmem_max of 4 MiB, is full because the iperf3
 * server has not drained it) and pasta, which keeps no buffer, acknowledges what was written and
 * drops the rest of the batch for the namespace to send again. Traced (strace -ttt of pasta's
 * sendmsg beside iperf3's 0.25 s intervals, 5 runs, each stalling once or more): every stall began
 * within 0.25 s of a short write, and runs without a short write mid-run did not stall; no
 * EAGAIN, no truncated tap read, no drop in the namespace's qdisc or tap counters. Short writes
 * happen when pasta runs on another CPU than the server and outpaces it; on the server's CPU it
 * cannot (the server runs whenever pasta does not): pasta with the server, the client on the
 * other CPU, 5 of 5 runs at 9.2-10.8 Gbit/s with 0 retransmits (and 4 of 4 at 3.1-3.6 under a
 * load average of 6), while pasta on a CPU of its own, on the client's, or unpinned stalled in
 * half of its runs or more. Hence {@link CpuPlacement}. At MTU 1500 there is a second loss: the
 * namespace's tap queue (1,000 frames) overflows under pasta's 16 MiB window (TX dropped), which
 * passt's own test avoids with {@code iperf3 -w 512k}.
 */
final class PastaPeer implements AutoCloseable {
    static final int PORT = 5201;
    private final String host;
    private final CpuPlacement place;
    private final Process server;
    private Process pasta;
    private String ns;
    private String gateway;

    PastaPeer(IpNetns netns, CpuPlacement place) throws Exception {
        this.place = place;
        host = netns.add("pasta-host");
        String sink = netns.add("pasta-sink");
        IpNetns.veth(host, "pv0", "198.18.77.1/24", sink, "pv1", "198.18.77.2/24");
        IpNetns.sh("ip", "-n", host, "route", "add", "default", "via", "198.18.77.2", "dev", "pv0");
        server = IpNetns.start(host, place.server("iperf3", "-s", "-B", "127.0.0.1", "-p", "" + PORT));
        awaitListening(host, PORT);
    }

    /** Stops the pasta of the last MTU (if any) and starts one for {@code mtu} in a new namespace. */
    void start(IpNetns netns, int mtu) throws Exception {
        stopPasta();
        ns = netns.add("pasta-ns" + mtu);
        pasta = IpNetns.start(host, place.relay("pasta", "--config-net", "--netns", ns, "--runas", "0", "-f", "-q", "-4",
                "-m", "" + mtu, "-t", "none", "-u", "none", "-T", "none", "-U", "none"));
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        String route = "";
        while (!route.contains("default via") && pasta.isAlive() && System.nanoTime() < deadline) {
            Thread.sleep(20);
            route = IpNetns.exec(ns, "ip", "-4", "route", "show", "default");
        }
        if (!route.contains("default via")) {
            throw new IllegalStateException("pasta did not configure " + ns + " (alive: " + pasta.isAlive() + ", route: '"
                    + route.strip() + "')");
        }
        gateway = route.split("\\s+")[2];
    }

    /** One iperf3 run from pasta's namespace to the host's server; the relay part is pasta's CPU. */
    BulkRun run(int seconds, String... iperfOptions) throws Exception {
        double p0 = ProcCpu.process(pasta.pid());
        double s0 = ProcCpu.process(server.pid());
        String json = IpNetns.exec(ns, place.client(BumblebeeBench.iperfClient(gateway, seconds, iperfOptions)));
        return BulkRun.parse(json, ProcCpu.process(server.pid()) - s0, new double[] {ProcCpu.process(pasta.pid()) - p0});
    }

    /** Waits until something listens on TCP {@code port} in {@code ns} (ss(8)), up to 10 s. */
    static void awaitListening(String ns, int port) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (IpNetns.exec(ns, "ss", "-Hltn", "sport = :" + port).isBlank()) {
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("nothing listens on port " + port + " in " + ns);
            }
            Thread.sleep(20);
        }
    }

    private void stopPasta() throws InterruptedException {
        if (pasta != null) {
            pasta.destroy();
            pasta.waitFor(5, TimeUnit.SECONDS);
            pasta = null;
        }
    }

    @Override
    public void close() throws Exception {
        stopPasta();
        server.destroy();
        server.waitFor(5, TimeUnit.SECONDS);
    }
}
