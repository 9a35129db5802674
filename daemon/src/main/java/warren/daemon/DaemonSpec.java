package warren.daemon;

import java.util.List;
import warren.daemon.config.ConfigKey;
import warren.daemon.control.RequestHandler;

/**
 * What makes a daemon of the shared plumbing: its name, its own config keys and how to build its
 * request handler once the plumbing is up.
 */
public record DaemonSpec(String name, String version, String summary, List<ConfigKey<?>> configKeys,
        HandlerFactory handlerFactory) {

    /** Builds the daemon's handler on the loop thread, with the plumbing it may use. */
    @FunctionalInterface
    public interface HandlerFactory {
        RequestHandler create(Daemon daemon) throws Exception;
    }
}
