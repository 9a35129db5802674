package warren.benchmarks;

import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import warren.control.v1.EndReason;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.control.v1.Spliced;
import warren.daemon.Daemon;
import warren.daemon.DaemonSpec;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.config.Config;
import warren.daemon.control.Call;
import warren.daemon.control.RequestHandler;
import warren.fdpass.Fd;
import warren.fdpass.Received;
import warren.fdpass.SeqpacketSocket;
import warren.fdpass.libc.Native;

/**
 * Round trips per second of a request carrying 2 fds and its answer carrying them back, over an
 * AF_UNIX SOCK_SEQPACKET connection, three ways in one run:
 * <ol>
 *   <li>C: the same exchange in C (gcc, two threads, blocking) -- the ceiling;</li>
 *   <li>fdpass: {@link SeqpacketSocket} alone (two Java threads, blocking waits via poll);</li>
 *   <li>control server: a real {@link Daemon} whose handler hands both fds straight back, driven by
 *       {@link ControlClient} (codec, event loop, futures).</li>
 * </ol>
 * Each round trip creates 2 socketpairs to send, as a front proxy would hand over fresh sockets.
 * Runs are interleaved (C, fdpass, server, C, ...) and reported as median (min-max) and as a
 * ratio to C. This is a benchmark, never a test assertion.
 */
public final class FdpassRoundTrip {
    private FdpassRoundTrip() {}

