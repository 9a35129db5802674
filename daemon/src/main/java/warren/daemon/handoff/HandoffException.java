package warren.daemon.handoff;

/** Why a handoff did not happen. Before commit, the old process carries on in every case. */
public final class HandoffException extends Exception {
    public enum Reason {
        /** the successor does not accept this state version, or is another daemon */
        VERSION_REFUSED,
        /** the successor refused the state after reading it (validation or preparation failed) */
        REFUSED,
        /** the other side aborted */
        ABORTED,
        /** the other side closed the connection or died */
        CLOSED,
        /** no answer within the deadline */
        TIMEOUT,
        /** a message that does not belong at this point of the protocol */
        PROTOCOL,
        /** the local side failed (pausing, reading fds, system calls) */
        LOCAL
    }

    private final Reason reason;

    public HandoffException(Reason reason, String message) {
        super(message);
        this.reason = reason;
    }

    public HandoffException(Reason reason, String message, Throwable cause) {
        super(message, cause);
        this.reason = reason;
    }

    public Reason reason() {
        return reason;
    }

    @Override
    public String getMessage() {
        return reason.name().toLowerCase(java.util.Locale.ROOT) + ": " + super.getMessage();
    }
}
