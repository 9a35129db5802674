package warren.daemon.testing;

import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import warren.daemon.loop.EventLoop;

/**
 * An {@link EventLoop} running on a thread of its own, standing for one daemon process in
 * in-process handoff tests; {@link #on} runs code on it and waits for the result. Errors the loop
 * reports are collected in {@link #errors}.
 */
public final class LoopThread implements AutoCloseable {
    /** Code to run on the loop thread. */
    public interface LoopCall<T> {
        T call() throws Exception;
    }

    public final EventLoop loop;
    public final ConcurrentLinkedQueue<Throwable> errors = new ConcurrentLinkedQueue<>();
    private final Thread thread;

    public LoopThread(String name, int capacity) throws Exception {
        loop = new EventLoop(capacity, errors::add);
        thread = new Thread(() -> {
            try {
                loop.run();
            } catch (Exception e) {
                errors.add(e);
            }
        }, name);
        thread.start();
    }

    public <T> T on(LoopCall<T> c) throws Exception {
        CompletableFuture<T> f = new CompletableFuture<>();
        loop.execute(() -> {
            try {
                f.complete(c.call());
            } catch (Throwable t) {
                f.completeExceptionally(t);
            }
        });
        return f.get(20, TimeUnit.SECONDS);
    }

    /** Stops the loop and waits for its thread; the caller closes the loop after its users. */
    public void stop() throws InterruptedException {
        loop.stop();
        thread.join(10_000);
    }

    @Override
    public void close() throws InterruptedException {
        stop();
        loop.close();
    }
}
