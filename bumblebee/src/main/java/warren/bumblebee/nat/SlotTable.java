package warren.bumblebee.nat;

import java.net.InetAddress;
import java.nio.ByteBuffer;
import warren.daemon.control.Call;
import warren.daemon.loop.EventLoop;
import warren.daemon.metrics.Families;
import warren.packet.Ip;

/**
 * The NAT slots: a preallocated table of {@link Flow}s addressed by slot number, a stack of the
 * free ones, and the quarantine a slot rests in after its flow ended. A slot's pool address is
 * computed from its number ({@link AddressPlan}), so a packet from the TUN or a peer accepted by
 * the listener finds its slot without a lookup table; a slot's NAT port moves on at every claim.
 *
 * <pre>
 * FREE --claim--> (the caller makes it RESERVED) --quarantine--> QUARANTINED --quarantine period--> FREE
 *      <--unclaim-- (the start failed before RESERVED)
 * </pre>
 * Invariants: a slot is on the free stack iff it is FREE; {@code quarantined} counts the
 * QUARANTINED slots.
 *
 * <p>With N event loops each loop has a SlotTable over the same {@link Flow}s ({@link #flows}):
 * loop k owns the slots with {@code (slot + 1) % N == k} ({@link #owner}), the residue class the
 * TUN's steering program sends the kernel's packets of to queue k. Loop thread only, but for the
 * free stack: another loop (the control loop) may {@link #claim} and {@link #unclaim}, so those
 * and the quarantine's release are synchronized (once per flow, never per packet), and
 * {@link #freeShared} is readable from any thread.
 */
final class SlotTable {
    private final EventLoop loop;
    private final EventLoop.Group group;
    private final long quarantineMillis;
    private final int mtu;
    private final Flow[] flows;
    private final Flow[] owned;
    private final int index;
    private final int loops;
    private final int[] free;
    /** Where each slot of this loop is on the free stack ({@code free}), -1 if not: O(1) {@link #take}. */
    private final int[] at;
    private int freeCount;
    private volatile int freeShared;
    private int quarantined;

    SlotTable(EventLoop loop, EventLoop.Group group, int slots, int mtu, long quarantineMillis) {
        this(loop, group, table(slots), 0, 1, mtu, quarantineMillis);
    }

    /**
     * The slots of loop {@code index} of {@code loops} in {@code flows} (shared by every loop's
     * table); quarantine timers in {@code group}, the NAT's.
     */
    SlotTable(EventLoop loop, EventLoop.Group group, Flow[] flows, int index, int loops, int mtu,
            long quarantineMillis) {
        this.loop = loop;
        this.group = group;
        this.quarantineMillis = quarantineMillis;
        this.mtu = mtu;
        this.flows = flows;
        this.index = index;
        this.loops = loops;
        int mine = 0;
        for (int i = 0; i < flows.length; i++) {
            mine += owner(i, loops) == index ? 1 : 0;
        }
        this.owned = new Flow[mine];
        this.free = new int[mine];
        this.at = new int[flows.length];
        java.util.Arrays.fill(at, -1);
        int o = 0;
        for (int i = 0; i < flows.length; i++) {
            if (owner(i, loops) == index) {
                owned[o++] = flows[i];
            }
        }
        for (int i = flows.length - 1; i >= 0; i--) {
            if (owner(i, loops) == index) {
                push(i);
            }
        }
        freeShared = freeCount;
    }

    private void push(int slot) {
        at[slot] = freeCount;
        free[freeCount++] = slot;
    }

    /** A new table of {@code slots} FREE flows (shared by the loops' SlotTables). */
    static Flow[] table(int slots) {
        Flow[] flows = new Flow[slots];
        for (int i = 0; i < slots; i++) {
            flows[i] = new Flow(i);
        }
        return flows;
    }

    /** The loop that owns {@code slot} among {@code loops}: where the steering program sends its packets. */
    static int owner(int slot, int loops) {
        return (slot + 1) % loops;
    }

    /** Every loop's slots (the shared table). */
    Flow[] table() {
        return flows;
    }

    /** This loop's slots, by number (for adoption, export and the metrics sample). */
    Flow[] all() {
        return owned;
    }

    /** Free slots of this loop, from any thread (placement of a new flow). */
    int freeShared() {
        return freeShared;
    }

    int size() {
        return flows.length;
    }

    synchronized int free() {
        return freeCount;
    }

    int quarantined() {
        return quarantined;
    }

