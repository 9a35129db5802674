package warren.daemon.testing;

import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import jnr.ffi.Pointer;
import warren.fdpass.libc.Native;

/** Blocking writers and hashing readers on raw socket fds, for relay tests checked by SHA-256. */
public final class Streams {
    private static final int CHUNK = 64 * 1024;

    private Streams() {}

    /** Writes all of {@code data} to {@code fd} (blocking). */
    public static void writeAll(int fd, byte[] data) {
        Pointer buf = Native.allocate(CHUNK);
        int off = 0;
        while (off < data.length) {
            int n = Math.min(CHUNK, data.length - off);
            buf.put(0, data, off, n);
            long w = Native.write(fd, buf, n);
            if (w < 0) {
                throw new IllegalStateException("write: errno " + Native.errno());
            }
            off += (int) w;
        }
    }

    /** Writes {@code data} in 64 KiB chunks with {@code pauseMillis} between them (a long-lived stream). */
    /** Writes {@code data} in {@code chunk}-byte pieces with a pause after each. */
    public static void writePaced(int fd, byte[] data, int chunk, long pauseMillis) {
        for (int off = 0; off < data.length; off += chunk) {
            writeAll(fd, java.util.Arrays.copyOfRange(data, off, Math.min(data.length, off + chunk)));
            try {
                Thread.sleep(pauseMillis);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
        }
    }

    /**
     * As {@link #writePaced(int, byte[], int, long)}, but the last chunk waits for {@code last}: a
     * stream that must still be live at some point of a test (e.g. through a series of upgrades,
     * however long they take on a loaded machine) is held open by the test, not by timing.
     */
    public static void writePaced(int fd, byte[] data, int chunk, long pauseMillis,
            java.util.concurrent.CountDownLatch last) {
        int lastOff = ((data.length - 1) / chunk) * chunk;
        writePaced(fd, java.util.Arrays.copyOfRange(data, 0, lastOff), chunk, pauseMillis);
        try {
            if (!last.await(10, java.util.concurrent.TimeUnit.MINUTES)) {
                throw new IllegalStateException("the test never released the last chunk");
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted", e);
        }
        writeAll(fd, java.util.Arrays.copyOfRange(data, lastOff, data.length));
    }

    public static void writePaced(int fd, byte[] data, long pauseMillis) {
        for (int off = 0; off < data.length; off += CHUNK) {
            writeAll(fd, java.util.Arrays.copyOfRange(data, off, Math.min(data.length, off + CHUNK)));
            try {
                Thread.sleep(pauseMillis);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted", e);
            }
        }
    }

    /** Reads {@code fd} to end of file and returns the SHA-256 of what came. */
    public static byte[] readAllSha256(int fd) {
        MessageDigest md;
        try {
            md = MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
        Pointer buf = Native.allocate(CHUNK);
        byte[] chunk = new byte[CHUNK];
        while (true) {
            long n = Native.read(fd, buf, CHUNK);
            if (n < 0) {
                throw new IllegalStateException("read: errno " + Native.errno());
            }
            if (n == 0) {
                return md.digest();
            }
            buf.get(0, chunk, 0, (int) n);
            md.update(chunk, 0, (int) n);
        }
    }

    public static byte[] sha256(byte[] data) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(data);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
