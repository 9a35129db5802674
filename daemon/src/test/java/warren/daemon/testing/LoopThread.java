package warren.daemon.testing;

import java.util.concurrent.ConcurrentLinkedQueue;
import warren.daemon.loop.EventLoop;

/**
 * An {@link EventLoop} running on a thread of its own, standing for one daemon process in
 * in-process handoff tests; {@link #on} runs code on it and waits for the result. Errors the loop
 * reports are collected in {@link #errors}.
 */
public final class LoopThread implements AutoCloseable {
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

    public <T> T on(java.util.concurrent.Callable<T> c) throws Exception {
        return loop.call(c, 20_000);
    }

    /** True once the loop's thread has returned. */
    public boolean finished() {
        return !thread.isAlive();
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
