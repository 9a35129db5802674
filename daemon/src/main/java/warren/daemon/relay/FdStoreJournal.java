package warren.daemon.relay;

import java.util.ArrayList;
import java.util.List;
import warren.daemon.FdStoreNames;
import warren.daemon.Log;
import warren.daemon.PairBook;
import warren.daemon.task.TaskRegistry;
import warren.fdpass.Fd;
import warren.handoff.v1.StoredPair;
import warren.systemd.SdNotify;

/**
 * Keeps each live pair in systemd's fd store (fdstore.proto): at start its two sockets and the read
 * ends of its two pinned pipes (a recovery reopens the write ends), 4 fds under the name of a slot
 * of the daemon's {@link PairBook}, whose slot holds the pair's description ({@link RelayStore});
 * without a book (Bumblebee's downgrades), or with a description too long for a slot, the 4 fds
 * and a sealed memfd describing it under {@code p<task>} ({@link FdStoreNames#pair}). Removed by
 * the control loop right after its answer is queued, in the same step ({@link #ending}); the slot
 * is free again once the removal is sent. After a crash systemd hands them back and the daemon
 * resumes the pair with whatever its pipes held. One sd_notify per pair start and end (and one
 * pwrite into the book); nothing per byte.
 */
public final class FdStoreJournal implements Relay.Journal {
    private final SdNotify notify;
    private final Relay relay;
    private final String item;
    private final java.util.concurrent.Executor removeOn;
    private final PairBook book;
    /** A {@code p<task>} entry: two sockets, its two pinned pipes' read ends, its description. */
    static final int FDS_PER_PAIR = 5;
    private static final Log.Limited NOT_STORED = Log.every("fdstore.pair_not_stored");

    public FdStoreJournal(SdNotify notify, Relay relay, String item) {
        this(notify, relay, item, Runnable::run, null);
    }

    /**
     * For a relay on another loop than the control loop: a pair's entry is removed through
     * {@code removeOn} (the control loop's execute), which runs it after the pair's answer, posted
     * there before, has been queued: a crash in between recovers the pair, never loses it.
     */
    public FdStoreJournal(SdNotify notify, Relay relay, String item, java.util.concurrent.Executor removeOn) {
        this(notify, relay, item, removeOn, null);
    }

    /** With {@code book} (the daemon's, shared by its relays; null: every pair as {@code p<task>}). */
    public FdStoreJournal(SdNotify notify, Relay relay, String item, java.util.concurrent.Executor removeOn,
            PairBook book) {
        this.notify = notify;
        this.relay = relay;
        this.item = item;
        this.removeOn = removeOn;
        this.book = book;
    }

    @Override
    public void started(Pair p) {
        TaskRegistry.Record r = p.call.task();
        List<Fd> fds = new ArrayList<>(6);
        int slot = -1;
        try {
            StoredPair sp = RelayStore.describe(relay, p, item, fds);
            byte[] description = sp.toByteArray();
            boolean slotted = book != null && fds.size() == PairBook.FDS_PER_PAIR
                    && description.length <= PairBook.MAX_DESCRIPTION;
            if (slotted) {
                slot = book.claim(); // counted by the budget from here
            }
            String refused = p.call.fdStoreRefusal(FDS_PER_PAIR);
            if (refused != null) {
                NOT_STORED.warn("fd store: pair of task " + r.number() + " not stored: " + refused
                        + "; it runs, and a crash would end it (docs/systemd.md, \"Size the store\")");
                return;
            }
            if (slotted) {
                // the description first: a crash between the two leaves a slot nobody's fds name
                if (book.write(slot, description, notify) && notify.fdStore(FdStoreNames.slot(slot), fds)) {
                    p.storeSlot = slot;
                    slot = -1;
                    return;
                }
                NOT_STORED.warn("fd store: pair of task " + r.number() + " not stored (the notify socket refused the"
                        + " pair book or its fds); it runs, and a crash would end it");
                return;
            }
            if (!warren.daemon.TaskStore.putDescribed(notify, FdStoreNames.pair(r.number()), fds, description)) {
                NOT_STORED.warn("fd store: pair of task " + r.number() + " not stored (the notify socket refused it);"
                        + " it runs, and a crash would end it");
            }
        } catch (Exception e) {
            NOT_STORED.warn("fd store: cannot store the pair of task " + r.number() + ": " + e.getMessage()
                    + "; it runs, and a crash would end it");
        } finally {
            if (slot >= 0) {
                book.release(slot); // claimed, not stored
            }
        }
    }

    /** The pair's entry's name: its slot's, or {@code p<task>}. */
    private static String name(Pair p, long task) {
        return p.storeSlot >= 0 ? FdStoreNames.slot(p.storeSlot) : FdStoreNames.pair(task);
    }

    /**
     * Removes the pair's entry, then frees its slot (a later store under that name comes after the
     * removal). A removal that could not be sent keeps the slot: a later pair stored under its name
     * would join the stale entry, and the recovery drop both.
     */
    private void remove(Pair p, long task) {
        boolean sent = notify.fdStoreRemove(name(p, task));
        if (p.storeSlot >= 0 && book != null) {
            if (sent) {
                book.release(p.storeSlot);
            } else {
                NOT_STORED.warn("fd store: the entry " + name(p, task) + " of task " + task + " could not be removed"
                        + " (the notify socket refused it); its slot stays taken");
            }
        }
    }

    @Override
    public void adopted(Pair p) {
        if (p.storeSlot >= 0 && book != null) {
            book.mark(p.storeSlot);
        }
    }

    @Override
    public void copyDropped(Pair p) {
        if (p.storeSlot >= 0 && book != null) {
            book.release(p.storeSlot); // the predecessor removed its entry
        }
    }

    /**
     * The entry's removal rides on the answer: the control loop sends it right after it queues
     * the answer, in the same step. Posted apart (as it was for pairs on other loops), the answer
     * could go out first and the requester hand the same sockets back in a new request, handled
     * before the removal; systemd keeps one copy of a file whatever its names and drops a
     * duplicate, so the new pair's entry would have lacked those sockets and the late removal
     * taken them (the same loss as a pooled pinned pipe, see Relay's finish).
     */
    @Override
    public void ending(Pair p) {
        long task = p.taskNumber();
        if (task != 0 && p.call.afterFinalAnswer(() -> remove(p, task))) {
            p.removalOnAnswer = true;
        }
    }

    @Override
    public void ended(Pair p) {
        long task = p.taskNumber();
        if (task != 0 && !p.removalOnAnswer) {
            // answered before its end (a task kept past its answer: Bumblebee's downgrades): after
            // whatever the ending posted to the control loop
            removeOn.execute(() -> remove(p, task));
        }
    }
}
