package warren.daemon.loop;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import warren.fdpass.EventFd;

/**
 * Hands packets from one event loop (the producer) to another (the consumer) when the packet
 * arrived on a loop that does not own its flow (docs/loops.md, "Fallback"): a single-producer
 * single-consumer ring of preallocated slots in one direct buffer. No lock, no allocation; a
 * full ring refuses ({@link #offer} returns false: the caller drops and counts), it never blocks
 * a loop. One ring per ordered pair of loops.
 *
 * <pre>
 * slot i (slotSize bytes, i = sequence &amp; (slots - 1)):
 *   0 int length   4 int tag (the caller's, e.g. a flow handle)   8 the packet (slotSize - 8 max)
 *
 * head: next sequence to write (written by the producer only, published with release)
 * tail: next sequence to read  (written by the consumer only, published with release)
 * sleeping: 1 while the consumer is (about to be) blocked in epoll_wait
 * </pre>
 *
 * <p><b>Wake-ups.</b> The producer writes the consumer's eventfd only if the consumer said it is
 * going to sleep. The consumer, before blocking: {@link #prepareToSleep()} sets {@code sleeping}
 * and then looks at {@code head} again (false = packets arrived meanwhile, do not block). The
 * producer publishes {@code head} and then looks at {@code sleeping}. Both sides store then load
 * with volatile (sequentially consistent) access, so at least one of them sees the other: either
 * the consumer sees the packet, or the producer sees the flag, clears it (CAS, so one write per
 * sleep) and signals the eventfd. The consumer's loop registers that eventfd for EPOLLIN (one
 * eventfd may serve all rings into one loop), drains it when it fires and calls {@link #poll}.
 * A consumer that woke for another reason calls {@link #awake()} so producers stop signalling.
 * A producer may signal a consumer that announced a sleep and then found packets instead (the
 * flag was up for that moment): a spurious wake-up, at most one per announcement, never a lost one.
 *
 * <p><b>Threads.</b> {@link #offer} from the producer loop only; {@link #poll},
 * {@link #prepareToSleep}, {@link #awake} from the consumer loop only; the counters from any
 * thread (possibly a little stale).
 */
public final class HandoverRing {
    /** Bytes before the packet in a slot: length and tag. */
    public static final int SLOT_HEADER = 8;
    public static final int DEFAULT_SLOT_SIZE = 2048;

    /** Receives one packet in {@link #poll}; the bytes are valid only during the call. */
    @FunctionalInterface
    public interface Receiver {
        /** The packet is {@code buffer[offset, offset + length)}; {@code tag} as offered. */
        void onPacket(ByteBuffer buffer, int offset, int length, int tag);
    }

    private static final VarHandle HEAD;
    private static final VarHandle TAIL;
    private static final VarHandle SLEEPING;

