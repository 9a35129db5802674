package warren.daemon;

import java.lang.reflect.Constructor;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;

/**
 * Catches SIGTERM/SIGINT/SIGHUP/SIGUSR1 with the JDK's {@code sun.misc.Signal} (module
 * jdk.unsupported), reached by reflection so the build needs no internal-API warning. Catching the
 * signal (instead of a shutdown hook) lets the daemon drain its tasks and then exit 0, as systemd
 * expects.
 *
 * <p>HotSpot on Linux leaves SIGUSR1 to the application (it keeps SIGQUIT for thread dumps and
 * uses SIGUSR2, or {@code -XX:SRSignal}, only for its own thread suspension where that exists);
 * the handler runs on the JVM's "Signal Dispatcher" thread. Under {@code -Xrs} that thread is not
 * started: registration succeeds but no handler ever runs, so do not run the daemons with
 * {@code -Xrs}.
 */
public final class Signals {
    private Signals() {}

    /** Runs {@code action} on a JDK signal thread whenever {@code name} (e.g. "TERM") arrives. */
    public static void handle(String name, Runnable action) {
        try {
            Class<?> signal = Class.forName("sun.misc.Signal");
            Class<?> handlerType = Class.forName("sun.misc.SignalHandler");
            Object handler = Proxy.newProxyInstance(Signals.class.getClassLoader(), new Class<?>[] {handlerType},
                    (proxy, method, args) -> {
                        switch (method.getName()) {
                            case "handle": action.run(); return null;
                            case "hashCode": return System.identityHashCode(proxy);
                            case "equals": return proxy == args[0];
                            default: return "warren signal handler for SIG" + name;
                        }
                    });
            Constructor<?> ctor = signal.getConstructor(String.class);
            Method handle = signal.getMethod("handle", signal, handlerType);
            handle.invoke(null, ctor.newInstance(name), handler);
        } catch (ReflectiveOperationException | RuntimeException e) {
            Log.warn("cannot catch SIG" + name + " (" + e + "); it will stop the JVM without draining tasks");
        }
    }
}
