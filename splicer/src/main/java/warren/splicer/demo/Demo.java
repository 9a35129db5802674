package warren.splicer.demo;

import com.google.protobuf.ByteString;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import warren.control.v1.Limits;
import warren.control.v1.Spliced;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpInfo;
import warren.fdpass.net.TcpSockets;
import warren.splicer.client.SplicerClient;

/**
 * {@code ./warren demo}: the main job end to end, on loopback, with nothing to configure.
 * <ol>
 *   <li>starts Splicer as its own process on a temporary control socket;</li>
 *   <li>starts an upstream HTTP server;</li>
 *   <li>runs a small front proxy: it accepts each client connection, connects upstream, hands both
 *       sockets to Splicer and closes its own copies; when Splicer hands them back it reads
 *       TCP_INFO and writes its own log line, as a real proxy would;</li>
 *   <li>drives real clients (curl when installed, else Java's HTTP client) through the proxy;</li>
 *   <li>prints Splicer's audit lines and a summary, stops Splicer with SIGTERM and removes
 *       everything it made. Ctrl-C does the same.</li>
 * </ol>
 */
public final class Demo {
    private final PrintStream out;
    private final Path dir;
    private Process splicer;
    private HttpServer upstream;
    private Fd frontListener;
    private volatile boolean stopping;
    private final ConcurrentLinkedQueue<CompletableFuture<String>> handbacks = new ConcurrentLinkedQueue<>();
    private final AtomicInteger connections = new AtomicInteger();

    private Demo(PrintStream out) throws IOException {
        this.out = out;
        this.dir = Files.createTempDirectory("warren-demo-");
    }

