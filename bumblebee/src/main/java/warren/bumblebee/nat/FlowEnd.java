package warren.bumblebee.nat;

import java.util.Locale;
import warren.control.v1.EndReason;
import warren.control.v1.Error;

/**
 * Why a flow ended, typed once: its audit outcome and counter name, the {@link EndReason} a
 * downgrade's {@code Downgraded} carries, and the {@link Error.Code} a request gets when its flow
 * ends before the upgrade completed. The outcome strings are the names the audit log and the
 * {@code flows.ended.*} counters have always used.
 */
enum FlowEnd {
    /** RST, FIN both ways (+ linger), the flow socket closed, or a downgrade's relay both EOF. */
    FLOW_ENDED(EndReason.FLOW_ENDED, Error.Code.PEER_GONE),
    IDLE_TIMEOUT(EndReason.IDLE_TIMEOUT, Error.Code.PEER_GONE),
    /** No handshake within bumblebee.handshake_timeout (a downgrade's says ERROR on the wire). */
    TIMEOUT(EndReason.ERROR, Error.Code.TIMEOUT),
    CANCELLED(EndReason.CANCELLED, Error.Code.NOT_FOUND),
    SHUTDOWN(EndReason.SHUTDOWN, Error.Code.SHUTTING_DOWN),
    ERROR(EndReason.ERROR, Error.Code.PEER_GONE),
    // the rest only end a downgrade, from its relay
    RESET(EndReason.RESET, Error.Code.PEER_GONE),
    LIFETIME(EndReason.LIFETIME, Error.Code.PEER_GONE),
    BYTE_LIMIT(EndReason.BYTE_LIMIT, Error.Code.PEER_GONE);

    /** The audit line's and the task registry's outcome. */
    final String outcome;
    /** The {@link warren.daemon.metrics.Counters} name counting flows ended so. */
    final String counter;
    final EndReason wire;
    /** The error of a request whose flow ends before its upgrade is answered. */
    final Error.Code unanswered;

    FlowEnd(EndReason wire, Error.Code unanswered) {
        this.outcome = name();
        this.counter = "flows.ended." + name().toLowerCase(Locale.ROOT);
        this.wire = wire;
        this.unanswered = unanswered;
    }

    /** A downgrade's end from its relay's reason: both EOF is the flow ending normally. */
    static FlowEnd ofRelay(EndReason r) {
        switch (r) {
            case BOTH_EOF:
            case FLOW_ENDED:
                return FLOW_ENDED;
            case IDLE_TIMEOUT:
                return IDLE_TIMEOUT;
            case LIFETIME:
                return LIFETIME;
            case BYTE_LIMIT:
                return BYTE_LIMIT;
            case CANCELLED:
                return CANCELLED;
            case RESET:
                return RESET;
            case SHUTDOWN:
                return SHUTDOWN;
            default:
                return ERROR;
        }
    }
}
