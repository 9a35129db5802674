package warren.daemon.metrics;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.StandardProtocolFamily;
import java.net.StandardSocketOptions;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Iterator;
import java.util.Locale;
import warren.daemon.Log;

/**
 * The optional HTTP endpoint of {@code metrics.listen}: {@code GET /metrics} on a TCP address
 * ({@code 127.0.0.1:9464}, {@code [::1]:9464}) or an AF_UNIX stream socket (an absolute path),
 * served by one thread of its own, never the event loop. A minimal HTTP/1.1 responder: one
 * request per connection ({@code Connection: close}), request head up to 8 KiB, 5 s to send it,
 * at most 16 connections at once (more are closed at accept). Content negotiation: OpenMetrics
 * 1.0 when the {@code Accept} header asks for {@code application/openmetrics-text} (Prometheus
 * does), the Prometheus text format 0.0.4 otherwise.
 *
 * <p>Upgrade in place: a TCP listener is bound with SO_REUSEPORT, so the successor binds the same
 * address while the old process still listens; the old one stops answering (503) at the commit
 * and closes its listener when it exits. A unix socket is bound under a temporary name and renamed
 * over the path (the successor's replaces the old one's); the path is removed at a normal stop
 * only if it is still this process's socket.
 */
public final class MetricsEndpoint implements AutoCloseable {
    private static final int MAX_HEAD = 8192;
    private static final long REQUEST_TIMEOUT_NANOS = 5_000_000_000L;
    private static final int MAX_CONNECTIONS = 16;

    private final DaemonMetrics metrics;
    private final ServerSocketChannel server;
    private final Selector selector;
    private final Path unixPath;      // null for TCP
    private final Object unixInode;   // the path's inode when we bound it
    private final Thread thread;
    private final String where;
    private volatile boolean closing;

    private static final class Conn {
        final SocketChannel ch;
        final long deadline;
        final ByteBuffer in = ByteBuffer.allocate(MAX_HEAD);
        ByteBuffer out;

        Conn(SocketChannel ch, long deadline) {
            this.ch = ch;
            this.deadline = deadline;
        }
    }

    private MetricsEndpoint(DaemonMetrics metrics, ServerSocketChannel server, Path unixPath, Object unixInode,
            String where) throws IOException {
        this.metrics = metrics;
        this.server = server;
        this.unixPath = unixPath;
        this.unixInode = unixInode;
        this.where = where;
        this.selector = Selector.open();
        server.configureBlocking(false);
        server.register(selector, SelectionKey.OP_ACCEPT);
        this.thread = new Thread(this::run, metrics.daemon() + "-metrics-http");
        thread.setDaemon(true);
    }

    /**
     * Checks a {@code metrics.listen} value; returns why it is wrong, or null. Empty (off), an
     * absolute path, or {@code host:port} with a numeric IPv4 address, {@code [IPv6]}, or
     * {@code localhost}.
     */
    public static String check(String listen) {
        if (listen.isEmpty() || listen.startsWith("/")) {
            return null;
        }
        try {
            tcpAddress(listen);
            return null;
        } catch (IllegalArgumentException e) {
            return e.getMessage();
        }
    }

    static InetSocketAddress tcpAddress(String listen) {
        int colon = listen.lastIndexOf(':');
        if (colon <= 0) {
            throw new IllegalArgumentException("expected HOST:PORT (e.g. 127.0.0.1:9464) or an absolute path");
        }
        String host = listen.substring(0, colon);
        int port;
        try {
            port = Integer.parseInt(listen.substring(colon + 1));
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("port is not a number");
        }
        if (port < 0 || port > 65535) {
            throw new IllegalArgumentException("port out of 0-65535");
        }
        if (host.startsWith("[") && host.endsWith("]")) {
            host = host.substring(1, host.length() - 1);
        } else if (host.contains(":")) {
            throw new IllegalArgumentException("an IPv6 address goes in brackets: [::1]:9464");
        }
        if (!host.equals("localhost") && !host.matches("[0-9.]+") && !host.matches("[0-9a-fA-F:.]+")) {
            throw new IllegalArgumentException("host must be a numeric address or localhost, not a name to resolve");
        }
        return new InetSocketAddress(host, port);
    }

