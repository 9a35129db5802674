package warren.benchmarks;

import java.util.ArrayList;
import java.util.List;

/**
 * Where a bulk run's processes may run, as taskset(1) prefixes: the iperf3 server and a relay
 * that is one process (pasta) on the first CPU, the iperf3 client on the last; or anywhere
 * ({@code --pin off}, or one CPU). The reason, measured for issue #15: pasta's tap path loses
 * segments when it can outrun the server that drains its host-side socket (see
 * {@link PastaPeer}); sharing the server's CPU it cannot, and its runs hold still.
 */
final class CpuPlacement {
    private final String serverCpu;
    private final String clientCpu;

    private CpuPlacement(String serverCpu, String clientCpu) {
        this.serverCpu = serverCpu;
        this.clientCpu = clientCpu;
    }

    static CpuPlacement of(boolean pin) {
        int cpus = Runtime.getRuntime().availableProcessors();
        return pin && cpus > 1 ? new CpuPlacement("0", String.valueOf(cpus - 1)) : new CpuPlacement(null, null);
    }

    /** The iperf3 server's command line. */
    String[] server(String... cmd) {
        return prefixed(serverCpu, cmd);
    }

    /** A single-process relay's command line: on the server's CPU. */
    String[] relay(String... cmd) {
        return prefixed(serverCpu, cmd);
    }

    /** The iperf3 client's command line. */
    String[] client(String... cmd) {
        return prefixed(clientCpu, cmd);
    }

    String describe() {
        return serverCpu == null ? "unpinned (--pin off): every process where the scheduler puts it"
                : "iperf3 server and pasta on CPU " + serverCpu + ", iperf3 client on CPU " + clientCpu
                        + ", the bench JVM (on-ramp pump, Bumblebee, Splicer) unpinned";
    }

    private static String[] prefixed(String cpu, String... cmd) {
        List<String> c = new ArrayList<>();
        if (cpu != null) {
            c.addAll(List.of("taskset", "-c", cpu));
        }
        c.addAll(List.of(cmd));
        return c.toArray(String[]::new);
    }
}
