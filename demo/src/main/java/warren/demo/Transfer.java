package warren.demo;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.ServerSocket;
import java.net.Socket;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A long transfer through a daemon: a writer sends 16 KiB chunks of seeded random bytes every
 * 8 ms (about 2 MiB/s: a steady stream that leaves the 2 cores to the upgrade) until {@link #finish} (then a last chunk and FIN); the far end echoes; a
 * reader takes the echo to end of file. Both ends hash what they saw with SHA-256.
 */
final class Transfer {
    private static final int CHUNK = 16 << 10;
    private final Socket socket;
    private final MessageDigest sent = sha256();
    private final MessageDigest got = sha256();
    private final AtomicLong written = new AtomicLong();
    private final AtomicLong received = new AtomicLong();
    private final Thread writer;
    private final Thread reader;
    private volatile boolean release;
    private volatile Throwable error;
    private byte[] sentHash;
    private byte[] gotHash;

    Transfer(Socket socket, long seed) {
        this.socket = socket;
        writer = new Thread(() -> write(seed), "transfer-writer");
        reader = new Thread(this::read, "transfer-reader");
        writer.setDaemon(true);
        reader.setDaemon(true);
        writer.start();
        reader.start();
    }

    private void write(long seed) {
        Random r = new Random(seed);
        byte[] chunk = new byte[CHUNK];
        try {
            OutputStream o = socket.getOutputStream();
            do {
                r.nextBytes(chunk);
                o.write(chunk);
                sent.update(chunk);
                written.addAndGet(chunk.length);
                Thread.sleep(8);
            } while (!release);
            socket.shutdownOutput();
        } catch (Exception e) {
            error = e;
        }
    }

    private void read() {
        byte[] b = new byte[64 << 10];
        try {
            InputStream in = socket.getInputStream();
            int n;
            while ((n = in.read(b)) > 0) {
                got.update(b, 0, n);
                received.addAndGet(n);
            }
        } catch (Exception e) {
            error = e;
        }
    }

    long received() {
        return received.get();
    }

    /** Waits until {@code bytes} more than now have come back (the stream is live); false on timeout. */
    boolean awaitMore(long bytes, int seconds) throws InterruptedException {
        long want = received.get() + bytes;
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        while (received.get() < want && error == null && System.nanoTime() < deadline) {
            Thread.sleep(5);
        }
        return received.get() >= want;
    }

    /** Stops the writer (FIN after its last chunk), waits for the echo to end; true when both hashes match. */
    boolean finish(int seconds) throws InterruptedException {
        release = true;
        writer.join(TimeUnit.SECONDS.toMillis(seconds));
        reader.join(TimeUnit.SECONDS.toMillis(seconds));
        if (writer.isAlive() || reader.isAlive()) {
            error = new IllegalStateException("the echo did not end within " + seconds + " s");
            close();
            return false;
        }
        sentHash = sent.digest();
        gotHash = got.digest();
        close();
        return error == null && written.get() == received.get() && MessageDigest.isEqual(sentHash, gotHash);
    }

    /** "N MiB sent, N MiB back; SHA-256 sent abcd..., back abcd..." (after {@link #finish}). */
    String describe() {
        HexFormat hex = HexFormat.of();
        return String.format("%.1f MiB sent, %.1f MiB echoed back; SHA-256 sent %s, received %s%s",
                written.get() / 1048576.0, received.get() / 1048576.0,
                sentHash == null ? "?" : hex.formatHex(sentHash, 0, 8) + "...",
                gotHash == null ? "?" : hex.formatHex(gotHash, 0, 8) + "...",
                error == null ? "" : " (" + error + ")");
    }

    void close() {
        try {
            socket.close();
        } catch (IOException ignored) {
            // closing
        }
    }

    /** Echoes every connection accepted on {@code listener} (bytes back, then FIN) until it closes. */
    static void echo(ServerSocket listener, ExecutorService pool) {
        pool.submit(() -> {
            while (!listener.isClosed()) {
                Socket s = listener.accept();
                pool.submit(() -> {
                    try (s; InputStream in = s.getInputStream(); OutputStream out = s.getOutputStream()) {
                        in.transferTo(out);
                        s.shutdownOutput();
                    }
                    return null;
                });
            }
            return null;
        });
    }

    private static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