    /**
     * Takes a free slot for a new flow of {@code call}, reset: the next NAT port, MSS clamped to
     * the smaller of {@code flowMtu} (0: none) and the TUN's MTU, no key, no counts. Null when no
     * slot is free. The caller makes it RESERVED or gives it back with {@link #unclaim}.
     */
    synchronized Flow claim(Call call, int flowMtu, boolean downgrade) {
        if (freeCount == 0) {
            return null;
        }
        Flow f = flows[free[--freeCount]];
        at[f.slot] = -1;
        freeShared = freeCount;
        f.accept.set(Flow.ACCEPT_NONE);
        f.generation++; // a new flow in this slot: a pre-copy of the previous one has ended
        f.call = call;
        f.nextNatPort();
        int m = flowMtu > 0 ? Math.min(flowMtu, mtu) : mtu;
        f.mss4 = m - Ip.V4_HEADER - Ip.TCP_HEADER;
        f.mss6 = m - Ip.V6_HEADER - Ip.TCP_HEADER;
        f.haveKey = false;
        f.udp = false;
        f.vnet = false;
        f.downgrade = downgrade;
        f.finFromFlow = false;
        f.finFromKernel = false;
        f.packetsIn = f.packetsOut = f.bytesIn = f.bytesOut = 0;
        f.lastActiveNanos = System.nanoTime();
        return f;
    }

    /** A claimed slot whose flow could not start: free again at once. */
    synchronized void unclaim(Flow f) {
        push(f.slot);
        freeShared = freeCount;
    }

    /** An ended flow's slot rests for the quarantine period (its old kernel connection may still send). */
    void quarantine(Flow f) {
        f.state = Flow.QUARANTINED;
        quarantined++;
        armQuarantine(f);
    }

    /**
     * The quarantine timer of a QUARANTINED slot (again, after an adoption), in the NAT's group: a
     * pause holds it, so a slot is freed by the process that runs it, never while it is exported.
     */
    void armQuarantine(Flow f) {
        f.quarantine = loop.schedule(quarantineMillis, () -> {
            f.quarantine = null;
            FlowCopy.moved(f); // a copied slot freed: its key ends at the pause
            f.state = Flow.FREE;
            quarantined--;
            unclaim(f);
        }, group);
    }

    /** The slot whose pool address is at {@code off} in {@code b} (a packet's destination), or null. */
    Flow byPoolAddress(int version, ByteBuffer b, int off) {
        int slot = AddressPlan.slotOf(version, b, off, flows.length);
        return slot < 0 || (loops > 1 && owner(slot, loops) != index) ? null : flows[slot];
    }

    /**
     * The loop that owns the slot of the pool address at {@code off} if that is another loop (a
     * packet the steering did not bring here), else -1.
     */
    int otherLoop(int version, ByteBuffer b, int off) {
        int slot = AddressPlan.slotOf(version, b, off, flows.length);
        if (slot < 0 || loops < 2) {
            return -1;
        }
        int k = owner(slot, loops);
        return k == index ? -1 : k;
    }

    /** The slot of a pool address (an accepted connection's peer), or null. */
    Flow byPoolAddress(InetAddress a) {
        int slot = AddressPlan.slotOf(a, flows.length);
        return slot < 0 ? null : flows[slot];
    }

    /**
     * Rebuilds the free stack and the quarantine count from the slots' states (an adopted table).
     * IllegalArgumentException for a state no slot can have.
     */
    synchronized void recount() {
        freeCount = 0;
        quarantined = 0;
        for (int i = flows.length - 1; i >= 0; i--) {
            if (owner(i, loops) != index) {
                continue;
            }
            at[i] = -1;
            switch (flows[i].state) {
                case Flow.FREE:
                    push(i);
                    break;
                case Flow.QUARANTINED:
                    quarantined++;
                    break;
                case Flow.RESERVED:
                case Flow.ACTIVE:
                    break;
                default:
                    throw new IllegalArgumentException("slot " + i + ": state " + flows[i].state);
            }
        }
        freeShared = freeCount;
    }

    /**
     * A successor's pause, O(1) per slot the delta changes instead of a {@link #recount}: slot
     * {@code f} went from {@code was} to its state now (FREE, in use or QUARANTINED), its place on
     * the free stack and the quarantine count follow. Before the loops run.
     */
    synchronized void moved(Flow f, int was) {
        if (was == Flow.QUARANTINED) {
            quarantined--;
        }
        if (f.state == Flow.QUARANTINED) {
            quarantined++;
        }
        if (was == Flow.FREE && f.state != Flow.FREE) {
            take(f.slot);
        } else if (was != Flow.FREE && f.state == Flow.FREE) {
            push(f.slot);
        }
        freeShared = freeCount;
    }

    /** Takes {@code slot} off the free stack wherever it is (the top one moves into its place). */
    private void take(int slot) {
        int i = at[slot];
        if (i < 0) {
            throw new IllegalStateException("slot " + slot + " is not free");
        }
        int top = free[--freeCount];
        free[i] = top;
        at[top] = i;
        at[slot] = -1;
    }

    /** Slots by state, for a metrics sample. */
    void sample(warren.daemon.metrics.Sample s) {
        int freeNow = freeShared;
        s.gauge(Families.NAT_SLOTS, freeNow, "free");
        s.gauge(Families.NAT_SLOTS, quarantined, "quarantined");
        s.gauge(Families.NAT_SLOTS, owned.length - freeNow - quarantined, "in_use");
    }
}
