package warren.fish.egress;

/** Why a flow ended: the {@code reason} of its audit {@code flow_end} line. */
enum FlowEnd {
    /** Idle past its timeout after FIN both ways or an RST. */
    CLOSED("closed"),
    /** Idle past its timeout. */
    IDLE("idle"),
    /**
     * Closed by an RST, its port taken over for a new TCP flow of its client when the range had no
     * free port (as the kernel's SNAT evicts a closed entry, nf_nat_used_tuple_harder).
     */
    PORT_REUSED("port reused"),
    /** Its client ended (its socket closed, it was cancelled or stopped, or it went idle). */
    CLIENT_ENDED("client ended");

    /** As the audit line spells it. */
    final String audit;

    FlowEnd(String audit) {
        this.audit = audit;
    }
}
