package warren.daemon.logging;

import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.WritableByteChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;

/**
 * Lines to one destination (a file or stderr) written by a thread of their own, so that no
 * caller ever waits for a disk or a pipe:
 * <pre>
 * caller (the event loop, any thread) --offer(line)--> bounded queue --writer thread--> write(2)
 *                                       full or closed: false, never blocks
 * </pre>
 * The writer thread takes what is queued (up to {@link #BATCH_LINES} lines), writes it with as
 * few write(2) calls as fit {@link #BUFFER_BYTES}, and counts what it could not write: a failed
 * write (ENOSPC, EIO, EPIPE) loses the lines not yet out, counted in {@code lost} and reported to
 * {@link Events#writeFailed} (the owner rate-limits the report); the writer goes on with the next
 * lines. A write that stopped mid-line is followed by a newline before the next line, so every
 * later line starts clean. A blocked write (a pipe nobody reads) blocks only this thread: the
 * queue fills and callers' offers fail, which they count.
 *
 * <p>{@link #reopen()} (SIGUSR1 after logrotate) makes the writer thread open the path again (a
 * new file, mode 0640 less the umask) before its next write and close the old one; a failure keeps
 * the old file. {@link #close(long)} lets the thread write what is queued and waits for it a
 * bounded time (a stuck destination does not hold the process's exit).
 *
 * <p>The writer thread is never interrupted: a FileChannel closes itself when its thread is
 * interrupted, and stderr's must stay open.
 */
public final class LineWriter {
    /** Lines taken from the queue per round. */
    public static final int BATCH_LINES = 1024;
    /** Bytes per write(2) at most (a longer line is written alone). */
    public static final int BUFFER_BYTES = 64 * 1024;
    /**
     * After writing a batch the writer waits this long before taking the next: a line is late by
     * at most this, and a busy caller wakes the writer at most 1,000 times a second instead of once
     * per line (an offer to a queue the writer is not waiting on signals nobody: no syscall).
     */
    static final long LINGER_NANOS = 1_000_000;

    /** What happens on the writer thread that its owner may want to log or count. */
    public interface Events {
        void writeFailed(IOException e, long linesLost);

        default void reopened(String what) {}

        default void reopenFailed(String what, IOException e) {}
    }

    /** Work for the writer thread between lines (summaries of rate-limited log lines). */
    public interface Idle {
        /** Nanoseconds until {@link #run} has something to do; {@code Long.MAX_VALUE}: nothing. */
        long dueInNanos(long now);

        void run(long now);
    }

    private interface Opener {
        WritableByteChannel open() throws IOException;
    }

    private static final Object WAKE = new Object();

    private final String what;
    private final Opener opener; // null: not reopenable (stderr)
    private final ArrayBlockingQueue<Object> queue;
    private final LongAdder lost;
    private final LongAdder writeErrors;
    private final Events events;
    private final Idle idle;
    private final AtomicLong accepted = new AtomicLong();
    private final Object progress = new Object();
    private final Thread thread;
    private volatile long processed;
    private volatile boolean reopenRequested;
    private volatile boolean closing;

    // writer thread only
    private WritableByteChannel channel;
    private ByteBuffer buf = ByteBuffer.allocate(BUFFER_BYTES);
    private final ArrayList<Object> batch = new ArrayList<>(BATCH_LINES);
    private boolean partialLine;
    private boolean repairAtStart; // buf begins with the newline that ends a partly written line

    private LineWriter(String what, WritableByteChannel channel, Opener opener, int capacity, LongAdder lost,
            LongAdder writeErrors, Events events, Idle idle) {
        this.what = what;
        this.channel = channel;
        this.opener = opener;
        this.queue = new ArrayBlockingQueue<>(capacity);
        this.lost = lost;
        this.writeErrors = writeErrors;
        this.events = events;
        this.idle = idle;
        this.thread = new Thread(this::run, "writer " + what);
        thread.setDaemon(true);
        thread.start();
    }

