package warren.bumblebee.nat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import warren.bumblebee.env.Environment;
import warren.daemon.handoff.HandoffItem;
import warren.daemon.loop.EventLoop;
import warren.daemon.metrics.Counters;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.handoff.v1.BumblebeeState;
import warren.handoff.v1.FlowCopyKey;
import warren.handoff.v1.FlowState;
import warren.handoff.v1.RelayState;

/**
 * Bumblebee's pre-copy at the codec level ({@link FlowCopy}, {@link FlowTableCodec#copy},
 * {@link FlowTableCodec#writeDelta}, {@link FlowTableCodec#checkCopy}): an old table copied while
 * its flows start, end, reuse a slot and stream; the delta carries exactly what changed (ended
 * keys, updates without the sockets already copied, flows begun since whole), a successor's
 * table holding the copies takes it, and every malformed chunk or delta is refused before
 * anything is taken. The successor's placement here is {@link Nat#preAdopt}'s without the
 * registrations (a Nat needs a namespace: BumblebeePreCopyTest runs that with real processes).
 */
class FlowCopyTest {
    private static final int SLOTS = 16;
    private final List<Fd> open = new ArrayList<>();

    @AfterEach
    void closeAll() {
        Fd.closeAll(open);
    }

    /** One end of a new datagram socketpair (the other kept open by the test), as a flow's socket. */
    private int socket() throws Exception {
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_DGRAM | Native.SOCK_CLOEXEC);
        open.add(Fd.adopt(sv[0]));
        open.add(Fd.adopt(sv[1]));
        return sv[0];
    }

    private static Flow[] table() {
        return SlotTable.table(SLOTS);
    }

    /** A claimed slot (generation bumped, as SlotTable.claim does) in {@code state}, with a flow socket. */
    private Flow start(Flow[] t, int slot, int state) throws Exception {
        Flow f = t[slot];
        f.generation++;
        f.state = state;
        f.flowFd = socket();
        f.haveKey = false;
        f.packetsIn = f.packetsOut = f.bytesIn = f.bytesOut = 0;
        f.finFromFlow = f.finFromKernel = false;
        f.udp = false;
        f.udpFd = -1;
        return f;
    }

    /** The old process's end of a flow, fds-wise: its sockets are its own (closed by the test), QUARANTINED. */
    private static void end(Flow f) {
        f.flowFd = -1;
        f.udpFd = -1;
        f.state = Flow.QUARANTINED;
    }

    private record Chunk(BumblebeeState state, List<Fd> fds) {}

    /** A pre-copy chunk of every flow {@link FlowCopy#wanted} in {@code t}, its duplicates owned by the chunk. */
    private Chunk copy(Flow[] t) throws Exception {
        List<Fd> dups = new ArrayList<>();
        BumblebeeState.Builder b = BumblebeeState.newBuilder().setFormat(FlowTableCodec.FORMAT).setSlots(SLOTS).setMtu(1500)
                .setPreCopy(true);
        for (Flow f : t) {
            if (FlowCopy.wanted(f)) {
                b.addFlows(FlowTableCodec.copy(f, System.nanoTime(), dups, c -> 0));
            }
        }
        open.addAll(dups);
        return new Chunk(b.build(), dups);
    }

    /** Nat.preAdopt's placement, without registering: checked, then each flow held as a copy. */
    private static void place(Flow[] succ, Chunk c) {
        FlowTableCodec.checkCopy(c.state(), c.fds(), succ, true);
        for (FlowState s : c.state().getFlowsList()) {
            Flow f = succ[s.getSlot()];
            FlowTableCodec.readOne(s, c.fds(), 0, f);
            f.copied = true;
            f.copiedGen = s.getGeneration();
        }
    }

    private static BumblebeeState delta(Flow[] old, List<Integer> raw) {
        return FlowTableCodec.writeDelta(old, SLOTS, 1500, System.nanoTime(), raw, c -> 0);
    }

    private static List<Fd> views(List<Integer> raw) {
        List<Fd> fds = new ArrayList<>();
        for (int fd : raw) {
            fds.add(Fd.adopt(fd)); // views of the old table's fds (the test closes those)
        }
        return fds;
    }

    @Test
    void theDeltaCarriesOnlyWhatChangedDuringTheCopy() throws Exception {
        Flow[] old = table();
        Flow idle = start(old, 1, Flow.ACTIVE);
        Flow ending = start(old, 2, Flow.ACTIVE);
        Flow udp = start(old, 3, Flow.RESERVED); // its first datagram comes during the copy
        Flow streaming = start(old, 4, Flow.ACTIVE);
        Flow reused = start(old, 5, Flow.QUARANTINED);
        reused.flowFd = -1;
        Flow freed = start(old, 6, Flow.QUARANTINED);
        freed.flowFd = -1;
        Flow connecting = start(old, 7, Flow.RESERVED); // a downgrade still connecting: never copied
        connecting.downgrade = true;
        connecting.innerFd = socket();

        Chunk chunk = copy(old);
        assertEquals(6, chunk.state().getFlowsCount(), "every slot in use but the connecting downgrade");
        assertEquals(4, chunk.fds().size(), "a duplicate of each live flow's socket");
        assertTrue(chunk.fds().stream().allMatch(Fd::isOpen));
        assertFalse(FlowCopy.wanted(idle), "copied once");
        assertTrue(chunk.state().getFlows(0).getGeneration() == idle.generation);

        Flow[] succ = table();
        place(succ, chunk);
        assertThrows(IllegalArgumentException.class, () -> place(succ, chunk), "the same flows copied twice");

        // meanwhile, in the old process
        end(ending);
        udp.state = Flow.ACTIVE;
        udp.udp = true;
        udp.udpFd = socket();
        udp.packetsIn = 1;
        streaming.packetsIn += 40;
        streaming.packetsOut += 40;
        streaming.bytesIn += 4000;
        reused.state = Flow.FREE;
        start(old, 5, Flow.RESERVED); // claimed again: a new generation
        freed.state = Flow.FREE;
        Flow begun = start(old, 8, Flow.RESERVED);

        List<Integer> raw = new ArrayList<>();
        BumblebeeState d = delta(old, raw);
        assertTrue(d.getDelta() && !d.hasFdNetns() && !d.hasFdTun());
        assertEquals(List.of(key(5, 1), key(6, 1)), d.getEndedList(), "the freed slot and the reused one's first flow");
        List<Integer> slots = new ArrayList<>();
        for (FlowState s : d.getFlowsList()) {
            slots.add(s.getSlot());
        }
        assertEquals(List.of(2, 3, 4, 5, 7, 8), slots, "no idle flow: updates 2, 3, 4; whole 5 (reused), 7, 8");
        assertTrue(d.getFlows(0).getUpdate() && !d.getFlows(0).hasFdFlow(), "an ended flow's update has no socket");
        assertTrue(d.getFlows(1).getUpdate() && d.getFlows(1).hasFdUdp() && !d.getFlows(1).hasFdFlow(),
                "the UDP flow's update brings only the datagram socket it gained");
        assertEquals(40, d.getFlows(2).getPacketsIn(), "the streaming flow's counts");
        assertFalse(d.getFlows(3).getUpdate(), "the reused slot's new flow is whole");
        assertEquals(List.of(udp.udpFd, old[5].flowFd, connecting.innerFd, connecting.flowFd, begun.flowFd), raw,
                "the pause's fds: the new datagram socket, the flows begun since, the connecting downgrade's");

        // the successor takes it
        List<Fd> fds = views(raw);
        FlowTableCodec.checkCopy(d, fds, succ, false);
        for (FlowCopyKey k : d.getEndedList()) {
            Flow f = succ[k.getSlot()];
            f.state = Flow.FREE;
            f.copied = false;
        }
        for (FlowState s : d.getFlowsList()) {
            if (s.getUpdate()) {
                FlowTableCodec.applyUpdate(s, fds, 0, succ[s.getSlot()]);
            } else {
                FlowTableCodec.readOne(s, fds, 0, succ[s.getSlot()]);
            }
        }
        assertEquals(Flow.QUARANTINED, succ[2].state);
        assertEquals(Flow.ACTIVE, succ[3].state);
        assertTrue(succ[3].udpFd >= 0 && succ[3].udp);
        assertEquals(40, succ[4].packetsIn);
        assertEquals(4000, succ[4].bytesIn);
        assertEquals(Flow.RESERVED, succ[5].state);
        assertEquals(Flow.FREE, succ[6].state);
        assertEquals(Flow.ACTIVE, succ[1].state, "the idle copy as it was");
        assertTrue(succ[1].flowFd >= 0);

        // the old process forgets (a failed handoff): the next export is whole again
        for (Flow f : old) {
            FlowCopy.forget(f);
        }
        assertTrue(FlowCopy.wanted(idle));
    }

    /**
     * The old side's pause is O(changed) (issue 16): {@link FlowStore#delta} writes only the flows
     * on its loop's changed list, yet the very delta that comparing every slot writes. Seeded
     * random tables are pre-copied in chunks while flows begin (also downgrades still connecting),
     * get packets and FINs, activate (a UDP flow gains its datagram socket), end, leave the
     * quarantine and claim their slot again, each change made as the NAT makes it (the same
     * {@link FlowCopy#moved} before it, {@link FlowStore#begun} at RESERVED); at the pause the
     * list's delta equals the scan's byte for byte (and its fds), and it visited no more flows
     * than changed. Paused before the pre-copy went over every slot, it compares every slot.
     */
    @Test
    void theChangedListsDeltaIsTheDeltaOfComparingEverySlot() throws Exception {
        EventLoop loop = new EventLoop(16, t -> { throw new AssertionError(t); });
        Environment env = Environment.detached(1500, SLOTS);
        try {
            for (long seed = 1; seed <= 300; seed++) {
                java.util.Random r = new java.util.Random(seed);
                EventLoop.Group group = loop.group("seed-" + seed);
                SlotTable slots = new SlotTable(loop, group, SLOTS, 1500, 1_000);
                FlowStore store = new FlowStore(env);
                new Lifecycle(loop, group, new Nat.Settings(1_000, 1_000, 1_000, 1_000), slots,
                        new NatCounters(new Counters()), store); // each flow's life.store: the changed list's owner
                Flow[] t = slots.all();
                for (Flow f : t) {
                    if (r.nextInt(2) == 0) {
                        begin(store, f, r, false);
                        if (r.nextInt(3) == 0) {
                            f.state = r.nextBoolean() ? Flow.ACTIVE : Flow.QUARANTINED;
                            f.flowFd = f.state == Flow.QUARANTINED ? -1 : f.flowFd;
                        }
                    }
                }
                int connecting = 0; // listed when the copy begins
                for (Flow f : t) {
                    connecting += f.state != Flow.FREE && f.innerFd >= 0 ? 1 : 0;
                }
                boolean complete = r.nextInt(5) != 0; // else the pause comes before the pre-copy went over every slot
                int changes = 0;
                boolean copied = false;
                int ops = 0;
                while (ops < 40 || (complete && !copied)) {
                    if (r.nextInt(3) == 0) {
                        List<HandoffItem> chunk = store.preCopy("t", t, c -> 0, 2 + r.nextInt(6), false);
                        for (HandoffItem it : chunk) {
                            Fd.closeAll(it.fds());
                        }
                        copied = chunk.isEmpty();
                    } else {
                        changes += step(store, t[r.nextInt(SLOTS)], r) ? 1 : 0;
                        ops++;
                    }
                    if (!complete && ops >= 40) {
                        break;
                    }
                }
                long now = System.nanoTime();
                List<Integer> listRaw = new ArrayList<>();
                List<Integer> scanRaw = new ArrayList<>();
                BumblebeeState byList = store.delta(t, now, listRaw, c -> 0);
                BumblebeeState byScan = FlowTableCodec.writeDelta(t, SLOTS, 1500, now, scanRaw, c -> 0);
                assertEquals(byScan, byList, "seed " + seed);
                assertEquals(scanRaw, listRaw, "seed " + seed + ": the same fds in the same order");
                if (store.allCopied()) {
                    assertTrue(store.exportVisits() <= changes + connecting, "seed " + seed + ": "
                            + store.exportVisits() + " flows visited for " + changes + " changes");
                } else {
                    assertEquals(SLOTS, store.exportVisits(), "seed " + seed + ": every slot compared");
                }
                if (copied) {
                    assertTrue(store.allCopied(), "seed " + seed);
                }
                store.forgetCopy(t);
                Fd.closeAll(open);
                open.clear();
            }
        } finally {
            env.close();
            loop.close();
        }
    }

    /** A flow begins in {@code f} (FREE) as SlotTable.claim and TcpUpgrade/Downgrade make it: RESERVED, listed while copying. */
    private void begin(FlowStore store, Flow f, java.util.Random r, boolean hook) throws Exception {
        f.generation++;
        f.haveKey = false;
        f.packetsIn = f.packetsOut = f.bytesIn = f.bytesOut = 0;
        f.finFromFlow = f.finFromKernel = false;
        f.udp = false;
        f.udpFd = -1;
        f.downgrade = r.nextInt(5) == 0;
        f.innerFd = f.downgrade && r.nextBoolean() ? socket() : -1; // still connecting: never copied
        f.lastActiveNanos = System.nanoTime() + 3_600_000_000_000L; // idle_ms 0 in both deltas
        f.flowFd = socket();
        f.state = Flow.RESERVED;
        if (hook) {
            store.begun(f);
        }
    }

    /** One change to {@code f} as the NAT makes it (FlowCopy.moved first); true if it changed anything. */
    private boolean step(FlowStore store, Flow f, java.util.Random r) throws Exception {
        switch (f.state) {
            case Flow.FREE:
                if (r.nextInt(2) == 0) {
                    begin(store, f, r, true);
                    return true;
                }
                return false;
            case Flow.QUARANTINED:
                if (r.nextInt(2) == 0) {
                    FlowCopy.moved(f); // SlotTable's quarantine timer
                    f.state = Flow.FREE;
                    return true;
                }
                return false;
            default:
                break;
        }
        switch (r.nextInt(6)) {
            case 0: // a packet either way (Lifecycle.forwarded, FlowPath, UdpUpgrade)
                FlowCopy.moved(f);
                if (r.nextBoolean()) {
                    f.packetsIn++;
                } else {
                    f.packetsOut++;
                }
                return true;
            case 1: // a FIN (Lifecycle.forwarded)
                FlowCopy.moved(f);
                f.finFromKernel = true;
                return true;
            case 2: // RESERVED -> ACTIVE (Lifecycle.activate, Downgrade's inner connection)
                if (f.state != Flow.RESERVED) {
                    return false;
                }
                FlowCopy.moved(f);
                f.state = Flow.ACTIVE;
                f.innerFd = -1; // a downgrade's inner connection goes to its relay
                if (!f.downgrade && r.nextBoolean()) {
                    f.udp = true;
                    f.udpFd = socket();
                }
                return true;
            case 3: // the end (Lifecycle.end): QUARANTINED, its sockets closed
                FlowCopy.moved(f);
                f.flowFd = -1;
                f.udpFd = -1;
                f.innerFd = -1;
                f.state = Flow.QUARANTINED;
                return true;
            default: // idle
                return false;
        }
    }

    @Test
    void aDeltaThatDoesNotMatchTheCopiesIsRefusedBeforeAnythingIsTaken() throws Exception {
        Flow[] old = table();
        start(old, 1, Flow.ACTIVE);
        Flow q = start(old, 2, Flow.QUARANTINED);
        q.flowFd = -1;
        Flow[] succ = table();
        place(succ, copy(old));
        int gen1 = succ[1].copiedGen;
        int extra = socket();
        List<Fd> fds = List.of(Fd.adopt(extra));
        BumblebeeState base = BumblebeeState.newBuilder().setFormat(FlowTableCodec.FORMAT).setSlots(SLOTS).setMtu(1500)
                .setDelta(true).build();
        FlowState update1 = FlowState.newBuilder().setSlot(1).setGeneration(gen1).setUpdate(true)
                .setStateValue(Flow.ACTIVE).build();
        refused(succ, base.toBuilder().addEnded(key(1, gen1 + 1)).build(), fds, "an ended key never copied");
        refused(succ, base.toBuilder().addEnded(key(9, 0)).build(), fds, "an ended key of a free slot");
        refused(succ, base.toBuilder().addEnded(key(1, gen1)).addEnded(key(1, gen1)).build(), fds, "ended twice");
        refused(succ, base.toBuilder().addEnded(key(SLOTS + 3, 1)).build(), fds, "a slot out of the table");
        refused(succ, base.toBuilder().addFlows(update1.toBuilder().setGeneration(gen1 + 1)).build(), fds,
                "an update of an unknown key");
        refused(succ, base.toBuilder().addEnded(key(1, gen1)).addFlows(update1).build(), fds, "ended and updated");
        refused(succ, base.toBuilder().addFlows(update1.toBuilder().setFdFlow(0)).build(), fds,
                "an update bringing a flow socket the copy has");
        refused(succ, base.toBuilder().addFlows(FlowState.newBuilder().setSlot(2).setGeneration(succ[2].copiedGen)
                .setUpdate(true).setStateValue(Flow.ACTIVE)).build(), fds, "a quarantined copy live again");
        refused(succ, base.toBuilder().addFlows(update1.toBuilder().setUdp(true)).build(), fds,
                "an active UDP flow without its datagram socket");
        refused(succ, base.toBuilder().addFlows(FlowState.newBuilder().setSlot(1).setStateValue(Flow.ACTIVE)
                .setFdFlow(0)).build(), fds, "a whole flow into a slot whose copy did not end");
        refused(succ, base.toBuilder().setDelta(false).build(), fds, "a full table after a pre-copy");
        refused(succ, base.toBuilder().setFdNetns(0).build(), fds, "a delta with the environment");
        refused(succ, base.toBuilder().addFlows(FlowState.newBuilder().setSlot(9).setStateValue(Flow.ACTIVE)
                .setFdFlow(1)).build(), fds, "an fd index out of range");
        // accepted: the same shapes done right
        FlowTableCodec.checkCopy(base.toBuilder().addEnded(key(1, gen1)).addFlows(FlowState.newBuilder().setSlot(1)
                .setStateValue(Flow.RESERVED).setFdFlow(0)).build(), fds, succ, false);
        assertTrue(fds.get(0).isOpen(), "checking takes nothing");
        // a chunk: no keys ended, no updates, into free slots only
        BumblebeeState chunk = BumblebeeState.newBuilder().setFormat(FlowTableCodec.FORMAT).setSlots(SLOTS).setMtu(1500)
                .setPreCopy(true).build();
        refused(succ, chunk, fds, true, "a chunk into no flows is fine", false);
        refused(succ, chunk.toBuilder().addEnded(key(1, gen1)).build(), fds, true, "a chunk that ends a key", true);
        refused(succ, chunk.toBuilder().addFlows(update1).build(), fds, true, "a chunk with an update", true);
        refused(succ, chunk.toBuilder().addFlows(FlowState.newBuilder().setSlot(3).setStateValue(Flow.RESERVED)
                .setDowngrade(true).setFdFlow(0)).build(), fds, true, "fine: a downgrade without its connecting sockets", false);
        refused(succ, chunk.toBuilder().setPreCopy(false).build(), fds, true, "a chunk without pre_copy", true);
    }

    @Test
    void theLoopsDeltasAreMergedAndEveryFlowLeftLiveNeedsItsCall() throws Exception {
        BumblebeeState loop0 = BumblebeeState.newBuilder().setFormat(FlowTableCodec.FORMAT).setSlots(SLOTS).setMtu(1500)
                .setDelta(true).addEnded(key(1, 1))
                .addFlows(FlowState.newBuilder().setSlot(3).setStateValue(Flow.ACTIVE).setFdFlow(0).setCallRef(7)).build();
        BumblebeeState loop1 = loop0.toBuilder().clearEnded().clearFlows().addEnded(key(2, 4))
                .addFlows(FlowState.newBuilder().setSlot(4).setStateValue(Flow.ACTIVE).setFdFlow(0).setCallRef(8)).build();
        List<Fd> a = List.of(Fd.adopt(socket()));
        List<Fd> b = List.of(Fd.adopt(socket()));
        HandoffItem r = new HandoffItem(FlowStore.RELAY_ITEM, RelayState.newBuilder().setFormat(1).build().toByteArray(),
                List.of());
        FlowStore.Delta d = FlowStore.delta(List.of(new HandoffItem(FlowStore.ITEM, loop0.toByteArray(), a), r,
                new HandoffItem(FlowStore.ITEM, loop1.toByteArray(), b), r), SLOTS);
        assertEquals(List.of(key(1, 1), key(2, 4)), d.state().getEndedList());
        assertEquals(1, d.state().getFlows(1).getFdFlow(), "loop 1's flow behind loop 0's fd");
        assertEquals(2, d.relayStates().size());
        assertThrows(IllegalArgumentException.class, () -> FlowStore.delta(List.of(new HandoffItem(FlowStore.ITEM,
                loop0.toBuilder().setDelta(false).build().toByteArray(), a), r), SLOTS), "a full table");
        assertThrows(IllegalArgumentException.class, () -> FlowStore.delta(List.of(new HandoffItem(FlowStore.ITEM,
                loop0.toByteArray(), a)), SLOTS), "no relay item");
        assertEquals(0, FlowStore.delta(List.of(), SLOTS).state().getFlowsCount(), "no items: nothing changed");

        Flow[] succ = table();
        succ[5].state = Flow.ACTIVE;
        succ[5].copied = true;
        succ[5].callRef = 9;
        succ[6].state = Flow.QUARANTINED; // no call needed
        succ[6].copied = true;
        BumblebeeState none = BumblebeeState.newBuilder().setFormat(FlowTableCodec.FORMAT).setSlots(SLOTS).setDelta(true)
                .build();
        List<Flow> unattached = List.of(succ[5], succ[6]); // placed, not tied in the pre-copy
        FlowStore.checkCalls(succ, none, unattached, ref -> ref == 9, c -> false);
        assertThrows(IllegalArgumentException.class, () -> FlowStore.checkCalls(succ, none, unattached, ref -> false,
                c -> false), "a pre-copied live flow whose call is gone");
        FlowStore.checkCalls(succ, none, List.of(), ref -> false, c -> false); // tied in the pre-copy: not visited
        BumblebeeState ends5 = none.toBuilder().addFlows(FlowState.newBuilder().setSlot(5).setUpdate(true)
                .setStateValue(Flow.QUARANTINED)).build();
        FlowStore.checkCalls(succ, ends5, unattached, ref -> false, c -> false); // it ended before the pause: no call due
        BumblebeeState whole = none.toBuilder().addFlows(FlowState.newBuilder().setSlot(7).setStateValue(Flow.RESERVED)
                .setCallRef(11)).build();
        assertThrows(IllegalArgumentException.class, () -> FlowStore.checkCalls(succ, whole, unattached,
                ref -> ref == 9, c -> false), "a flow begun since without its call");
    }

    private static FlowCopyKey key(int slot, int gen) {
        return FlowCopyKey.newBuilder().setSlot(slot).setGeneration(gen).build();
    }

    private static void refused(Flow[] succ, BumblebeeState st, List<Fd> fds, String why) {
        refused(succ, st, fds, false, why, true);
    }

    /** checkCopy refuses ({@code refuse}) or passes, and in both cases changes nothing. */
    private static void refused(Flow[] succ, BumblebeeState st, List<Fd> fds, boolean chunk, String why, boolean refuse) {
        String before = snapshot(succ);
        Consumer<Void> run = v -> FlowTableCodec.checkCopy(st, fds, succ, chunk);
        if (refuse) {
            assertThrows(IllegalArgumentException.class, () -> run.accept(null), why);
        } else {
            run.accept(null);
        }
        assertEquals(before, snapshot(succ), why + ": nothing changed");
        assertTrue(fds.stream().allMatch(Fd::isOpen), why + ": no fd taken");
    }

    private static String snapshot(Flow[] t) {
        StringBuilder b = new StringBuilder();
        for (Flow f : t) {
            b.append(f.state).append(f.copied).append(f.copiedGen).append(f.flowFd).append(f.udpFd).append(' ');
        }
        return b.toString();
    }
}
