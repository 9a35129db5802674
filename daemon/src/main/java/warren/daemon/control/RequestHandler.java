package warren.daemon.control;

import java.util.Set;
import warren.control.v1.Request;

/**
 * A daemon's own requests. The control server answers Status, List and Cancel itself and passes
 * the bodies in {@link #serves()} here; any other body gets UNKNOWN_REQUEST.
 */
public interface RequestHandler {
    Set<Request.BodyCase> serves();

    /**
     * Handles one request on the loop thread. Must lead to exactly one final answer through
     * {@code call} (now or later, from any thread). Throwing answers INTERNAL.
     */
    void handle(Call call) throws Exception;

    /** Releases what the handler holds (pools, devices, namespaces) once the daemon has drained. */
    default void close() {
    }
}
