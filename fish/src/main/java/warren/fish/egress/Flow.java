package warren.fish.egress;

import warren.daemon.loop.EventLoop;
import warren.fish.conntrack.Ctnetlink;
import warren.packet.FlowKey;
import warren.packet.Ip;

/**
 * One client flow and its lease: the port of its client's range it holds on the soft-unicast IP
 * and the conntrack entry reserving it ({@link PortLeases}). What its packets tell about it is
 * recorded here ({@link #packet}); when it ends is {@link PortLeases}'s business.
 *
 * <pre>
 * NEW (port reserved) --packets--> ACTIVE --FIN both ways / RST / idle timeout--> EXPIRED
 *     (conntrack entry deleted, port free); all flows of a client end when the client does
 * TCP: half-open (no reply yet) and closing (FIN both ways, or RST) get the short timeout
 * </pre>
 */
final class Flow {
    /** Protocol indexes: of a flow's port space on its soft-unicast IP, of per-protocol arrays. */
    static final int TCP = 0;
    static final int UDP = 1;
    static final int ICMP = 2;
    static final int PROTOCOLS = 3;

    final Client client;
    final FlowKey key; // as the client sent it
    final int proto;   // TCP, UDP, ICMP index
    final int port;    // egress port (ICMP: echo id)
    final Ctnetlink.Tuple reserved;
    long lastActive;
    boolean replied; // a packet came back: no longer half-open
    boolean finOut;
    boolean finIn;
    boolean closing;
    long packets;
    long bytes;
    /** When its conntrack entry was made or last refreshed (System.nanoTime); 0: not known (a restored flow). */
    long refreshedNanos;
    /** Its next check ({@link PortLeases}), in its lane's group; null before the first and once it has ended. */
    EventLoop.Timer timer;
    /**
     * An RST went through, either way: neither end keeps the connection (no TIME_WAIT), so its
     * port may be taken over for a new TCP flow of its client once the range has no free port
     * ({@link PortLeases}). While set and the flow lives it is in its client's reset list.
     */
    boolean reset;
    /** Its neighbours in its client's reset list ({@link Client#resetHead}), oldest first. */
    Flow resetPrev;
    Flow resetNext;
    /** Pre-copy (old side): it was in its client's copy; once ended, linked from {@link Client#endedCopies}. */
    boolean copied;
    Flow endedNext;

    Flow(Client client, FlowKey key, int proto, int port, Ctnetlink.Tuple reserved) {
        this.client = client;
        this.key = key;
        this.proto = proto;
        this.port = port;
        this.reserved = reserved;
    }

    static int protoIndex(int protocol) {
        switch (protocol) {
            case Ip.TCP: return TCP;
            case Ip.UDP: return UDP;
            default: return ICMP;
        }
    }

    /** A packet of {@code length} bytes went out ({@code outbound}) or came back at {@code now}. */
    void packet(long now, boolean outbound, int tcpFlags, int length) {
        packets++;
        bytes += length;
        lastActive = now;
        client.lastPacket = now;
        if (!outbound) {
            replied = true;
        }
        if (proto == TCP) {
            if ((tcpFlags & Ip.TCP_RST) != 0) {
                closing = true;
                if (!reset) {
                    reset = true;
                    client.linkReset(this);
                }
            }
            if ((tcpFlags & Ip.TCP_FIN) != 0) {
                if (outbound) {
                    finOut = true;
                } else {
                    finIn = true;
                }
                closing = finOut && finIn;
            }
        }
    }

    /** Whether it is in the short timeout: closing, or TCP with no reply yet (like conntrack). */
    boolean shortTimeout() {
        return closing || (proto == TCP && !replied);
    }
}
