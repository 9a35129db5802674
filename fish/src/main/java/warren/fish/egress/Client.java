package warren.fish.egress;

import com.google.protobuf.ByteString;
import java.util.HashMap;
import java.util.Map;
import warren.control.v1.EndReason;
import warren.control.v1.FiveTuple;
import warren.daemon.Log;
import warren.daemon.control.Call;
import warren.daemon.loop.EventLoop;
import warren.daemon.task.Task;
import warren.daemon.trace.TraceRing;
import warren.daemon.trace.Traceable;
import warren.packet.FlowKey;

/**
 * One client (one Egress request, answered when it ends): its packet socket (owned: closed by
 * {@link Clients#end}), its soft-unicast IP and port range, its flows by the key the client sends
 * and its traffic. Lives on one loop; {@link #cancel} and {@link #stop} may come from any thread.
 */
final class Client implements Task, Traceable {
    /** Flows of one client whose tuples List shows (a client may have thousands). */
    static final int LISTED_FLOWS = 4;

    final Clients owner;
    final EventLoop loop;
    /** Its Egress request; null only for a successor's pre-copied client until the pause's delta gives it ({@link Egress}). */
    Call call;
    final int fd;
    int reg = -1;
    /** Its soft-unicast IP's address. */
    final byte[] softIp;
    /** Its loop's record of that IP (flows by port), set when it begins there. */
    SoftIp soft;
    /** The loop it lives on (index in the engine's lanes), set by the control loop before it begins. */
    int lane;
    final int first;
    final int last;
    final String tenant;
    /** Egress.vnet_hdr: its messages carry a virtio_net_hdr both ways (super-packets); set before it starts. */
    boolean vnet;
    /** SOCK_DGRAM: its peer's close is invisible, so it ends when idle ({@link Clients#armIdle}). */
    final boolean datagram;
    /** When the client last sent or was sent a packet (System.nanoTime). */
    long lastPacket = System.nanoTime();
    EventLoop.Timer idleTimer;
    final Map<FlowKey, Flow> flows = new HashMap<>();
    /** The source address of its first packet: every later packet must carry it. */
    final byte[] identity = new byte[16];
    boolean haveIdentity;
    long packetsOut;
    long packetsIn;
    long bytesOut;
    long bytesIn;
    /** Where {@link PortLeases} looks for a free port first (round robin over the range). */
    int nextPort;
    boolean ended;
    /** While a Trace watches this client: where its packets are copied (null: nothing copied). */
    TraceRing trace;
    /**
     * Its live TCP flows an RST closed, oldest first (linked through the flows, no allocation):
     * when its range has no free port, a new TCP flow takes the oldest one's port ({@link PortLeases}).
     */
    Flow resetHead;
    Flow resetTail;
    /** "no free port" is per dropped packet: at most a few lines per interval per client, then a count. */
    final Log.Limited exhaustedLog = Log.limited("fish.port_range_exhausted");
    /**
     * Pre-copy (old side, docs/upgrade.md): its key once copied (its task number; 0: not copied),
     * when (System.nanoTime, read before its record was written), whether a flow was added or ended
     * since ({@code dirty}), and its copied flows that ended since, linked through
     * {@link Flow#endedNext} (no allocation). Traffic since the copy is seen from the stamps that
     * exist anyway ({@link #lastPacket}, {@link Flow#lastActive}): nothing more is written per packet.
     */
    long copyKey;
    long copiedAt;
    boolean dirty;
    Flow endedCopies;

    Client(Clients owner, EventLoop loop, Call call, int fd, byte[] softIp, int first, int last, String tenant,
            boolean datagram) {
        this.owner = owner;
        this.loop = loop;
        this.call = call;
        this.datagram = datagram;
        this.fd = fd;
        this.softIp = softIp;
        this.first = first;
        this.last = last;
        this.tenant = tenant;
        this.nextPort = first;
    }

    /** {@code f} saw its first RST: last in the reset list. */
    void linkReset(Flow f) {
        f.resetPrev = resetTail;
        f.resetNext = null;
        if (resetTail == null) {
            resetHead = f;
        } else {
            resetTail.resetNext = f;
        }
        resetTail = f;
    }

    /** {@code f} ended: out of the reset list if it is in it. */
    void unlinkReset(Flow f) {
        if (!f.reset || (f.resetPrev == null && resetHead != f)) {
            return;
        }
        if (f.resetPrev == null) {
            resetHead = f.resetNext;
        } else {
            f.resetPrev.resetNext = f.resetNext;
        }
        if (f.resetNext == null) {
            resetTail = f.resetPrev;
        } else {
            f.resetNext.resetPrev = f.resetPrev;
        }
        f.resetPrev = null;
        f.resetNext = null;
    }

    /** Its task's number in audit lines (0 before it has one). */
    long taskNumber() {
        return call == null || call.task() == null ? 0 : call.task().number();
    }

    @Override
    public void cancel() {
        loop.execute(() -> owner.end(this, EndReason.CANCELLED));
    }

    @Override
    public void stop() {
        loop.execute(() -> owner.end(this, EndReason.SHUTDOWN));
    }

    @Override
    public EventLoop loop() {
        return loop;
    }

    @Override
    public String state() {
        return flows.size() + " flows";
    }

    @Override
    public String startTrace(TraceRing ring) {
        if (ended) {
            return "the client has ended";
        }
        if (trace != null) {
            return "it is traced already";
        }
        if (!loop.inLoop()) { // its packets would be copied on its loop while loop 0 reads the ring
            return "it lives on event loop " + lane + "; Trace reaches the clients of loop 0 only so far";
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

    /**
     * List: the client's packets and bytes each way (out = from the client), and of up to
     * {@link #LISTED_FLOWS} live flows the tuple as the client sent it and as it left.
     */
    @Override
    public void traffic(warren.control.v1.TaskInfo.Builder info) {
        info.setPacketsOut(packetsOut).setBytesOut(bytesOut).setPacketsIn(packetsIn).setBytesIn(bytesIn);
        int n = 0;
        for (Flow f : flows.values()) {
            if (n++ == LISTED_FLOWS) {
                break;
            }
            info.addTuples(fiveTuple(f.key.protocol, f.key.src, f.key.addressLength(), f.key.srcPort, f.key.dst,
                    f.key.dstPort));
            info.addTuples(fiveTuple(f.key.protocol, f.reserved.src().getAddress(), f.key.addressLength(), f.port,
                    f.reserved.dst().getAddress(), f.key.dstPort));
        }
    }

    static FiveTuple fiveTuple(int protocol, byte[] src, int len, int srcPort, byte[] dst, int dstPort) {
        return FiveTuple.newBuilder().setProtocol(protocol).setSrcIp(ByteString.copyFrom(src, 0, len)).setSrcPort(srcPort)
                .setDstIp(ByteString.copyFrom(dst, 0, len)).setDstPort(dstPort).build();
    }
}
