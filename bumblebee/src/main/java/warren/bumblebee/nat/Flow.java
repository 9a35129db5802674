package warren.bumblebee.nat;

import warren.daemon.control.Call;
import warren.daemon.loop.EventLoop;
import warren.daemon.task.Task;
import warren.daemon.trace.TraceRing;
import warren.daemon.trace.Traceable;
import warren.packet.FlowKey;

/**
 * One upgraded flow, in NAT slot {@link #slot}.
 *
 * <pre>
 * slot:  FREE --Upgrade--> RESERVED --kernel accepted, Upgraded sent--> ACTIVE
 *        RESERVED|ACTIVE --RST, FIN both ways + linger, flow socket closed, idle, timeout,
 *                          cancel, stop--> QUARANTINED --bumblebee.quarantine--> FREE
 * </pre>
 * Invariants: the flow socket is registered and owned only in RESERVED and ACTIVE; packets from
 * the TUN for a slot in any other state are dropped (a quarantined slot's old kernel connection
 * can still send). {@link SlotTable} moves a slot between FREE and QUARANTINED; the starts
 * ({@link TcpUpgrade}, {@link UdpUpgrade}, {@link Downgrade}) to RESERVED and ACTIVE;
 * {@link Lifecycle#end} alone out of them.
 */
final class Flow implements Task, Traceable {
    static final int FREE = 0;
    static final int RESERVED = 1;
    static final int ACTIVE = 2;
    static final int QUARANTINED = 3;

    final int slot;
    final FlowKey original = new FlowKey();
    int state = FREE;
    Lifecycle life;
    Call call;
    /**
     * The slot's NAT port for its current flow. It changes every time the slot is reused, so a
     * kernel connection of the slot's previous flow that still lingers (FIN_WAIT, TIME_WAIT) never
     * shares its 4-tuple with the new one.
     */
    // random start: after a restart (upgrade or crash) a slot's history is not known, so its next
    // ports must not repeat the last ones in use (a lingering kernel connection of the same 4-tuple)
    int natPort = AddressPlan.FIRST_NAT_PORT
            + java.util.concurrent.ThreadLocalRandom.current().nextInt(AddressPlan.NAT_PORTS);

    void nextNatPort() {
        natPort = AddressPlan.FIRST_NAT_PORT + (natPort - AddressPlan.FIRST_NAT_PORT + 1) % AddressPlan.NAT_PORTS;
    }

    int mss4;           // MSS clamp for this flow's MTU, IPv4 and IPv6
    int mss6;
    int flowFd = -1;
    int flowReg = -1;
    boolean udp;        // a UDP flow: payloads go through udpFd, not the TUN
    /**
     * Upgrade.vnet_hdr: every message on the flow socket, both ways, is a virtio_net_hdr and a
     * packet that may be a GSO super-packet. Set at the claim, kept across a handoff.
     */
    boolean vnet;
    boolean downgrade;  // a downgraded TCP socket: the kernel side connects, the flow carries the peer
    int innerFd = -1;   // downgrade: the connection made inside the namespace (until the relay takes it)
    int innerReg = -1;
    int innerPort;      // downgrade: its local port, the destination of packets from the flow
    warren.daemon.relay.Pair relay; // downgrade: the relay between the handed-in socket and innerFd
    warren.fdpass.Fd socket;        // downgrade: the handed-in TCP socket until the relay takes it
    int udpFd = -1;     // our end of the datagram socketpair handed out in Upgraded
    int udpReg = -1;
    boolean haveKey;
    boolean finFromFlow;
    boolean finFromKernel;
    long packetsIn; // flow -> kernel
    long packetsOut; // kernel -> flow
    long bytesIn;
    long bytesOut;
    long lastActiveNanos;
    EventLoop.Timer timer; // handshake, idle or linger: one at a time
    EventLoop.Timer quarantine;
    long callRef;       // only while a handed-in table is adopted (and a successor's pre-copied flow's task ref)
    /** The slot's generation: bumped at every claim, so (slot, generation) names one flow (pre-copy keys). */
    int generation;
    /**
     * Pre-copy ({@link FlowCopy}). Old process: this slot's flow was copied at {@link #copiedGen}
     * with the state, counts and FIN flags below (compared at the pause: an update if any moved;
     * the key ended if the slot was freed or reused). Successor: this slot holds the pre-copied
     * flow of key (slot, copiedGen) until the delta is applied.
     */
    boolean copied;
    int copiedGen;
    int copiedState;
    long copiedPacketsIn;
    long copiedPacketsOut;
    boolean copiedFinFromFlow;
    boolean copiedFinFromKernel;
    boolean copiedUdp;  // the copy carried the datagram socket
    /**
     * Pre-copy, old side ({@link FlowCopy}): the copy is watched, so the flow's next change (a
     * packet, a state, a FIN) puts it on its loop's changed list ({@link FlowStore#changed}); the
     * one field the hot path checks. Cleared once it is listed.
     */
    boolean watch;
    /** Pre-copy, old side: on its loop's changed list (once at most). */
    boolean listed;
    /** Pre-copy, old side: the next flow on its loop's changed list (intrusive: no node allocated). */
    Flow nextChanged;
    /** While a Trace watches this flow: where its packets are copied (null: not traced, nothing copied). */
    TraceRing trace;

