package warren.daemon.handoff;

import java.util.HashSet;
import java.util.Set;
import java.util.function.LongFunction;
import java.util.function.LongPredicate;

/**
 * The keys of a pre-copy delta checked against the copies the successor holds, before anything
 * is taken or changed (one for Splicer's relay pairs, Bumblebee's flows, Fish's clients). A delta
 * may end a key only if a copy holds it, once; update a key only if a copy holds it, once, and not
 * if it also ends it. Register every ended key ({@link #ended}) before any update
 * ({@link #updated}); each refusal is an IllegalArgumentException naming the key
 * ({@code name}) and the rule. A key is a long the caller chooses (a pair's or client's key;
 * Bumblebee's slot and generation packed by the caller). Control path: a set of the ended and
 * updated keys, O(delta).
 *
 * <pre>
 *   ended(k):   held(k), not ended before        else "K ended twice or never pre-copied here"
 *   updated(k): held(k)                         else "an update of K, never pre-copied here"
 *               not ended                       else "K both ended and updated"
 *               not updated before              else "K updated twice"
 * </pre>
 */
public final class DeltaCheck {
    private final LongPredicate held;
    private final LongFunction<String> name;
    private final Set<Long> ended = new HashSet<>();
    private final Set<Long> updated = new HashSet<>();

    /**
     * {@code held} says whether the successor holds a copy of a key (false for every key where a
     * delta may end or update none, e.g. in a pre-copy chunk); {@code name} names a key in a
     * message (e.g. {@code k -> "pair key " + k}).
     */
    public DeltaCheck(LongPredicate held, LongFunction<String> name) {
        this.held = held;
        this.name = name;
    }

    /** The delta ends {@code key}: refused unless a copy holds it and it was not ended before. */
    public void ended(long key) {
        if (!held.test(key) || !ended.add(key)) {
            throw new IllegalArgumentException(name.apply(key) + " ended twice or never pre-copied here");
        }
    }

    /**
     * The delta updates {@code key}: refused unless a copy holds it, the delta does not end it
     * (its ends are registered first) and does not update it already.
     */
    public void updated(long key) {
        if (!held.test(key)) {
            throw new IllegalArgumentException("an update of " + name.apply(key) + ", never pre-copied here");
        }
        if (ended.contains(key)) {
            throw new IllegalArgumentException(name.apply(key) + " both ended and updated");
        }
        if (!updated.add(key)) {
            throw new IllegalArgumentException(name.apply(key) + " updated twice");
        }
    }

    /** Whether the delta ends {@code key} (checked by {@link #ended}). */
    public boolean isEnded(long key) {
        return ended.contains(key);
    }

    /** How many keys the delta ends. */
    public int endedCount() {
        return ended.size();
    }
}
