package warren.daemon.loop;

import java.util.PriorityQueue;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.function.Consumer;
import warren.fdpass.epoll.Epoll;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * A single-threaded duty cycle over epoll (Agrona's Agent, passt's main loop). Each cycle: run
 * tasks posted from other threads, fire due timers, wait for fd events (no longer than the next
 * timer), dispatch them, then run each {@link Duty} once. Registrations live in a table addressed
 * by int; the epoll data word is the slot, so dispatch is an array index, not a map lookup.
 *
 * <p>Every wakeup has a budget: a handler does a bounded amount of work and, if there is more
 * (an edge-triggered socket not yet drained), leaves it to its component's {@link Duty}, which
 * runs once per cycle after the events. While a duty has work left the next epoll_wait does not
 * block, so other fds, posted tasks and timers are served between two slices of it.
 *
 * <p>A handler that throws is reported to the error sink with its slot and the loop goes on; the
 * owner of the registration decides what the failure means (a client connection closes itself).
 * Everything except {@link #execute} and {@link #stop} must be called on the loop thread.
 */
public final class EventLoop implements AutoCloseable {
    /** Reacts to the epoll events of one registration. */
    @FunctionalInterface
    public interface Handler {
        void onEvents(int events) throws Exception;
    }

    /**
     * A timer; {@link #cancel()} on the loop thread. A cancelled timer lets go of its action at
     * once (which may hold a whole pair or flow) and leaves the queue at the next purge.
     */
    public static final class Timer implements Comparable<Timer> {
        final long deadlineNanos;
        Runnable action;
        final long seq;
        final Group group;
        boolean cancelled;
        private final EventLoop loop;

        Timer(long deadlineNanos, Runnable action, long seq, Group group, EventLoop loop) {
            this.deadlineNanos = deadlineNanos;
            this.action = action;
            this.seq = seq;
            this.group = group;
            this.loop = loop;
        }

        public void cancel() {
            if (!cancelled) {
                cancelled = true;
                action = null;
                loop.cancelledTimers++;
            }
        }

        /** When it comes due, in {@link System#nanoTime()}'s terms. */
        public long deadlineNanos() {
            return deadlineNanos;
        }

        public boolean cancelled() {
            return cancelled;
        }

        @Override
        public int compareTo(Timer o) {
            int c = Long.compare(deadlineNanos, o.deadlineNanos);
            return c != 0 ? c : Long.compare(seq, o.seq);
        }
    }

    /**
     * Work a component does once per cycle, after the fd events: e.g. the relay's pumps that
     * stopped at their budget. Returns true if it has more for the next cycle (which then polls
     * epoll without waiting). Must itself be bounded.
     */
    @FunctionalInterface
    public interface Duty {
        boolean run();
    }


    /**
     * A registration group: registrations and timers of one component (a relay, a NAT table) that
     * can be paused together at a clean point, e.g. for an upgrade's handoff. While paused,
     * epoll events of its registrations are held (OR'd per registration, in arrival order) instead
     * of dispatched, and its timers that come due are held instead of fired; {@link #resume}
     * dispatches the held events at once and gives the held timers back to the queue (a timer due
     * meanwhile fires in the next cycle, after those events). Nothing is unregistered or
     * re-armed, so pausing costs O(1) and resuming O(registrations that saw events). Edges are
     * not lost: an edge-triggered event reported while paused is the one held. A level-triggered
     * registration would be reported again by every epoll_wait while its fd stays ready (a busy
     * loop for the whole pause), so the first event held disarms it (EPOLL_CTL_MOD to
     * EPOLLONESHOT: the kernel adds EPOLLHUP|EPOLLERR to every MOD, so a hang-up or error is
     * reported once more, after which the one-shot leaves it silent) and resume re-arms it with
     * its events; {@link EventLoop#modify} while disarmed only records the
     * events for that re-arm. Loop thread only.
     *
     * <pre>
     * RUNNING --pause()--> PAUSED (events and due timers held) --resume()--> RUNNING (held ones delivered)
     * </pre>
     */
    public final class Group {
        private final String name;
        private boolean paused;
        private int[] held = new int[16];
        private int heldCount;
        private final java.util.ArrayList<Timer> heldTimers = new java.util.ArrayList<>();
        private long holds;
        private boolean dropWriteOnly;
        private long droppedWriteOnly;

        private Group(String name) {
            this.name = name;
        }

        public boolean paused() {
            return paused;
        }

        /** Holds this group's events and timers from now on. Loop thread; idempotent. */
        public void pause() {
            paused = true;
        }

        /**
         * Delivers the events held while paused (each registration's, OR'd, to its current
         * handler) and re-queues the held timers. Loop thread; idempotent.
         */
        public void resume() {
            if (!paused) {
                return;
            }
            paused = false;
            dropWriteOnly = false;
            for (Timer t : heldTimers) {
                timers.add(t);
            }
            heldTimers.clear();
            int[] list = java.util.Arrays.copyOf(held, heldCount);
            heldCount = 0;
            for (int i = 0; i < list.length; i++) {
                int slot = list[i];
                if (slotGroups[slot] != this || handlers[slot] == null) {
                    // unregistered meanwhile (unregister cleared what was held), its slot perhaps
                    // reused by another group's registration: whatever that group holds is its own
                    continue;
                }
                if (paused) { // a handler paused it again: the rest wait for the next resume
                    if (heldEvents[slot] != 0) {
                        append(slot);
                    }
                    continue;
                }
                int ev = heldEvents[slot];
                heldEvents[slot] = 0;
                if (ev == 0) {
                    continue;
                }
                if (disarmed[slot]) {
                    disarmed[slot] = false;
                    try {
                        epoll.modify(slotFds[slot], slotEvents[slot], slot);
                    } catch (Throwable t) {
                        errorSink.accept(t);
                    }
                }
                try {
                    handlers[slot].onEvents(ev);
                } catch (Throwable t) {
                    errorSink.accept(t);
                }
            }
        }

        /** EPOLLOUT-only events not held ({@link #dropWriteOnlyWhilePaused}) since the group was made. */
        public long droppedWriteOnly() {
            return droppedWriteOnly;
        }

        /** Events held since the group was made (a level-triggered registration counts once per pause). */
        public long holds() {
            return holds;
        }

        /** Registrations with events held now (for tests and logs). */
        public int heldEvents() {
            int n = 0;
            for (int i = 0; i < heldCount; i++) {
                n += heldEvents[held[i]] != 0 && slotGroups[held[i]] == this ? 1 : 0;
            }
            return n;
        }

        /**
         * While paused, an event that is only EPOLLOUT is not held (dropped): for a component whose
         * resume pumps whatever has bytes to write anyway, an idle socket's writability is news to
         * nobody. Edge-triggered registrations only (a level-triggered one is held, and disarmed,
         * as always). A relay's pre-copied pairs in a successor: every socket added to epoll reports
         * EPOLLOUT at once, 16,000 of them at 8,000 pairs, which its first cycle after the commit
         * had to go through before the events that matter. Cleared by {@link #resume}.
         */
        public void dropWriteOnlyWhilePaused() {
            dropWriteOnly = true;
        }

        private void hold(int slot, int events) {
            if (dropWriteOnly && (events & ~Native.EPOLLOUT) == 0 && (slotEvents[slot] & Native.EPOLLET) != 0) {
                droppedWriteOnly++;
                return;
            }
            holds++;
            if (heldEvents[slot] == 0) {
                append(slot);
            }
            heldEvents[slot] |= events;
            if ((slotEvents[slot] & Native.EPOLLET) == 0 && !disarmed[slot]) {
                disarmed[slot] = true; // once, even if it fails (an fd closed before its unregister): one error
                try {
                    epoll.modify(slotFds[slot], Native.EPOLLONESHOT, slot);
                } catch (Throwable t) {
                    errorSink.accept(new IllegalStateException("cannot disarm slot " + slot + " (fd " + slotFds[slot]
                            + ") of paused group " + name + "; closed before it was unregistered?", t));
                }
            }
        }

        private void append(int slot) {
            if (heldCount == held.length) {
                held = java.util.Arrays.copyOf(held, held.length * 2);
            }
            held[heldCount++] = slot;
        }

        @Override
        public String toString() {
            return name + (paused ? " (paused)" : "");
        }
    }

    /** A new registration group on this loop (see {@link Group}). */
    public Group group(String name) {
        return new Group(name);
    }

    private volatile Duty[] duties = new Duty[0]; // copy on write: read once per cycle
    private boolean dutiesPending;
    private final Epoll epoll;
    private Handler[] handlers;
    private int[] slotFds;
    private Group[] slotGroups;
    private int[] heldEvents;
    private int[] slotEvents;
    private boolean[] disarmed;
    private int[] freeSlots;
    private int freeCount;
    private int used;
    private final ConcurrentLinkedQueue<Runnable> posted = new ConcurrentLinkedQueue<>();
    private final PriorityQueue<Timer> timers = new PriorityQueue<>();
    /** Cancelled timers still in {@link #timers} (a 1 h idle timer of an ended pair would stay an hour). */
    private int cancelledTimers;
    private long timerSeq;
    private volatile boolean running = true;
    private volatile Thread thread;
    private final Consumer<Throwable> errorSink;

    public EventLoop(int capacity, Consumer<Throwable> errorSink) throws NativeIoException {
        this.epoll = new Epoll(EPOLL_CAPACITY);
        this.handlers = new Handler[capacity];
        this.slotFds = new int[capacity];
        this.slotGroups = new Group[capacity];
        this.heldEvents = new int[capacity];
        this.slotEvents = new int[capacity];
        this.disarmed = new boolean[capacity];
        this.freeSlots = new int[capacity];
        this.errorSink = errorSink;
    }

    /** Registers {@code fd} for {@code events}; returns the slot. */
    public int register(int fd, int events, Handler h) throws NativeIoException {
        return register(fd, events, h, null);
    }

    /** Registers {@code fd} for {@code events} in {@code group} (null: none); returns the slot. */
    public int register(int fd, int events, Handler h, Group group) throws NativeIoException {
        int slot;
        if (freeCount > 0) {
            slot = freeSlots[--freeCount];
        } else {
            if (used == handlers.length) {
                grow();
            }
            slot = used++;
        }
        epoll.add(fd, events, slot);
        handlers[slot] = h;
        slotFds[slot] = fd;
        slotGroups[slot] = group;
        heldEvents[slot] = 0;
        slotEvents[slot] = events;
        disarmed[slot] = false;
        return slot;
    }

    private void grow() {
        int n = handlers.length * 2;
        handlers = java.util.Arrays.copyOf(handlers, n);
        slotFds = java.util.Arrays.copyOf(slotFds, n);
        slotGroups = java.util.Arrays.copyOf(slotGroups, n);
        heldEvents = java.util.Arrays.copyOf(heldEvents, n);
        slotEvents = java.util.Arrays.copyOf(slotEvents, n);
        disarmed = java.util.Arrays.copyOf(disarmed, n);
        freeSlots = java.util.Arrays.copyOf(freeSlots, n);
    }

    /** Changes a registration's events (while its paused group holds it disarmed: at its re-arm). */
    public void modify(int slot, int events) throws NativeIoException {
        slotEvents[slot] = events;
        if (!disarmed[slot]) {
            epoll.modify(slotFds[slot], events, slot);
        }
    }

    /** Removes a registration; call before closing its fd. */
    public void unregister(int slot) {
        if (slot < 0 || handlers[slot] == null) {
            return;
        }
        epoll.remove(slotFds[slot]);
        handlers[slot] = null;
        slotGroups[slot] = null;
        heldEvents[slot] = 0;
        disarmed[slot] = false;
        for (int i = 0; i < pendingCount; i++) { // (only before a drained loop's first cycle)
            if (pendingSlots[i] == slot) {
                pendingEvents[i] = 0;
            }
        }
        freeSlots[freeCount++] = slot;
    }

    /** Adds a {@link Duty}, run once per cycle from now on. Any thread. */
    public synchronized void addDuty(Duty d) {
        Duty[] n = java.util.Arrays.copyOf(duties, duties.length + 1);
        n[duties.length] = d;
        duties = n;
    }

    /** Removes a {@link Duty} added before (compared by identity). Any thread. */
    public synchronized void removeDuty(Duty d) {
        for (int i = 0; i < duties.length; i++) {
            if (duties[i] == d) {
                Duty[] n = new Duty[duties.length - 1];
                System.arraycopy(duties, 0, n, 0, i);
                System.arraycopy(duties, i + 1, n, i, n.length - i);
                duties = n;
                return;
            }
        }
    }

    /** Runs {@code r} on the loop thread (soon). Any thread. */
    public void execute(Runnable r) {
        posted.add(r);
        if (Thread.currentThread() != thread) {
            epoll.wakeup();
        }
    }

    /**
     * Runs {@code c} on the loop thread and waits up to {@code timeoutMs} for its result; its
     * exception is rethrown as is. From another thread only (the loop must be running).
     */
    public <T> T call(java.util.concurrent.Callable<T> c, long timeoutMs) throws Exception {
        java.util.concurrent.CompletableFuture<T> f = new java.util.concurrent.CompletableFuture<>();
        execute(() -> {
            try {
                f.complete(c.call());
            } catch (Throwable t) {
                f.completeExceptionally(t);
            }
        });
        try {
            return f.get(timeoutMs, java.util.concurrent.TimeUnit.MILLISECONDS);
        } catch (java.util.concurrent.ExecutionException e) {
            if (e.getCause() instanceof Exception x) {
                throw x;
            }
            throw e;
        }
    }

    /** Runs {@code r} after {@code delayMillis}. Loop thread only. */
    public Timer schedule(long delayMillis, Runnable r) {
        return schedule(delayMillis, r, null);
    }

    /** As {@link #schedule(long, Runnable)}, held while {@code group} (null: none) is paused. */
    public Timer schedule(long delayMillis, Runnable r, Group group) {
        if (cancelledTimers > 64 && cancelledTimers > timers.size() / 2) {
            timers.removeIf(x -> x.cancelled); // O(n) once per n/2 cancels: amortized O(1) per cancel
            cancelledTimers = 0;
        }
        Timer t = new Timer(System.nanoTime() + delayMillis * 1_000_000L, r, timerSeq++, group, this);
        timers.add(t);
        return t;
    }

    public boolean inLoop() {
        return Thread.currentThread() == thread;
    }

    /** True once a thread has run this loop ({@link #run} or {@link #doWork}). Any thread. */
    public boolean started() {
        return thread != null;
    }

    /** The thread running this loop, or null before it started. */
    public Thread thread() {
        return thread;
    }

    /** One duty cycle; waits at most {@code maxWaitMs} for events. Returns the work done. */
    public int doWork(int maxWaitMs) throws NativeIoException {
        thread = Thread.currentThread();
        int work = runPosted();
        if (pendingCount > 0) {
            work += deliverPending();
        }
        long now = System.nanoTime();
        work += fireTimers(now);
        int wait = maxWaitMs;
        Timer next = timers.peek();
        if (next != null) {
            wait = (int) Math.max(0, Math.min(wait, (next.deadlineNanos - now + 999_999) / 1_000_000));
        }
        if (work > 0 || dutiesPending || !posted.isEmpty()) {
            wait = 0;
        }
        int n = epoll.await(wait);
        for (int i = 0; i < n; i++) {
            long data = epoll.data(i);
            if (data == Epoll.WAKEUP) {
                epoll.drainWakeup();
                continue;
            }
            int slot = (int) data;
            Handler h = handler(slot); // null: unregistered earlier in this batch
            if (h != null && !heldWhilePaused(slot, epoll.events(i))) {
                deliver(h, epoll.events(i));
                work++;
            }
        }
        work += runDuties();
        return work;
    }

    private int runDuties() {
        boolean pending = false;
        for (Duty d : duties) {
            try {
                pending |= d.run();
            } catch (Throwable t) {
                errorSink.accept(t);
            }
        }
        dutiesPending = pending;
        return pending ? 1 : 0;
    }

    /**
     * Tasks posted from other threads run per cycle at most this many: other threads (N loops,
     * the control loop's gathering, a flood of cross-loop work) cannot keep a loop from its fds
     * and timers. The rest run in the next cycle, which then does not wait in epoll.
     */
    static final int POSTED_PER_CYCLE = 1024;

    private int runPosted() {
        int n = 0;
        Runnable r;
        while (n < POSTED_PER_CYCLE && (r = posted.poll()) != null) {
            try {
                r.run();
            } catch (Throwable t) {
                errorSink.accept(t);
            }
            n++;
        }
        return n;
    }

    private int fireTimers(long now) {
        int n = 0;
        while (!timers.isEmpty() && timers.peek().deadlineNanos <= now) {
            Timer t = timers.poll();
            if (t.cancelled) {
                cancelledTimers = Math.max(0, cancelledTimers - 1); // a held timer may come back cancelled after a purge
                continue;
            }
            if (t.group != null && t.group.paused) {
                t.group.heldTimers.add(t);
                continue;
            }
            try {
                t.action.run();
            } catch (Throwable e) {
                errorSink.accept(e);
            }
            n++;
        }
        return n;
    }

    /**
     * Takes the readiness reported so far while this loop is not running yet (a successor's
     * pre-copy, main thread): events of paused groups are held as the loop would hold them (and
     * EPOLLOUT-only ones of groups that drop them, dropped), anything else is kept for the first
     * cycle, which delivers it before it polls. Bounded: at most {@code maxRounds} epoll_wait(0)
     * calls. Returns the number of events taken; 0 and nothing done once the loop has run a cycle.
     */
    public int drainWhileStopped(int maxRounds) throws NativeIoException {
        if (thread != null) {
            return 0; // it has run cycles (its own epoll buffer may be in use): its events are its own
        }
        int taken = 0;
        for (int round = 0; round < maxRounds; round++) {
            int n = epoll.await(0);
            if (n == 0) {
                break;
            }
            for (int i = 0; i < n; i++) {
                long data = epoll.data(i);
                if (data == Epoll.WAKEUP) {
                    epoll.drainWakeup();
                    epoll.wakeup(); // still news for the first cycle
                    continue;
                }
                int slot = (int) data;
                if (handler(slot) == null) {
                    continue;
                }
                taken++;
                if (!heldWhilePaused(slot, epoll.events(i))) {
                    if (pendingCount == pendingSlots.length) {
                        pendingSlots = java.util.Arrays.copyOf(pendingSlots, pendingCount * 2);
                        pendingEvents = java.util.Arrays.copyOf(pendingEvents, pendingCount * 2);
                    }
                    pendingSlots[pendingCount] = slot;
                    pendingEvents[pendingCount++] = epoll.events(i);
                }
            }
            if (n < epollCapacity) {
                break;
            }
        }
        return taken;
    }

    private static final int EPOLL_CAPACITY = 256;
    private final int epollCapacity = EPOLL_CAPACITY;

    /** Events {@link #drainWhileStopped} took for registrations it could not hold: the first cycle's. */
    private int[] pendingSlots = new int[16];
    private int[] pendingEvents = new int[16];
    private int pendingCount;

    private int deliverPending() {
        int n = pendingCount;
        for (int i = 0; i < n; i++) { // pendingCount stays until the end: an unregister meanwhile still clears its entries
            int slot = pendingSlots[i];
            int ev = pendingEvents[i];
            Handler h = handler(slot);
            if (h == null || ev == 0) { // 0: its registration ended meanwhile
                continue;
            }
            pendingEvents[i] = 0;
            if (!heldWhilePaused(slot, ev)) {
                deliver(h, ev);
            }
        }
        pendingCount = 0;
        return n;
    }

    /** The handler registered at {@code slot}, or null (none, or unregistered since). */
    private Handler handler(int slot) {
        return slot < handlers.length ? handlers[slot] : null;
    }

    /** True if {@code slot}'s group is paused: its events are held by the group (or dropped, {@link Group#hold}). */
    private boolean heldWhilePaused(int slot, int events) {
        Group g = slotGroups[slot];
        if (g != null && g.paused) {
            g.hold(slot, events);
            return true;
        }
        return false;
    }

    private void deliver(Handler h, int events) {
        try {
            h.onEvents(events);
        } catch (Throwable t) {
            errorSink.accept(t);
        }
    }

    /** Runs cycles on the calling thread until {@link #stop()}. */
    public void run() throws NativeIoException {
        thread = Thread.currentThread();
        while (running) {
            doWork(1000);
        }
        for (int i = 0; i < 64 && runPosted() == POSTED_PER_CYCLE; i++) {
            // what was posted before the stop, in budgets
        }
    }

    /** Makes {@link #run()} return after the current cycle. Any thread. */
    public void stop() {
        running = false;
        epoll.wakeup();
    }

    public boolean isRunning() {
        return running;
    }

    public int registrations() {
        return used - freeCount;
    }

    @Override
    public void close() {
        epoll.close();
    }
}
