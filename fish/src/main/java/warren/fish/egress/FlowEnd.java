package warren.fish.egress;

/** Why a flow ended: the {@code reason} of its audit {@code flow_end} line. */
enum FlowEnd {
    /** Idle past its timeout after FIN both ways or an RST. */
    CLOSED("closed"),
    /** Idle past its timeout. */
    IDLE("idle"),
    /** Its client ended (its socket closed, it was cancelled or stopped, or it went idle). */
    CLIENT_ENDED("client ended");

    /** As the audit line spells it. */
    final String audit;

    FlowEnd(String audit) {
        this.audit = audit;
    }
}