    public static void main(String[] args) throws Exception {
        double seconds = 3;
        int runs = 3;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--seconds": seconds = Double.parseDouble(args[++i]); break;
                case "--runs": runs = Integer.parseInt(args[++i]); break;
                case "--help":
                    System.out.println("usage: ./warren bench fdpass [--seconds N] [--runs N]");
                    return;
                default:
                    System.err.println("bench fdpass: unknown option '" + args[i] + "' (try --help)");
                    System.exit(2);
            }
        }
        Path cBin = compileC();
        List<Double> c = new ArrayList<>();
        List<Double> raw = new ArrayList<>();
        List<Double> server = new ArrayList<>();
        rawFdpass(0.5);
        viaServer(0.5); // warm-up: JIT, class loading
        for (int r = 0; r < runs; r++) {
            if (cBin != null) {
                c.add(runC(cBin, seconds));
            }
            raw.add(rawFdpass(seconds));
            server.add(viaServer(seconds));
        }
        double cMed = c.isEmpty() ? Double.NaN : median(c);
        System.out.printf("fdpass round trips, 2 fds each way, %d runs of %.1f s (%s, %d cores, kernel %s)%n",
                runs, seconds, System.getProperty("java.vm.name") + " " + System.getProperty("java.version"),
                Runtime.getRuntime().availableProcessors(), Files.readString(Path.of("/proc/sys/kernel/osrelease")).strip());
        System.out.printf("%-34s %14s %22s %10s%n", "path", "round trips/s", "(min - max)", "vs C");
        row("C sendmsg/recvmsg (ceiling)", c, cMed);
        row("fdpass SeqpacketSocket", raw, cMed);
        row("control server + ControlClient", server, cMed);
    }

    private static void row(String name, List<Double> v, double base) {
        if (v.isEmpty()) {
            System.out.printf("%-34s %14s%n", name, "n/a (no gcc)");
            return;
        }
        double m = median(v);
        System.out.printf("%-34s %14.0f %22s %10s%n", name, m,
                String.format("(%.0f - %.0f)", Collections.min(v), Collections.max(v)),
                Double.isNaN(base) ? "-" : String.format("%.2fx", m / base));
    }

    private static double median(List<Double> v) {
        List<Double> s = new ArrayList<>(v);
        Collections.sort(s);
        int n = s.size();
        return n % 2 == 1 ? s.get(n / 2) : (s.get(n / 2 - 1) + s.get(n / 2)) / 2;
    }

    private static Path compileC() throws Exception {
        if (!Files.isExecutable(Path.of("/usr/bin/gcc"))) {
            return null;
        }
        Path dir = Files.createTempDirectory("warren-bench");
        dir.toFile().deleteOnExit();
        Path src = dir.resolve("fdpass_pingpong.c");
        try (InputStream in = FdpassRoundTrip.class.getResourceAsStream("fdpass_pingpong.c")) {
            Files.write(src, in.readAllBytes());
        }
        Path bin = dir.resolve("fdpass_pingpong");
        Process p = new ProcessBuilder("gcc", "-O2", "-pthread", "-o", bin.toString(), src.toString()).inheritIO().start();
        if (!p.waitFor(60, TimeUnit.SECONDS) || p.exitValue() != 0) {
            return null;
        }
        src.toFile().deleteOnExit();
        bin.toFile().deleteOnExit();
        return bin;
    }

    private static double runC(Path bin, double seconds) throws Exception {
        Process p = new ProcessBuilder(bin.toString(), Double.toString(seconds)).start();
        String out = new String(p.getInputStream().readAllBytes()).strip();
        p.waitFor(60, TimeUnit.SECONDS);
        return Double.parseDouble(out);
    }

    private static Fd[] twoPairs() throws Exception {
        int[] x = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
        int[] y = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
        return new Fd[] {Fd.adopt(x[0]), Fd.adopt(y[0]), Fd.adopt(x[1]), Fd.adopt(y[1])};
    }

    private static double rawFdpass(double seconds) throws Exception {
        SeqpacketSocket[] p = SeqpacketSocket.pair();
        byte[] request = "splice-request".getBytes();
        byte[] answer = "spliced".getBytes();
        Thread responder = new Thread(() -> {
            try {
                while (true) {
                    try (Received r = p[1].receiveBlocking(60_000)) {
                        if (r.isEof()) {
                            return;
                        }
                        p[1].sendBlocking(answer, r.fds(), 60_000);
                    }
                }
            } catch (Exception e) {
                // the requester closed its end
            }
        });
        responder.start();
        long n = 0;
        long t0 = System.nanoTime();
        long end = t0 + (long) (seconds * 1e9);
        long now;
        do {
            Fd[] f = twoPairs();
            p[0].sendBlocking(request, List.of(f[0], f[1]), 60_000);
            try (Received r = p[0].receiveBlocking(60_000)) {
                if (r.fdCount() != 2) {
                    throw new IllegalStateException("answer without its fds");
                }
            }
            Fd.closeAll(List.of(f));
            n++;
            now = System.nanoTime();
        } while (now < end);
        p[0].close();
        responder.join(5000);
        p[1].close();
        return n / ((now - t0) / 1e9);
    }

    /** Hands both fds straight back. */
    private static final class EchoSplice implements RequestHandler {
        @Override
        public Set<Request.BodyCase> serves() {
            return Set.of(Request.BodyCase.SPLICE);
        }

        @Override
        public void handle(Call call) {
            Splice s = call.request().getSplice();
            call.reply(Response.newBuilder().setSpliced(Spliced.newBuilder().setFdA(0).setFdB(1)
                    .setReason(EndReason.BOTH_EOF)), List.of(call.takeFd(s.getFdA()), call.takeFd(s.getFdB())),
                    "ok", null);
        }
    }

    private static double viaServer(double seconds) throws Exception {
        Path dir = Files.createTempDirectory("warren-bench");
        Path sock = dir.resolve("ctl.sock");
        DaemonSpec spec = new DaemonSpec("bench", "bench", "echo", List.of(), d -> new EchoSplice());
        Config config = Config.parse("audit.path = /dev/null\n", Daemon.configKeys(spec), "bench");
        Daemon d = Daemon.start(spec, sock, config);
        Thread loop = new Thread(() -> {
            try {
                d.run();
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        loop.start();
        long n = 0;
        long t0;
        long now;
        try (ControlClient c = ControlClient.connect(sock)) {
            t0 = System.nanoTime();
            long end = t0 + (long) (seconds * 1e9);
            do {
                Fd[] f = twoPairs();
                try (Reply r = c.call(Request.newBuilder().setSplice(Splice.newBuilder().setFdA(0).setFdB(1)),
                        List.of(f[0], f[1])).get(60, TimeUnit.SECONDS)) {
                    if (r.fdCount() != 2) {
                        throw new IllegalStateException("answer without its fds: " + r);
                    }
                }
                Fd.closeAll(List.of(f));
                n++;
                now = System.nanoTime();
            } while (now < end);
        }
        d.shutdown();
        loop.join(10_000);
        Files.deleteIfExists(dir);
        return n / ((now - t0) / 1e9);
    }
}
