package warren.daemon.logging;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** The writer thread: lines reach the file, a stuck or failing destination never blocks the caller. */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class LineWriterTest {
    @TempDir
    Path dir;

    private final LongAdder lost = new LongAdder();
    private final LongAdder errors = new LongAdder();
    private final List<String> events = new ArrayList<>();
    private final LineWriter.Events recorder = new LineWriter.Events() {
        @Override
        public synchronized void writeFailed(IOException e, long linesLost) {
            events.add("failed " + linesLost + ": " + e.getMessage());
        }

        @Override
        public synchronized void reopened(String what) {
            events.add("reopened " + what);
        }
    };

    /** 0640 less this process's umask (/proc/self/status). */
    private static String expectedMode() throws IOException {
        int umask = 022;
        for (String l : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (l.startsWith("Umask:")) {
                umask = Integer.parseInt(l.substring(6).strip(), 8);
            }
        }
        int mode = 0640 & ~umask;
        StringBuilder sb = new StringBuilder();
        String rwx = "rwxrwxrwx";
        for (int i = 0; i < 9; i++) {
            sb.append((mode & (1 << (8 - i))) != 0 ? rwx.charAt(i) : '-');
        }
        return sb.toString();
    }

    @Test
    void linesReachTheFileCreated0640AndCloseWritesWhatIsQueued() throws Exception {
        Path f = dir.resolve("audit.jsonl");
        LineWriter w = LineWriter.toFile(f, 100_000, lost, errors, recorder);
        assertEquals(expectedMode(), java.nio.file.attribute.PosixFilePermissions.toString(Files.getPosixFilePermissions(f)));
        for (int i = 0; i < 50_000; i++) {
            assertTrue(w.offer("line " + i));
        }
        assertTrue(w.close(10_000));
        List<String> lines = Files.readAllLines(f);
        assertEquals(50_000, lines.size());
        assertEquals("line 0", lines.get(0));
        assertEquals("line 49999", lines.get(49_999));
        assertFalse(w.offer("after close"), "a closed writer takes nothing");
        assertEquals(0, lost.sum());
    }

    @Test
    void aFullDiskLosesLinesCountsThemAndGoesOn() throws Exception {
        Path full = Path.of("/dev/full");
        assumeTrue(Files.isWritable(full), "needs /dev/full");
        LineWriter w = LineWriter.toFile(full, 1000, lost, errors, recorder);
        for (int i = 0; i < 500; i++) {
            assertTrue(w.offer("{\"event\":\"start\",\"task\":" + i + "}"));
        }
        assertTrue(w.flush(10_000), "every line was handled (lost, not stuck)");
        assertEquals(500, lost.sum(), "every line counted as lost");
        assertTrue(errors.sum() >= 1);
        synchronized (recorder) {
            assertTrue(events.get(0).startsWith("failed ") && events.get(0).contains("No space left on device"),
                    events.toString());
        }
        assertTrue(w.close(5000));
    }

    @Test
    void aDestinationNobodyReadsFillsTheQueueAndOffersFailAtOnce() throws Exception {
        Path fifo = dir.resolve("fifo");
        // no pipes to the child: pipes left for the GC to close made a later test's fd count drop
        Process mk = new ProcessBuilder("mkfifo", fifo.toString())
                .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                .redirectOutput(ProcessBuilder.Redirect.DISCARD).redirectErrorStream(true).start();
        assumeTrue(mk.waitFor() == 0, "needs mkfifo");
        // a read end that never reads (O_RDWR so that neither open blocks)
        try (FileChannel reader = FileChannel.open(fifo, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            LineWriter w = LineWriter.toFile(fifo, 64, lost, errors, recorder);
            String line = "x".repeat(999);
            int offered = 10_000; // 10 MB: more than any pipe holds
            int refused = 0;
            long slowest = 0;
            for (int i = 0; i < offered; i++) {
                long t0 = System.nanoTime();
                if (!w.offer(line)) {
                    refused++;
                }
                slowest = Math.max(slowest, System.nanoTime() - t0);
                if (i % 50 == 0) { // let the writer catch up while it can: fill the pipe, then the queue
                    long until = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(20);
                    while (w.queued() > 0 && System.nanoTime() < until) {
                        Thread.onSpinWait();
                    }
                }
            }
            assertTrue(refused > offered / 2, refused + " offers refused");
            assertTrue(slowest < TimeUnit.MILLISECONDS.toNanos(200), "an offer took " + slowest / 1000 + " us");
            assertFalse(w.flush(100), "the writer is stuck in write(2)");
            // the reader wakes up: everything accepted gets through
            AtomicLong read = new AtomicLong();
            Thread drain = new Thread(() -> {
                ByteBuffer b = ByteBuffer.allocate(65536);
                try {
                    while (true) {
                        b.clear();
                        read.addAndGet(reader.read(b));
                    }
                } catch (IOException e) {
                    // closed at the end of the test
                }
            });
            drain.setDaemon(true);
            drain.start();
            assertTrue(w.flush(10_000), "written once read");
            assertEquals((offered - refused) * 1000L, waitFor(read, (offered - refused) * 1000L));
            assertEquals(0, lost.sum());
            w.close(1000);
        }
    }

    private static long waitFor(AtomicLong v, long want) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (v.get() < want && System.nanoTime() < deadline) {
            Thread.sleep(5);
        }
        return v.get();
    }

    @Test
    void reopenAfterARenameStartsANewFileAtThePath() throws Exception {
        Path f = dir.resolve("audit.jsonl");
        Path rotated = dir.resolve("audit.jsonl.1");
        LineWriter w = LineWriter.toFile(f, 1000, lost, errors, recorder);
        w.offer("before");
        assertTrue(w.flush(5000));
        Files.move(f, rotated);
        w.offer("still the old file"); // until the reopen, lines go to the renamed file
        assertTrue(w.flush(5000));
        assertTrue(w.reopen());
        w.offer("after");
        assertTrue(w.flush(5000));
        assertEquals(List.of("before", "still the old file"), Files.readAllLines(rotated));
        assertEquals(List.of("after"), Files.readAllLines(f));
        assertEquals(expectedMode(), java.nio.file.attribute.PosixFilePermissions.toString(Files.getPosixFilePermissions(f)));
        synchronized (recorder) {
            assertEquals(List.of("reopened " + f), events);
        }
        assertTrue(w.close(5000));
    }
}
