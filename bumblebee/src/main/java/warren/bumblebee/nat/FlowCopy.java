package warren.bumblebee.nat;

import warren.handoff.v1.FlowCopyKey;

/**
 * A flow's pre-copy record (handoff protocol 2, docs/upgrade.md "Pre-copy"), kept in the
 * {@link Flow} itself. The key of a copy is its slot and the slot's {@link Flow#generation}
 * (bumped at every claim). So that the pause visits only what changed (issue 16), the old side
 * lists, per loop, the flows the delta may name ({@link FlowStore#changed}, intrusive through
 * {@link Flow#nextChanged}): a copy joins at its first change after its copy ({@link #moved}: one
 * field check, {@link Flow#watch}, where a packet is counted, a FIN seen or the state moves, no
 * allocation), a flow joins when it begins while the loop copies (RESERVED), and a downgrade still
 * connecting joins when the copy begins. The pause compares only the listed flows, in slot order,
 * as it compared every slot before ({@link FlowTableCodec#writeDelta}: the same delta).
 *
 * <pre>
 * old process:  not copied --copy (record)--> copied --pause--> one of:
 *                 the slot FREE or its generation moved on  -> the key ended (+ the new flow whole)
 *                 state, packet counts or FIN flags moved   -> an update (no socket the copy had)
 *                 nothing moved                              -> nothing in the pause
 *               any --forget (pre-copy given up, handoff failed)--> not copied
 * successor:    FREE --placed from a chunk--> copied (key slot, copiedGen) [its call and task tied
 *                 now if its call was pre-copied] --delta--> ended: FREE, its duplicates closed |
 *                 updated (not copied) | as it was (the mark stays: the pause does not visit it;
 *                 this process's own first pre-copy clears every mark before it copies)
 * </pre>
 * Counts stand for everything that moves with a packet (bytes, last activity, the key of a flow's
 * first packet); a state change for the rest (RESERVED -> ACTIVE: a UDP flow's datagram socket,
 * QUARANTINED: its sockets closed). A downgrade still connecting (inner connection, handed-in
 * socket) is never copied: it goes whole in the pause. Loop thread of the flow's owner.
 */
final class FlowCopy {
    private FlowCopy() {}

    /** True if the pre-copy takes {@code f} now: a slot in use, not copied yet, no downgrade still connecting. */
    static boolean wanted(Flow f) {
        return f.state != Flow.FREE && !f.copied && f.innerFd < 0 && f.socket == null;
    }

    /** Notes what the copy of {@code f} carried, to compare at the pause. */
    static void record(Flow f) {
        f.copied = true;
        f.copiedGen = f.generation;
        f.copiedState = f.state;
        f.copiedPacketsIn = f.packetsIn;
        f.copiedPacketsOut = f.packetsOut;
        f.copiedFinFromFlow = f.finFromFlow;
        f.copiedFinFromKernel = f.finFromKernel;
        f.copiedUdp = f.udpFd >= 0;
        f.watch = !f.listed; // a listed flow is compared at the pause anyway
    }

    /**
     * The flow moved (a packet counted, a FIN seen, its state changed): a watched copy joins its
     * loop's changed list. Hot path: one field check, nothing allocated. Loop thread of the owner.
     */
    static void moved(Flow f) {
        if (f.watch) {
            f.life.store.changed(f);
        }
    }

    /** True if the copied flow is gone: its slot freed, or claimed again since. */
    static boolean ended(Flow f) {
        return f.copied && (f.state == Flow.FREE || f.generation != f.copiedGen);
    }

    /** True if the copied (not ended) flow moved since its copy: the pause sends an update. */
    static boolean changed(Flow f) {
        return f.state != f.copiedState || f.packetsIn != f.copiedPacketsIn || f.packetsOut != f.copiedPacketsOut
                || f.finFromFlow != f.copiedFinFromFlow || f.finFromKernel != f.copiedFinFromKernel;
    }

    /** Forgets the copy (old process: given up; successor: adopted). */
    static void forget(Flow f) {
        f.copied = false;
        f.watch = false;
        f.listed = false;
        f.nextChanged = null;
    }

    /** The key of the copy of {@code f}. */
    static FlowCopyKey key(Flow f) {
        return FlowCopyKey.newBuilder().setSlot(f.slot).setGeneration(f.copiedGen).build();
    }
}