    static {
        try {
            MethodHandles.Lookup l = MethodHandles.lookup();
            HEAD = l.findVarHandle(HandoverRing.class, "head", long.class);
            TAIL = l.findVarHandle(HandoverRing.class, "tail", long.class);
            SLEEPING = l.findVarHandle(HandoverRing.class, "sleeping", int.class);
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    private final ByteBuffer slots;
    private final int mask;
    private final int slotSize;
    private final int maxPacket;
    private final EventFd consumerWakeup;

    // producer side (padding keeps the two sides' hot fields on different cache lines)
    private long p1, p2, p3, p4, p5, p6, p7;
    private long head;
    private long tailCache;
    private long wakeups;
    private long full;
    // consumer side
    private long c1, c2, c3, c4, c5, c6, c7;
    private long tail;
    private int sleeping;
    private long c8, c9, c10, c11, c12, c13, c14;

    /**
     * @param slots number of slots, a power of two
     * @param slotSize bytes per slot, at least {@link #SLOT_HEADER} + 1; packets up to
     *     {@code slotSize - SLOT_HEADER} bytes fit
     * @param consumerWakeup the consumer loop's eventfd (not owned: the consumer closes it)
     */
    public HandoverRing(int slots, int slotSize, EventFd consumerWakeup) {
        if (slots <= 0 || Integer.bitCount(slots) != 1 || slotSize <= SLOT_HEADER
                || (long) slots * slotSize > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("slots must be a power of two and slotSize > 8: " + slots + " x " + slotSize);
        }
        this.slots = ByteBuffer.allocateDirect(slots * slotSize);
        this.mask = slots - 1;
        this.slotSize = slotSize;
        this.maxPacket = slotSize - SLOT_HEADER;
        this.consumerWakeup = consumerWakeup;
    }

    /** The largest packet a slot holds. */
    public int maxPacket() {
        return maxPacket;
    }

    public int capacity() {
        return mask + 1;
    }

    /**
     * Producer: copies {@code src[offset, offset + length)} into the next slot and publishes it,
     * waking the consumer if it sleeps. False if the ring is full or the packet is larger than
     * {@link #maxPacket()} (counted in {@link #full()} / the caller's drop counter).
     */
    public boolean offer(ByteBuffer src, int offset, int length, int tag) {
        long h = head;
        if (h - tailCache > mask) {
            tailCache = (long) TAIL.getAcquire(this);
            if (h - tailCache > mask) {
                full++;
                return false;
            }
        }
        if (length > maxPacket || length < 0) {
            return false;
        }
        int at = (int) (h & mask) * slotSize;
        slots.putInt(at, length);
        slots.putInt(at + 4, tag);
        slots.put(at + SLOT_HEADER, src, offset, length);
        HEAD.setVolatile(this, h + 1);
        if ((int) SLEEPING.getVolatile(this) != 0 && SLEEPING.compareAndSet(this, 1, 0)) {
            wakeups++;
            consumerWakeup.signal();
        }
        return true;
    }

    /**
     * Consumer: hands up to {@code max} packets to {@code receiver}, oldest first, then frees their
     * slots. Returns how many.
     */
    public int poll(Receiver receiver, int max) {
        long t = tail;
        long h = (long) HEAD.getAcquire(this);
        if (t == h) {
            return 0;
        }
        long end = Math.min(h, t + max);
        int n = (int) (end - t);
        for (; t < end; t++) {
            int at = (int) (t & mask) * slotSize;
            receiver.onPacket(slots, at + SLOT_HEADER, slots.getInt(at), slots.getInt(at + 4));
        }
        tail = t;
        TAIL.setRelease(this, t);
        return n;
    }

    /**
     * Consumer, just before blocking in epoll_wait: announces the sleep. False if packets are
     * waiting (then poll instead of blocking; the flag is cleared again).
     */
    public boolean prepareToSleep() {
        SLEEPING.setVolatile(this, 1);
        if ((long) HEAD.getVolatile(this) != tail) {
            SLEEPING.setOpaque(this, 0);
            return false;
        }
        return true;
    }

    /** Consumer, after waking: producers need not signal until the next {@link #prepareToSleep}. */
    public void awake() {
        SLEEPING.setOpaque(this, 0);
    }

    /** True if the consumer has nothing to poll (as seen from the consumer). */
    public boolean isEmpty() {
        return (long) HEAD.getAcquire(this) == tail;
    }

    /** Packets offered and accepted so far. */
    public long offered() {
        return (long) HEAD.getOpaque(this);
    }

    /** Packets polled so far. */
    public long taken() {
        return (long) TAIL.getOpaque(this);
    }

    /** Times the producer wrote the consumer's eventfd. */
    public long wakeups() {
        return wakeups;
    }

    /** Offers refused because the ring was full. */
    public long full() {
        return full;
    }

    /**
     * The consumer's side of a loop's rings, when their shared {@code wakeup} fired: drains it,
     * polls every ring (null entries skipped) up to {@code budget} packets each, puts each back to
     * sleep, and signals {@code wakeup} again if one still had packets (the rest next cycle, after
     * the loop's other fds). Consumer thread.
     */
    public static void pollAll(HandoverRing[] in, Receiver receiver, int budget, EventFd wakeup) {
        wakeup.drain();
        boolean more = false;
        for (HandoverRing r : in) {
            if (r == null) {
                continue;
            }
            r.awake();
            r.poll(receiver, budget);
            more |= !r.prepareToSleep();
        }
        if (more) {
            wakeup.signal();
        }
    }
}