    /**
     * With N loops, who takes a TCP upgrade's kernel connection: the control loop accepts it and
     * answers {@code Upgraded} itself (so the answer is queued before an upgrade in place pauses
     * the control loop), the owner loop activates the flow. OPEN (set by the owner once the SYN has
     * gone to the kernel, with {@link #openPort}) -> ACCEPTED (control loop) or CLOSED (owner, the
     * flow ends first): whoever moves it first decides. NONE: not waiting for an accept.
     */
    static final int ACCEPT_NONE = 0;
    static final int ACCEPT_OPEN = 1;
    static final int ACCEPT_ACCEPTED = 2;
    static final int ACCEPT_CLOSED = 3;
    final java.util.concurrent.atomic.AtomicInteger accept = new java.util.concurrent.atomic.AtomicInteger();
    /** The NAT port of the flow that is OPEN (written before {@link #accept}, read after it). */
    int openPort;

    Flow(int slot) {
        this.slot = slot;
    }

    /** The loop this flow lives on (List asks its state and traffic there). */
    @Override
    public EventLoop loop() {
        return life == null || life.index == 0 ? null : life.loop(); // null: the control loop, as with one loop
    }

    @Override
    public void cancel() {
        life.loop().execute(() -> life.end(this, FlowEnd.CANCELLED, null));
    }

    @Override
    public void stop() {
        life.loop().execute(() -> life.end(this, FlowEnd.SHUTDOWN, null));
    }

    /** List: packets and bytes each way (out = flow -> kernel), the original and translated 5-tuples. */
    @Override
    public void traffic(warren.control.v1.TaskInfo.Builder info) {
        info.setPacketsOut(packetsIn).setBytesOut(bytesIn).setPacketsIn(packetsOut).setBytesIn(bytesOut);
        if (haveKey) {
            info.addTuples(Tuples.tuple(original));
            if (!udp) {
                warren.control.v1.FiveTuple t = Tuples.translated(this);
                info.addTuples(downgrade ? t.toBuilder().setDstPort(innerPort).build() : t);
            }
        }
    }

    @Override
    public String startTrace(TraceRing ring) {
        if (state != RESERVED && state != ACTIVE) {
            return "the flow has ended";
        }
        if (trace != null) {
            return "it is traced already";
        }
        if (life != null && life.index != 0) {
            // the ring is filled and drained on one thread; a session lives on the control loop
            return "it runs on event loop " + life.index + " (threads > 1): Trace follows the flows of loop 0 only so far";
        }
        trace = ring;
        return null;
    }

    @Override
    public void stopTrace(TraceRing ring) {
        if (trace == ring) {
            trace = null;
        }
    }

    /** RESERVED or ACTIVE: the flow holds its sockets and its request. */
    boolean live() {
        return state == RESERVED || state == ACTIVE;
    }

    @Override
    public String state() {
        switch (state) {
            case RESERVED: return "handshake";
            case ACTIVE: return finFromFlow || finFromKernel ? "closing" : "established";
            case QUARANTINED: return "quarantined";
            default: return "free";
        }
    }
}
