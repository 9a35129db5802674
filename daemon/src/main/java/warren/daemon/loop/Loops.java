package warren.daemon.loop;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import warren.fdpass.libc.NativeIoException;

/**
 * A daemon's N event loops (config key {@code threads}), each on its own thread (Aeron's
 * ThreadingMode, HAProxy's nbthread). Loop 0 is the control loop: it runs on the thread that
 * calls {@link #run} (the daemon's main thread, as with one loop) and hosts the control server,
 * the task registry's writes, audit and the upgrade coordinator's steps. Loops 1..N-1 run on
 * threads named {@code <daemon>-loop-<i>} started by {@link #run}. With N = 1 this is exactly the
 * single loop of before.
 *
 * <p>Components are placed on a loop and own their state there; nothing is shared between loops
 * but what they post to each other ({@link EventLoop#execute}, a lock-free queue plus an eventfd
 * wakeup) and LongAdder counters. So the loops never lock on the per-byte or per-packet path.
 *
 * <p>Two ways to reach every loop: {@link #onEach} from a thread that is no loop's (the upgrade
 * coordinator: pause, export, resume, abandon on each loop and wait), and {@link #gather} from a
 * loop (List, Metrics: each loop fills its part, the last one posts the result back), which never
 * blocks a loop on another.
 */
public final class Loops implements AutoCloseable {
    /** Work for one loop: its index and the loop. */
    @FunctionalInterface
    public interface Each<T> {
        T run(int index, EventLoop loop) throws Exception;
    }

    private final EventLoop[] loops;
    private final List<Thread> threads = new ArrayList<>();

    /** N loops of {@code capacity} registrations each, failures of handlers to {@code errorSink}. */
    public Loops(int n, int capacity, Consumer<Throwable> errorSink) throws NativeIoException {
        if (n < 1) {
            throw new IllegalArgumentException("threads must be at least 1, not " + n);
        }
        loops = new EventLoop[n];
        try {
            for (int i = 0; i < n; i++) {
                loops[i] = new EventLoop(capacity, errorSink);
            }
        } catch (NativeIoException | RuntimeException e) {
            close();
            throw e;
        }
    }

    /** The number of loops (threads). */
    public int size() {
        return loops.length;
    }

    public EventLoop get(int i) {
        return loops[i];
    }

    /** Loop 0: control server, task registry, audit, upgrade steps. */
    public EventLoop control() {
        return loops[0];
    }

    /** The index of the loop running the calling thread, or -1. */
    public int current() {
        for (int i = 0; i < loops.length; i++) {
            if (loops[i].inLoop()) {
                return i;
            }
        }
        return -1;
    }

    /**
     * Runs loops 1..N-1 on threads of their own ({@code name-loop-i}) and loop 0 on the calling
     * thread until {@link #stop}; returns when every loop has stopped.
     */
    public void run(String name, Consumer<Throwable> died) throws NativeIoException {
        for (int i = 1; i < loops.length; i++) {
            EventLoop l = loops[i];
            Thread t = new Thread(() -> {
                try {
                    l.run();
                } catch (Throwable e) {
                    died.accept(e);
                }
            }, name + "-loop-" + i);
            threads.add(t);
            t.start();
        }
        try {
            loops[0].run();
        } finally {
            stop();
            for (Thread t : threads) {
                try {
                    t.join(TimeUnit.SECONDS.toMillis(10));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    break;
                }
            }
        }
    }

    /** Stops every loop after its current cycle. Any thread. */
    public void stop() {
        for (EventLoop l : loops) {
            if (l != null) {
                l.stop();
            }
        }
    }

    /**
     * Runs {@code work} on every loop at once and waits up to {@code timeoutMs} for all; returns
     * the results by index. If one fails, its exception is thrown once all have finished (so no
     * loop is left mid-step). Loops that are not running yet (a successor before its commit, the
     * upgrade warm-up's throwaway daemon) run their part on the calling thread. Never from a
     * loop thread: a loop waiting for another is how deadlocks start.
     */
    public <T> List<T> onEach(Each<T> work, long timeoutMs) throws Exception {
        if (current() >= 0) {
            throw new IllegalStateException("onEach from a loop thread");
        }
        List<CompletableFuture<T>> fs = new ArrayList<>(loops.length);
        for (int i = 0; i < loops.length; i++) {
            CompletableFuture<T> f = new CompletableFuture<>();
            fs.add(f);
            EventLoop l = loops[i];
            int index = i;
            Runnable r = () -> {
                try {
                    f.complete(work.run(index, l));
                } catch (Throwable t) {
                    f.completeExceptionally(t);
                }
            };
            if (l.started() && l.isRunning()) {
                l.execute(r);
            } else {
                r.run();
            }
        }
        long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
        List<T> out = new ArrayList<>(loops.length);
        Exception first = null;
        for (CompletableFuture<T> f : fs) {
            try {
                out.add(f.get(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS));
            } catch (ExecutionException e) {
                out.add(null);
                if (first == null) {
                    first = e.getCause() instanceof Exception x ? x : e;
                }
            }
        }
        if (first != null) {
            throw first;
        }
        return out;
    }

    /**
     * From a loop thread (or any): runs {@code work} on every loop, then {@code then} with the
     * results by index on {@code replyOn}. Nobody waits: each loop posts its part back and the
     * last one completes. A part that throws gives null (and the error to {@code then}'s second
     * argument, the first one seen).
     */
    public <T> void gather(EventLoop replyOn, Each<T> work, java.util.function.BiConsumer<List<T>, Throwable> then) {
        int n = loops.length;
        @SuppressWarnings("unchecked")
        T[] results = (T[]) new Object[n];
        Throwable[] error = new Throwable[1];
        int[] pending = {n}; // touched on replyOn only
        for (int i = 0; i < n; i++) {
            EventLoop l = loops[i];
            int index = i;
            Runnable part = () -> {
                T r = null;
                Throwable err = null;
                try {
                    r = work.run(index, l);
                } catch (Throwable t) {
                    err = t;
                }
                T result = r;
                Throwable failure = err;
                Runnable back = () -> {
                    results[index] = result;
                    if (failure != null && error[0] == null) {
                        error[0] = failure;
                    }
                    if (--pending[0] == 0) {
                        then.accept(java.util.Arrays.asList(results), error[0]);
                    }
                };
                if (replyOn.inLoop()) {
                    back.run();
                } else {
                    replyOn.execute(back);
                }
            };
            if (l.inLoop()) {
                part.run();
            } else {
                l.execute(part);
            }
        }
    }

    @Override
    public void close() {
        for (EventLoop l : loops) {
            if (l != null) {
                l.close();
            }
        }
    }
}