    /** Binds {@code listen} (see {@link #check}) and starts serving; refuses an address where something answers. */
    public static MetricsEndpoint open(String listen, DaemonMetrics metrics) throws IOException {
        return open(listen, metrics, false);
    }

    /**
     * As {@link #open(String, DaemonMetrics)}; with {@code takeOver} (an upgrade's successor) the
     * predecessor still answers at the address and that is expected. Without it, an address where
     * a process answers is refused: with SO_REUSEPORT two daemons configured with the same port by
     * mistake would otherwise share the scrapes silently.
     */
    public static MetricsEndpoint open(String listen, DaemonMetrics metrics, boolean takeOver) throws IOException {
        if (!takeOver && answers(listen)) {
            throw new IOException(listen + " is in use: a process answers there");
        }
        if (listen.startsWith("/")) {
            Path path = Path.of(listen);
            Path tmp = path.resolveSibling(path.getFileName() + ".tmp-" + ProcessHandle.current().pid());
            Files.deleteIfExists(tmp);
            ServerSocketChannel ch = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
            try {
                ch.bind(UnixDomainSocketAddress.of(tmp), 16);
                Files.setPosixFilePermissions(tmp, PosixFilePermissions.fromString("rw-rw----"));
                Files.move(tmp, path, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
                MetricsEndpoint e = new MetricsEndpoint(metrics, ch, path, Files.getAttribute(path, "unix:ino"),
                        "unix:" + path);
                e.thread.start();
                return e;
            } catch (IOException | RuntimeException e) {
                ch.close();
                Files.deleteIfExists(tmp);
                throw e;
            }
        }
        InetSocketAddress a = tcpAddress(listen);
        ServerSocketChannel ch = ServerSocketChannel.open();
        try {
            ch.setOption(StandardSocketOptions.SO_REUSEADDR, true);
            ch.setOption(StandardSocketOptions.SO_REUSEPORT, true); // the successor binds while we listen
            ch.bind(a, 64);
            MetricsEndpoint e = new MetricsEndpoint(metrics, ch, null, null, "http://" + listen + "/metrics");
            e.thread.start();
            return e;
        } catch (IOException | RuntimeException e) {
            ch.close();
            throw e;
        }
    }

    private static boolean answers(String listen) {
        try {
            if (listen.startsWith("/")) {
                if (!Files.exists(Path.of(listen))) {
                    return false;
                }
                try (SocketChannel c = SocketChannel.open(StandardProtocolFamily.UNIX)) {
                    return c.connect(UnixDomainSocketAddress.of(listen)); // a stale socket file refuses
                }
            }
            InetSocketAddress a = tcpAddress(listen);
            if (a.getPort() == 0) {
                return false;
            }
            try (java.net.Socket s = new java.net.Socket()) {
                s.connect(a, 500);
                return true;
            }
        } catch (IOException e) {
            return false;
        }
    }

    /** Where it serves, for the log: a URL or unix:PATH. */
    public String where() {
        return where;
    }

    /** The bound address (a TCP port chosen by the kernel for port 0, for tests). */
    public SocketAddress address() throws IOException {
        return server.getLocalAddress();
    }

    private void run() {
        try {
            while (!closing) {
                selector.select(500);
                Iterator<SelectionKey> it = selector.selectedKeys().iterator();
                while (it.hasNext()) {
                    SelectionKey k = it.next();
                    it.remove();
                    if (!k.isValid()) {
                        continue;
                    }
                    if (k.isAcceptable()) {
                        acceptAll();
                    } else {
                        serve(k);
                    }
                }
                expire();
            }
        } catch (IOException | RuntimeException e) {
            if (!closing) {
                Log.error("metrics endpoint " + where + " stopped", e);
            }
        } finally {
            for (SelectionKey k : selector.keys()) {
                closeQuietly(k);
            }
        }
    }

    private void acceptAll() throws IOException {
        SocketChannel c;
        while ((c = server.accept()) != null) {
            if (selector.keys().size() > MAX_CONNECTIONS) {
                c.close();
                continue;
            }
            c.configureBlocking(false);
            c.register(selector, SelectionKey.OP_READ, new Conn(c, System.nanoTime() + REQUEST_TIMEOUT_NANOS));
        }
    }

    private void serve(SelectionKey k) {
        Conn c = (Conn) k.attachment();
        try {
            if (c.out == null) {
                if (c.ch.read(c.in) < 0) {
                    closeQuietly(k);
                    return;
                }
                String head = headIfComplete(c.in);
                if (head == null) {
                    if (!c.in.hasRemaining()) {
                        c.out = response(431, "Request Header Fields Too Large", "text/plain", bytes("request head over 8 KiB\n"));
                        k.interestOps(SelectionKey.OP_WRITE);
                    }
                    return;
                }
                c.out = answer(head);
                k.interestOps(SelectionKey.OP_WRITE);
            }
            c.ch.write(c.out);
            if (!c.out.hasRemaining()) {
                closeQuietly(k);
            }
        } catch (IOException e) {
            closeQuietly(k);
        }
    }

    private void expire() {
        long now = System.nanoTime();
        for (SelectionKey k : selector.keys()) {
            if (k.attachment() instanceof Conn c && now - c.deadline > 0) {
                closeQuietly(k);
            }
        }
    }

    private static String headIfComplete(ByteBuffer in) {
        int n = in.position();
        for (int i = 3; i < n; i++) {
            if (in.get(i - 3) == '\r' && in.get(i - 2) == '\n' && in.get(i - 1) == '\r' && in.get(i) == '\n') {
                return new String(in.array(), 0, i + 1, StandardCharsets.ISO_8859_1);
            }
        }
        return null;
    }

    /** The answer to one request head. */
    ByteBuffer answer(String head) {
        String[] lines = head.split("\r\n");
        String[] req = lines[0].split(" ");
        if (req.length != 3 || !req[2].startsWith("HTTP/1.")) {
            return response(400, "Bad Request", "text/plain", bytes("bad request line\n"));
        }
        if (!req[0].equals("GET") && !req[0].equals("HEAD")) {
            return response(405, "Method Not Allowed", "text/plain", bytes("only GET\n"));
        }
        String target = req[1];
        int q = target.indexOf('?');
        if (q >= 0) {
            target = target.substring(0, q);
        }
        if (!target.equals("/metrics")) {
            return response(404, "Not Found", "text/plain", bytes("metrics are at /metrics\n"));
        }
        boolean om = false;
        for (int i = 1; i < lines.length; i++) {
            String l = lines[i].toLowerCase(Locale.ROOT);
            if (l.startsWith("accept:") && l.contains("application/openmetrics-text")) {
                om = true;
            }
        }
        try {
            byte[] body = metrics.text(om);
            return response(200, "OK", om ? DaemonMetrics.OPENMETRICS : DaemonMetrics.PROMETHEUS_TEXT,
                    req[0].equals("HEAD") ? new byte[0] : body);
        } catch (IOException | RuntimeException e) {
            return response(503, "Service Unavailable", "text/plain", bytes(e.getMessage() + "\n"));
        }
    }

    private static ByteBuffer response(int code, String reason, String type, byte[] body) {
        byte[] h = bytes("HTTP/1.1 " + code + " " + reason + "\r\nContent-Type: " + type + "\r\nContent-Length: "
                + body.length + "\r\nConnection: close\r\n\r\n");
        ByteBuffer b = ByteBuffer.allocate(h.length + body.length);
        b.put(h).put(body).flip();
        return b;
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static void closeQuietly(SelectionKey k) {
        k.cancel();
        try {
            k.channel().close();
        } catch (IOException e) {
            // closing anyway
        }
    }

    /**
     * Stops serving and closes the listener; a unix socket's path is removed when
     * {@code removePath} and it is still ours (not a successor's).
     */
    public void close(boolean removePath) {
        closing = true;
        selector.wakeup();
        try {
            thread.join(2000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        try {
            selector.close();
            server.close();
        } catch (IOException e) {
            Log.warn("metrics endpoint: close: " + e.getMessage());
        }
        if (unixPath != null && removePath) {
            try {
                if (unixInode.equals(Files.getAttribute(unixPath, "unix:ino"))) {
                    Files.deleteIfExists(unixPath);
                }
            } catch (IOException e) {
                // gone already, or not ours
            }
        }
    }

    @Override
    public void close() {
        close(true);
    }
}
