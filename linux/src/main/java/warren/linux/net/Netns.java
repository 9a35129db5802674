package warren.linux.net;

import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;

/**
 * Runs code inside a network namespace: a fresh thread enters it with setns(2) (allowed in a
 * multi-threaded process for network namespaces, unlike user namespaces), runs the body and
 * ends, so no pooled thread is ever left in the wrong namespace. Sockets and TUN devices the body
 * creates belong to that namespace and may be used from any thread afterwards.
 */
public final class Netns {
    private Netns() {}

    /** {@code nsPath}: /run/netns/NAME, /proc/PID/ns/net, or a bind mount of one. */
    public static <T> T call(String nsPath, Callable<T> body) throws Exception {
        CompletableFuture<T> result = new CompletableFuture<>();
        Thread t = new Thread(() -> {
            try (Fd ns = Fd.adopt(Native.open(nsPath, Native.O_RDONLY))) {
                Native.setns(ns.get(), Native.CLONE_NEWNET);
                result.complete(body.call());
            } catch (Throwable e) {
                result.completeExceptionally(e);
            }
        }, "netns-" + nsPath);
        t.start();
        try {
            return result.get(60, TimeUnit.SECONDS);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof Exception) {
                throw (Exception) e.getCause();
            }
            throw e;
        }
    }
}
