package warren.soak;

import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Traffic through one daemon: a fixed number of workers, each running one flow at a time (a flow
 * of known bytes, hashed end to end) and starting the next when it ends, until {@link #stop}. A
 * flow returns its outcome ("ok", or an expected loss by name); a flow that throws is a failure.
 */
abstract class Load implements AutoCloseable {
    /** One flow of a sort (e.g. "tcp"); returns its outcome key. */
    interface Flow {
        String run(long n) throws Exception;
    }

    final String daemon;
    final Ledger ledger;
    final long seed;
    final ExecutorService io = Executors.newCachedThreadPool(r -> {
        Thread t = new Thread(r, "soak-io");
        t.setDaemon(true);
        return t;
    });
    private final List<Thread> workers = new ArrayList<>();
    private volatile boolean running = true;
    private final AtomicLong flows = new AtomicLong();

    Load(String daemon, Ledger ledger, long seed) {
        this.daemon = daemon;
        this.ledger = ledger;
        this.seed = seed;
    }

    /** One flow of each sort, run here: classes loaded, pools warm, before the baseline is taken. */
    abstract void warmUp() throws Exception;

    /** Starts the workers. */
    abstract void start();

    /** Fills the daemon's slots or ports until the requester is refused; the outcome in words. */
    abstract String burst() throws Exception;

    /** After {@link #stop}: every request answered once (or lost by design, counted); closes what it holds. */
    abstract void finish() throws Exception;

    void workers(String sort, int n, Flow flow) {
        for (int i = 0; i < n; i++) {
            Thread t = new Thread(() -> {
                while (running) {
                    long k = flows.incrementAndGet();
                    String key = daemon + " " + sort + ": ";
                    String outcome;
                    try {
                        outcome = flow.run(k);
                    } catch (Throwable e) {
                        outcome = "FAILED";
                        ledger.fail(daemon + " " + sort + " flow " + k + ": " + e);
                    }
                    ledger.count(key + outcome);
                    if (!outcome.startsWith("ok")) {
                        pause(); // a refused or failed flow is not retried in a tight loop
                    }
                }
            }, "soak-" + daemon + "-" + sort + "-" + i);
            t.setDaemon(true);
            workers.add(t);
            t.start();
        }
    }

    private static void pause() {
        try {
            Thread.sleep(250);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** No new flows; waits for those running to end (each has its own deadlines). */
    void stop() throws InterruptedException {
        running = false;
        for (Thread t : workers) {
            t.join(TimeUnit.MINUTES.toMillis(3));
            if (t.isAlive()) {
                ledger.fail(t.getName() + " still running 3 minutes after the stop");
            }
        }
    }

    boolean running() {
        return running;
    }

    /** The bytes of flow {@code n}: 64 KiB to 1 MiB, from the seed. */
    byte[] data(long n) {
        Random r = new Random(seed * 1_000_003L + n);
        byte[] b = new byte[(64 << 10) + r.nextInt(960 << 10)];
        r.nextBytes(b);
        return b;
    }

    static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    @Override
    public void close() {
        io.shutdownNow();
    }
}