    public static void main(String[] args) {
        for (String a : args) {
            if (a.equals("--help") || a.equals("-h")) {
                System.out.println("usage: ./warren demo\n\nRuns Splicer, an upstream HTTP server and a small front proxy on "
                        + "loopback, drives a few\nclient connections through them, prints Splicer's audit lines and a "
                        + "summary, and cleans up.\nNeeds nothing configured; Ctrl-C stops it early and still cleans up.");
                return;
            }
            System.err.println("demo: unknown option '" + a + "' (try --help)");
            System.exit(2);
        }
        int rc;
        try {
            Demo d = new Demo(System.out);
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

    private int run() throws Exception {
        Path sock = dir.resolve("splicer.sock");
        Path audit = dir.resolve("audit.jsonl");
        Files.writeString(dir.resolve("splicer.conf"), "audit.path = " + audit + "\nsplice.idle_timeout = 10s\n");
        out.println("== warren demo: a front proxy hands its connections to Splicer");
        splicer = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-cp",
                System.getProperty("java.class.path"), "warren.splicer.Main", "--control", sock.toString(),
                "--config", dir.resolve("splicer.conf").toString())
                .redirectErrorStream(true).redirectOutput(dir.resolve("splicer.log").toFile()).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (!Files.exists(sock)) {
            if (!splicer.isAlive() || System.nanoTime() > deadline) {
                out.println("splicer did not start:\n" + Files.readString(dir.resolve("splicer.log")));
                return 1;
            }
            Thread.sleep(20);
        }
        out.println("splicer   pid " + splicer.pid() + ", control socket " + sock);

        upstream = HttpServer.create(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), 64);
        byte[] big = new byte[8 << 20];
        for (int i = 0; i < big.length; i++) {
            big[i] = (byte) ('a' + i % 26);
        }
        upstream.createContext("/hello", ex -> respond(ex, "hello from upstream\n".getBytes(StandardCharsets.UTF_8)));
        upstream.createContext("/big", ex -> respond(ex, big));
        upstream.createContext("/echo", ex -> {
            byte[] body;
            try (InputStream in = ex.getRequestBody()) {
                body = in.readAllBytes();
            }
            respond(ex, body);
        });
        upstream.start();
        InetSocketAddress up = upstream.getAddress();
        out.println("upstream  http://" + hostPort(up) + "/ (JDK HttpServer)");

        frontListener = TcpSockets.listen(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), 128);
        InetSocketAddress front = TcpSockets.localAddress(frontListener);
        out.println("proxy     " + hostPort(front) + " -> upstream, every connection handed to Splicer");
        try (SplicerClient client = SplicerClient.connect(sock)) {
            Thread acceptor = new Thread(() -> proxyLoop(client, up), "demo-proxy");
            acceptor.setDaemon(true);
            acceptor.start();

            out.println("\n== clients");
            String base = "http://" + hostPort(front);
            boolean curl = Files.isExecutable(Path.of("/usr/bin/curl"));
            List<String[]> runs = List.of(
                    new String[] {"GET /hello", "curl", "-sS", base + "/hello"},
                    new String[] {"GET /big (8 MiB)", "curl", "-sS", "-o", "/dev/null", "-w",
                        "%{size_download} bytes in %{time_total} s\n", base + "/big"},
                    new String[] {"POST /echo", "curl", "-sS", "--data-binary", "echo through splice(2)\n",
                        "-H", "Content-Type: text/plain", base + "/echo"});
            for (String[] r : runs) {
                String result = curl ? runCurl(r) : javaClient(r, base);
                out.println(String.format("%-18s %s", r[0], result.strip()));
            }
            int expected = runs.size();
            // every pair ends once both sides have closed: wait for the hand-backs
            deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(40);
            while (handbacks.size() < expected && System.nanoTime() < deadline) {
                Thread.sleep(20);
            }
            out.println("\n== the proxy's own log, written when Splicer handed the sockets back");
            for (CompletableFuture<String> f : handbacks) {
                out.println(f.get(40, TimeUnit.SECONDS));
            }
            stopping = true;
        }
        out.println("\n== Splicer's audit log (" + audit + ")");
        List<String> lines = Files.readAllLines(audit);
        lines.forEach(out::println);
        long starts = lines.stream().filter(l -> l.contains("\"event\":\"start\"")).count();
        long ends = lines.stream().filter(l -> l.contains("\"event\":\"end\"")).count();
        splicer.destroy(); // SIGTERM: Splicer drains and exits 0
        boolean exited = splicer.waitFor(20, TimeUnit.SECONDS);
        int code = exited ? splicer.exitValue() : -1;
        out.println("\n== summary");
        out.println(connections.get() + " client connections relayed by Splicer; " + starts + " audit start lines, "
                + ends + " end lines; Splicer stopped with SIGTERM, exit status " + code);
        boolean ok = starts == connections.get() && ends == connections.get() && code == 0 && connections.get() > 0;
        out.println(ok ? "demo OK" : "demo FAILED");
        if (!ok) {
            out.println("splicer log:\n" + Files.readString(dir.resolve("splicer.log")));
        }
        return ok ? 0 : 1;
    }

    private static void respond(com.sun.net.httpserver.HttpExchange ex, byte[] body) throws IOException {
        ex.getResponseHeaders().add("Content-Type", "text/plain");
        ex.sendResponseHeaders(200, body.length);
        try (OutputStream o = ex.getResponseBody()) {
            o.write(body);
        }
    }

    private static String hostPort(InetSocketAddress a) {
        return a.getAddress().getHostAddress() + ":" + a.getPort();
    }

    /** The front proxy: accept, connect upstream, hand both to Splicer, close our copies. */
    private void proxyLoop(SplicerClient client, InetSocketAddress up) {
        while (!stopping) {
            Fd c;
            try {
                if ((Native.pollOne(frontListener.get(), Native.POLLIN, 200) & Native.POLLIN) == 0) {
                    continue;
                }
                c = TcpSockets.accept(frontListener);
            } catch (IOException e) {
                return;
            }
            int n = connections.incrementAndGet();
            try (Fd client0 = c; Fd upstreamSock = TcpSockets.connect(up)) {
                String who = hostPort(TcpSockets.remoteAddress(client0));
                CompletableFuture<String> line = client.splice(client0, upstreamSock,
                        Limits.newBuilder().setIdleTimeoutMs(10_000).build(),
                        ByteString.copyFromUtf8("demo-conn-" + n + " from " + who), null)
                        .thenApply(res -> handedBack(n, res));
                handbacks.add(line);
            } catch (IOException e) {
                handbacks.add(CompletableFuture.completedFuture("proxy: conn " + n + ": " + e.getMessage()));
            }
        }
    }

    private String handedBack(int n, SplicerClient.Result res) {
        try (res) {
            Spliced s = res.spliced();
            TcpInfo ti = TcpInfo.of(res.a().get());
            return String.format("proxy: conn %d (%s) %s after %.1f ms: %d B client->upstream, %d B upstream->client;"
                    + " client socket back: %s, rtt %d us, %d retransmits",
                    n, res.metadata().toStringUtf8(), s.getReason(),
                    (s.getEndUnixNanos() - s.getStartUnixNanos()) / 1e6, s.getBytesAToB(), s.getBytesBToA(),
                    TcpInfo.stateName(ti.state()), ti.rttMicros(), ti.totalRetrans());
        } catch (IOException e) {
            return "proxy: conn " + n + ": handed back, TCP_INFO failed: " + e.getMessage();
        }
    }

    private String runCurl(String[] r) throws Exception {
        List<String> cmd = new ArrayList<>(List.of(r).subList(1, r.length));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String text = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        p.waitFor(30, TimeUnit.SECONDS);
        return text;
    }

    private String javaClient(String[] r, String base) throws Exception {
        String path = r[r.length - 1].substring(base.length());
        java.net.http.HttpClient http = java.net.http.HttpClient.newBuilder()
                .version(java.net.http.HttpClient.Version.HTTP_1_1).build();
        java.net.http.HttpRequest.Builder b = java.net.http.HttpRequest.newBuilder(java.net.URI.create(base + path));
        if (path.equals("/echo")) {
            b.POST(java.net.http.HttpRequest.BodyPublishers.ofString("echo through splice(2)\n"));
        }
        java.net.http.HttpResponse<byte[]> resp = http.send(b.build(), java.net.http.HttpResponse.BodyHandlers.ofByteArray());
        String text = path.equals("/big") ? resp.body().length + " bytes" : new String(resp.body(), StandardCharsets.UTF_8);
        return text;
    }

    private synchronized void cleanup() {
        stopping = true;
        if (upstream != null) {
            upstream.stop(0);
            upstream = null;
        }
        if (frontListener != null) {
            frontListener.close();
        }
        if (splicer != null && splicer.isAlive()) {
            splicer.destroy();
            try {
                if (!splicer.waitFor(10, TimeUnit.SECONDS)) {
                    splicer.destroyForcibly();
                }
            } catch (InterruptedException e) {
                splicer.destroyForcibly();
            }
        }
        try (var files = Files.walk(dir)) {
            files.sorted(Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
        } catch (IOException ignored) {
            // already gone
        }
    }
}
