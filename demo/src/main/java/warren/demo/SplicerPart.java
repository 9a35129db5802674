package warren.demo;

import com.google.protobuf.ByteString;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
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
 * Splicer's part, on loopback (no root needed): Splicer as its own process, an upstream HTTP
 * server and a small front proxy. The proxy accepts each client connection, connects upstream,
 * hands both sockets to Splicer and closes its own copies; when Splicer hands them back it reads
 * TCP_INFO from the client socket and writes its own log line, as a real proxy would. curl (or
 * Java's HTTP client when curl is missing) drives three requests. The upgrade: a second proxy
 * port whose upstream echoes; a {@link Transfer} runs through it while Splicer is replaced.
 */
final class SplicerPart extends Part {
    private final Map<Integer, CompletableFuture<String>> handbacks = new ConcurrentHashMap<>();
    private final AtomicInteger connections = new AtomicInteger();
    private final List<Fd> listeners = new ArrayList<>();
    private DaemonRun splicer;
    private SplicerClient client;
    private HttpServer upstream;
    private ServerSocket echo;
    private volatile boolean stopping;

    SplicerPart(PrintStream out, Path dir) {
        super("splicer", out, dir, null);
    }

    @Override
    String cannotRun() {
        return null; // loopback only; curl is optional
    }

    @Override
    void start() throws Exception {
        splicer = new DaemonRun(name(), "warren.splicer.Main", dir, "splice.idle_timeout = 10s\n");
    }

    @Override
    void job(Checks checks) throws Exception {
        out.println("\n== Splicer: a front proxy hands its connections to Splicer");
        splicer.awaitReady(30);
        out.println("splicer   pid " + splicer.pid() + ", control socket " + splicer.control);
        client = SplicerClient.connect(splicer.control);

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
        upstream.setExecutor(pool);
        upstream.start();
        InetSocketAddress up = upstream.getAddress();
        out.println("upstream  http://" + hostPort(up) + "/ (JDK HttpServer)");
        InetSocketAddress front = proxy(up);
        out.println("proxy     " + hostPort(front) + " -> upstream, every connection handed to Splicer");

        out.println("-- clients");
        String base = "http://" + hostPort(front);
        boolean curl = Demo.missing("curl") == null;
        List<String[]> runs = List.of(
                new String[] {"GET /hello", "curl", "-sS", base + "/hello"},
                new String[] {"GET /big (8 MiB)", "curl", "-sS", "-o", "/dev/null", "-w",
                    "%{size_download} bytes in %{time_total} s\n", base + "/big"},
                new String[] {"POST /echo", "curl", "-sS", "--data-binary", "echo through splice(2)\n",
                    "-H", "Content-Type: text/plain", base + "/echo"});
        List<String> results = new ArrayList<>();
        for (String[] r : runs) {
            String result = (curl ? runCurl(r) : javaClient(r, base)).strip();
            results.add(result);
            out.println(String.format("%-18s %s", r[0], result));
        }
        int n = connections.get();
        out.println("-- the proxy's own log, written when Splicer handed the sockets back");
        for (int i = 1; i <= n; i++) {
            out.println(handback(i).get(30, TimeUnit.SECONDS));
        }
        List<String> lines = Audit.await(splicer.audit, l -> Audit.count(l, "end") >= n, 10);
        out.println("-- Splicer's audit lines (shortened; in full: " + splicer.audit.getFileName() + ")");
        lines.forEach(l -> out.println(Audit.shorten(l)));
        out.println("-- checks");
        checks.check(results.get(0).equals("hello from upstream") && results.get(1).startsWith("8388608 bytes")
                && results.get(2).equals("echo through splice(2)"), "each client got its full answer");
        checks.check(n == runs.size() && handbacks.values().stream().allMatch(f -> f.join().contains("BOTH_EOF")),
                n + " connections handed to Splicer and handed back after both sides closed");
        checks.check(Audit.count(lines, "start") == n && Audit.count(lines, "end") == n,
                "one audit start and one end line per connection");
    }

    @Override
    void upgrade(Checks checks) throws Exception {
        out.println("\n== Splicer upgraded in place while a transfer runs through it");
        echo = new ServerSocket(0, 16, InetAddress.getLoopbackAddress());
        Transfer.echo(echo, pool);
        InetSocketAddress front = proxy(new InetSocketAddress(InetAddress.getLoopbackAddress(), echo.getLocalPort()));
        int conn = connections.get() + 1;
        Socket s = new Socket();
        s.connect(front, 5000);
        out.println("client " + hostPort((InetSocketAddress) s.getLocalSocketAddress()) + " -> proxy " + hostPort(front)
                + " -> Splicer -> echo server :" + echo.getLocalPort());
        Transfer t = new Transfer(s, 1);
        Upgrades.run(out, checks, splicer, t);
        String line = handback(conn).get(30, TimeUnit.SECONDS);
        out.println(line);
        String port = "\"127.0.0.1:" + s.getLocalPort() + "\"";
        String task = Audit.lines(splicer.audit).stream().filter(x -> x.contains(port)).findFirst()
                .map(x -> Audit.field(x, "task")).orElse("?");
        List<String> lines = Audit.await(splicer.audit, l -> Audit.ofTask(l, task).size() >= 2, 10);
        out.println("-- the pair's audit lines: start by the old process, end by the new one");
        Audit.ofTask(lines, task).forEach(x -> out.println(Audit.shorten(x)));
        checks.check(line.contains("BOTH_EOF") && Audit.ofTask(lines, task).size() == 2,
                "the pair handed back by the new process once both sides closed; its start and end audited");
    }

    @Override
    public void close() {
        stopping = true;
        if (client != null) {
            client.close();
            client = null;
        }
        if (upstream != null) {
            upstream.stop(0);
            upstream = null;
        }
        try {
            if (echo != null) {
                echo.close();
            }
        } catch (IOException ignored) {
            // closing
        }
        synchronized (listeners) {
            Fd.closeAll(listeners);
            listeners.clear();
        }
        if (splicer != null) {
            splicer.stop();
        }
        pool.shutdownNow();
    }

    private static void respond(com.sun.net.httpserver.HttpExchange ex, byte[] body) throws IOException {
        ex.getResponseHeaders().add("Content-Type", "text/plain");
        ex.sendResponseHeaders(200, body.length);
        try (OutputStream o = ex.getResponseBody()) {
            o.write(body);
        }
    }

    static String hostPort(InetSocketAddress a) {
        return a.getAddress().getHostAddress() + ":" + a.getPort();
    }

    /** A front proxy listening on a new loopback port, its connections relayed to {@code up}; its address. */
    private InetSocketAddress proxy(InetSocketAddress up) throws IOException {
        Fd listener = TcpSockets.listen(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), 128);
        synchronized (listeners) {
            listeners.add(listener);
        }
        pool.submit(() -> proxyLoop(listener, up));
        return TcpSockets.localAddress(listener);
    }

    /** The front proxy: accept, connect upstream, hand both to Splicer, close our copies. */
    private void proxyLoop(Fd listener, InetSocketAddress up) {
        while (!stopping) {
            Fd c;
            try {
                if ((Native.pollOne(listener.get(), Native.POLLIN, 200) & Native.POLLIN) == 0) {
                    continue;
                }
                c = TcpSockets.accept(listener);
            } catch (IOException e) {
                return;
            }
            int n = connections.incrementAndGet();
            try (Fd client0 = c; Fd upstreamSock = TcpSockets.connect(up)) {
                String who = hostPort(TcpSockets.remoteAddress(client0));
                client.splice(client0, upstreamSock, Limits.newBuilder().setIdleTimeoutMs(10_000).build(),
                        ByteString.copyFromUtf8("demo-conn-" + n + " from " + who), null)
                        .whenComplete((res, e) -> handback(n).complete(res != null ? handedBack(n, res)
                                : "proxy: conn " + n + ": " + e));
            } catch (IOException e) {
                handback(n).complete("proxy: conn " + n + ": " + e.getMessage());
            }
        }
    }

    /** Connection n's line, written when Splicer hands it back. */
    private CompletableFuture<String> handback(int n) {
        return handbacks.computeIfAbsent(n, k -> new CompletableFuture<>());
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
        cmd.add(1, "--max-time");
        cmd.add(2, "20");
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
        return path.equals("/big") ? resp.body().length + " bytes" : new String(resp.body(), StandardCharsets.UTF_8);
    }
}
