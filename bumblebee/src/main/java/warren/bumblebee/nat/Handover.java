package warren.bumblebee.nat;

import warren.daemon.loop.EventLoop;
import warren.daemon.loop.HandoverRing;
import warren.fdpass.EventFd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * One loop's end of the hand-over between N loops when the TUN has no steering program
 * (docs/loops.md, "Fallback"): the kernel then picks a queue by its own flow table, so a packet
 * for a slot of loop k may be read by loop j. Loop j's {@link TunPath} offers it to the ring
 * j -> k ({@link #out}); loop k polls its rings ({@link #in}) when their common eventfd fires and
 * handles each packet as if read from its own queue. One {@link HandoverRing} per ordered pair
 * of loops, built with the Nats ({@link #build}) and only then; nothing per packet.
 *
 * <p>The eventfd is registered in the Nat's {@link EventLoop.Group}, so a paused Nat polls nothing:
 * handed-over packets wait in the rings (a full ring drops and counts, {@code drops.handover_full})
 * and are delivered at the resume. An upgrade in place does not hand the rings over: packets in
 * them when the successor takes over are lost like any packet in flight (TCP resends).
 *
 * <p>Threads: {@link #out} rings are written by this loop's TunPath only; {@link #in} rings and the
 * eventfd are read on this loop only. Built and closed on the thread that builds and discards
 * the Nats (before the loops run, after they stopped).
 */
final class Handover {
    /** Bytes of hand-over ring per ordered pair of loops (its slot count the largest power of two that fits, >= 16). */
    static final int RING_BYTES = 1 << 20;
    /** Handed-over packets taken per wakeup from each ring. */
    private static final int POLL_BUDGET = 256;

    /** {@code out[k]}: the ring from this loop to loop k ({@code out[index]} null). */
    final HandoverRing[] out;
    /** {@code in[k]}: the ring from loop k to this loop ({@code in[index]} null). */
    private final HandoverRing[] in;
    /** The consumer eventfd every ring into this loop signals (owned here). */
    private final EventFd wakeup;
    private HandoverRing.Receiver receiver;

    private Handover(HandoverRing[] out, HandoverRing[] in, EventFd wakeup) {
        this.out = out;
        this.in = in;
        this.wakeup = wakeup;
    }

    /**
     * One Handover per loop of {@code loops} (at least 2), with rings of slots for packets up to
     * {@code mtu} bytes (a TUN without offloads sends none larger). On failure every eventfd made
     * so far is closed.
     */
    static Handover[] build(int loops, int mtu) throws NativeIoException {
        int slotSize = mtu + HandoverRing.SLOT_HEADER;
        int slots = Math.max(16, Integer.highestOneBit(RING_BYTES / slotSize));
        EventFd[] wakeups = new EventFd[loops];
        try {
            for (int k = 0; k < loops; k++) {
                wakeups[k] = new EventFd();
            }
        } catch (NativeIoException | RuntimeException e) {
            for (EventFd w : wakeups) {
                if (w != null) {
                    w.close();
                }
            }
            throw e;
        }
        HandoverRing[][] rings = new HandoverRing[loops][loops]; // [from][to]
        for (int from = 0; from < loops; from++) {
            for (int to = 0; to < loops; to++) {
                if (from != to) {
                    rings[from][to] = new HandoverRing(slots, slotSize, wakeups[to]);
                }
            }
        }
        Handover[] h = new Handover[loops];
        for (int k = 0; k < loops; k++) {
            HandoverRing[] in = new HandoverRing[loops];
            for (int from = 0; from < loops; from++) {
                in[from] = rings[from][k];
            }
            h[k] = new Handover(rings[k], in, wakeups[k]);
        }
        return h;
    }

    /**
     * Registers the rings' eventfd in {@code group} (a paused group holds it: nothing is polled
     * until the resume); {@code receiver} gets each packet handed over to this loop. Once.
     */
    void register(EventLoop loop, EventLoop.Group group, HandoverRing.Receiver receiver) throws NativeIoException {
        this.receiver = receiver;
        for (HandoverRing r : in) {
            if (r != null) {
                r.prepareToSleep(); // nothing polled yet: producers signal the first packet
            }
        }
        loop.register(wakeup.fd(), Native.EPOLLIN, ev -> poll(), group);
    }

    /** The eventfd fired: every ring polled up to its budget, then asleep again or re-signalled. */
    private void poll() {
        HandoverRing.pollAll(in, receiver, POLL_BUDGET, wakeup);
    }

    /** Closes the eventfd (epoll forgets it with the file); after the loops stopped. Idempotent. */
    void close() {
        wakeup.close();
    }
}