    /** Appends to {@code path}, created with mode 0640 (less the umask) if missing. */
    public static LineWriter toFile(Path path, int capacity, LongAdder lost, LongAdder writeErrors, Events events)
            throws IOException {
        Opener o = () -> FileChannel.open(path, EnumSet.of(StandardOpenOption.CREATE, StandardOpenOption.APPEND,
                StandardOpenOption.WRITE), PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-r-----")));
        return new LineWriter(path.toString(), o.open(), o, capacity, lost, writeErrors, events, null);
    }

    /** Writes to fd 2 (never closed, never reopened); {@code idle} runs on the writer thread. */
    public static LineWriter toStderr(int capacity, LongAdder lost, LongAdder writeErrors, Events events, Idle idle) {
        FileChannel ch = new FileOutputStream(FileDescriptor.err).getChannel();
        return new LineWriter("stderr", ch, null, capacity, lost, writeErrors, events, idle);
    }

    /**
     * Queues one line (without its newline; {@code toString()} is called on the writer thread).
     * Never blocks; false when the queue is full or the writer closed: the caller counts the drop.
     */
    public boolean offer(Object line) {
        if (closing || !queue.offer(line)) {
            return false;
        }
        accepted.incrementAndGet();
        return true;
    }

    /** Makes the writer thread look at the queue and at {@link Idle} again. Any thread; never blocks. */
    public void wake() {
        queue.offer(WAKE);
    }

    /** Asks the writer thread to open the path again before its next write (logrotate). */
    public boolean reopen() {
        if (opener == null) {
            return false;
        }
        reopenRequested = true;
        wake();
        return true;
    }

    public boolean reopenable() {
        return opener != null;
    }

    public String what() {
        return what;
    }

    /** Lines queued now. */
    public int queued() {
        return queue.size();
    }

    /**
     * Waits until every line queued before this call is written (or lost), at most
     * {@code timeoutMs}; true if it was.
     */
    public boolean flush(long timeoutMs) {
        long target = accepted.get();
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        synchronized (progress) {
            while (processed < target) {
                long left = deadline - System.nanoTime();
                if (left <= 0 || !thread.isAlive()) {
                    return processed >= target;
                }
                try {
                    progress.wait(Math.max(1, TimeUnit.NANOSECONDS.toMillis(left)));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return false;
                }
            }
        }
        return true;
    }

    /**
     * Stops taking lines, lets the thread write what is queued and close the file, and waits for
     * it at most {@code timeoutMs}. True if everything queued was written (or lost to an error).
     */
    public boolean close(long timeoutMs) {
        closing = true;
        wake();
        try {
            thread.join(Math.max(1, timeoutMs));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        return !thread.isAlive();
    }

    // ---- the writer thread

    private void run() {
        try {
            Object first;
            while ((first = next()) != null) {
                batch.add(first);
                queue.drainTo(batch, BATCH_LINES - 1);
                if (reopenRequested) {
                    reopenNow();
                }
                writeBatch();
                batch.clear();
                if (!closing) {
                    // group commit: what comes in the next LINGER_NANOS goes out as one batch. Woken per
                    // line, the writer cost the event loop a futex wake per line and, on a busy core, a
                    // switch to this thread (Fish's loop in a connection storm, two lines per flow:
                    // ~15 % of its time in pthread_cond_signal and the switches, perf, issue 15)
                    java.util.concurrent.locks.LockSupport.parkNanos(LINGER_NANOS);
                }
            }
        } catch (InterruptedException e) {
            // not expected (nobody interrupts this thread); stop writing
        } finally {
            if (opener != null) {
                closeQuietly(channel);
            }
            synchronized (progress) {
                progress.notifyAll();
            }
        }
    }

    /** The next line to write; null once closing and nothing is queued. */
    private Object next() throws InterruptedException {
        while (true) {
            if (reopenRequested) {
                reopenNow();
            }
            long now = System.nanoTime();
            long due = idle == null ? Long.MAX_VALUE : idle.dueInNanos(now);
            if (due <= 0) {
                idle.run(now);
                continue;
            }
            Object o;
            if (closing) {
                o = queue.poll();
                if (o == null) {
                    return null;
                }
            } else if (due == Long.MAX_VALUE) {
                o = queue.take();
            } else {
                o = queue.poll(due, TimeUnit.NANOSECONDS);
            }
            if (o != null && o != WAKE) {
                return o;
            }
        }
    }

    private void writeBatch() {
        int lines = 0;
        buf.clear();
        for (Object o : batch) {
            if (o == WAKE) {
                continue;
            }
            lines++;
            byte[] b = o.toString().getBytes(StandardCharsets.UTF_8);
            if (buf.position() > 0 && buf.remaining() < b.length + 2) {
                drain();
            }
            if (buf.capacity() < b.length + 2) {
                buf = ByteBuffer.allocate(b.length + 2);
            }
            if (partialLine && buf.position() == 0) {
                buf.put((byte) '\n');
                repairAtStart = true;
            }
            buf.put(b).put((byte) '\n');
        }
        drain();
        if (buf.capacity() > BUFFER_BYTES) {
            buf = ByteBuffer.allocate(BUFFER_BYTES);
        }
        synchronized (progress) {
            processed += lines;
            progress.notifyAll();
        }
    }

    /** Writes what {@link #buf} holds; on failure counts the lines that did not get out. */
    private void drain() {
        buf.flip();
        try {
            while (buf.hasRemaining()) {
                channel.write(buf);
            }
            if (buf.limit() > 0) {
                partialLine = false;
            }
        } catch (IOException e) {
            long gone = 0;
            for (int i = buf.position(); i < buf.limit(); i++) {
                if (buf.get(i) == '\n') {
                    gone++;
                }
            }
            if (buf.position() > 0) {
                partialLine = buf.get(buf.position() - 1) != '\n';
            } else if (repairAtStart) {
                gone--; // the repair newline is not a line
            }
            lost.add(gone);
            writeErrors.increment();
            try {
                events.writeFailed(e, gone);
            } catch (RuntimeException ignored) {
                // a reporter must not stop the writer
            }
        }
        repairAtStart = false;
        buf.clear();
    }

    private void reopenNow() {
        reopenRequested = false;
        try {
            WritableByteChannel fresh = opener.open();
            WritableByteChannel old = channel;
            channel = fresh;
            partialLine = false;
            closeQuietly(old);
            events.reopened(what);
        } catch (IOException e) {
            events.reopenFailed(what, e);
        } catch (RuntimeException e) {
            events.reopenFailed(what, new IOException(e.toString(), e));
        }
    }

    private static void closeQuietly(WritableByteChannel c) {
        try {
            c.close();
        } catch (IOException ignored) {
            // the lines it held were written or counted as lost
        }
    }
}
