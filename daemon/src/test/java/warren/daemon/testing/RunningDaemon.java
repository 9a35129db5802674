package warren.daemon.testing;

import java.nio.file.Path;
import warren.daemon.Daemon;
import warren.daemon.DaemonSpec;
import warren.daemon.config.Config;

/** A daemon running in-process on its own thread, for tests; close() stops it gracefully. */
public final class RunningDaemon implements AutoCloseable {
    public final Daemon daemon;
    public final Path control;
    private final Thread thread;

    public RunningDaemon(DaemonSpec spec, Path control, String configText) throws Exception {
        this.control = control;
        Config config = Config.parse(configText, Daemon.configKeys(spec), "test");
        this.daemon = Daemon.start(spec, control, config);
        this.thread = new Thread(() -> {
            try {
                daemon.run();
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        }, spec.name() + "-loop");
        thread.start();
    }

    @Override
    public void close() throws Exception {
        daemon.shutdown();
        thread.join(30_000);
    }
}
