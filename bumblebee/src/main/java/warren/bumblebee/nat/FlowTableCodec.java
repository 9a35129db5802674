package warren.bumblebee.nat;

import java.util.List;
import warren.control.v1.FiveTuple;
import warren.daemon.handoff.DeltaCheck;
import warren.fdpass.Fd;
import warren.handoff.v1.BumblebeeState;
import warren.handoff.v1.FlowState;
import warren.packet.FlowKey;

/**
 * Writes the flow/NAT table to the handoff encoding ({@code warren.handoff.v1.BumblebeeState})
 * and reads it back. Writing borrows the flows' fds (listed in {@code fdsOut} in the order their
 * fd_* fields index); reading moves the received fds into the flows. The control path: it may
 * allocate.
 */
final class FlowTableCodec {
    static final int FORMAT = 1;

    private FlowTableCodec() {}

    static BumblebeeState write(Flow[] flows, int mtu, long nowNanos, List<Integer> fdsOut) {
        return write(flows, mtu, nowNanos, fdsOut, c -> 0);
    }

    /** As above, naming each flow's pending request with {@code callRef}. */
    static BumblebeeState write(Flow[] flows, int mtu, long nowNanos, List<Integer> fdsOut,
            java.util.function.ToLongFunction<warren.daemon.control.Call> callRef) {
        BumblebeeState.Builder b = BumblebeeState.newBuilder().setFormat(FORMAT).setSlots(flows.length).setMtu(mtu);
        for (Flow f : flows) {
            if (f.state != Flow.FREE) {
                b.addFlows(whole(f, nowNanos, fdsOut, callRef));
            }
        }
        return b.build();
    }

    /** One flow with its call ref and fds (borrowed: their numbers added to {@code fdsOut}). */
    static FlowState.Builder whole(Flow f, long nowNanos, List<Integer> fdsOut,
            java.util.function.ToLongFunction<warren.daemon.control.Call> callRef) {
        FlowState.Builder s = one(f, nowNanos);
        if (f.call != null) {
            s.setCallRef(callRef.applyAsLong(f.call));
        }
        if (f.innerFd >= 0) {
            s.setFdInner(fdsOut.size());
            fdsOut.add(f.innerFd);
        }
        if (f.socket != null) {
            s.setFdSocket(fdsOut.size());
            fdsOut.add(f.socket.get());
        }
        if (f.flowFd >= 0) {
            s.setFdFlow(fdsOut.size());
            fdsOut.add(f.flowFd);
        }
        if (f.udpFd >= 0) {
            s.setFdUdp(fdsOut.size());
            fdsOut.add(f.udpFd);
        }
        return s;
    }

    // ---- pre-copy (FlowCopy): chunks while serving, a delta at the pause

    /**
     * A pre-copy chunk's flow: whole, with its key's generation, its task named by {@code taskRef}
     * and duplicates (F_DUPFD_CLOEXEC) of its sockets added to {@code dupsOut}, which owns them:
     * the flow keeps its own fds and goes on using them. Records the copy ({@link FlowCopy#record}).
     */
    static FlowState.Builder copy(Flow f, long nowNanos, List<Fd> dupsOut,
            java.util.function.ToLongFunction<warren.daemon.control.Call> taskRef)
            throws warren.fdpass.libc.NativeIoException {
        FlowState.Builder s = one(f, nowNanos).setGeneration(f.generation);
        if (f.call != null) {
            s.setCallRef(taskRef.applyAsLong(f.call));
        }
        if (f.flowFd >= 0) {
            s.setFdFlow(dupsOut.size());
            dupsOut.add(dup(f.flowFd));
        }
        if (f.udpFd >= 0) {
            s.setFdUdp(dupsOut.size());
            dupsOut.add(dup(f.udpFd));
        }
        FlowCopy.record(f);
        return s;
    }

    static Fd dup(int fd) throws warren.fdpass.libc.NativeIoException {
        return Fd.adopt(warren.fdpass.libc.Native.fcntl(fd, warren.fdpass.libc.Native.F_DUPFD_CLOEXEC, 0));
    }

    /**
     * The paused table after a pre-copy, as a delta ({@code delta}, no environment): the keys of
     * copies that ended, an update for each copy that moved ({@link FlowCopy#changed}; no socket
     * the copy had, a datagram socket gained since), every flow not copied whole. Fds borrowed.
     * {@code flows}: every slot of a loop, or only the flows that may have moved since their copy
     * (the loop's changed list, {@link FlowStore#delta}) in slot order: the same delta, O(flows given).
     */
    static BumblebeeState writeDelta(Flow[] flows, int slots, int mtu, long nowNanos, List<Integer> fdsOut,
            java.util.function.ToLongFunction<warren.daemon.control.Call> callRef) {
        BumblebeeState.Builder b = BumblebeeState.newBuilder().setFormat(FORMAT).setSlots(slots).setMtu(mtu)
                .setDelta(true);
        for (Flow f : flows) {
            if (f.copied) {
                if (FlowCopy.ended(f)) {
                    b.addEnded(FlowCopy.key(f));
                } else {
                    if (FlowCopy.changed(f)) {
                        b.addFlows(update(f, nowNanos, fdsOut));
                    }
                    continue;
                }
            }
            if (f.state != Flow.FREE) {
                b.addFlows(whole(f, nowNanos, fdsOut, callRef));
            }
        }
        return b.build();
    }

    /** The update of a copied flow: as it is now, keyed, with only the datagram socket if it gained one. */
    static FlowState.Builder update(Flow f, long nowNanos, List<Integer> fdsOut) {
        FlowState.Builder s = one(f, nowNanos).setGeneration(f.copiedGen).setUpdate(true);
        if (f.udpFd >= 0 && !f.copiedUdp) {
            s.setFdUdp(fdsOut.size());
            fdsOut.add(f.udpFd);
        }
        return s;
    }

    /**
     * Refuses a pre-copy chunk ({@code chunk}) or a delta this table cannot take, before anything
     * is taken or changed ({@link #check}'s rules, and): a chunk's flows are whole with keys, into
     * slots neither in use nor holding a copy, with no inner connection or handed-in socket; a
     * delta carries no environment, ends only keys it holds (once), updates only copies it holds
     * and did not end (once, a quarantined copy stays quarantined; no socket but a datagram
     * socket the copy lacks, on a live flow), and puts a whole flow only into a slot that is free
     * or whose copy it ends.
     */
    static void checkCopy(BumblebeeState state, List<Fd> fds, Flow[] table, boolean chunk) {
        check(state, fds, table.length);
        if (chunk != state.getPreCopy() || (!chunk && !state.getDelta())) {
            throw new IllegalArgumentException(chunk ? "a pre-copy chunk without pre_copy" : "a full table (not a delta)"
                    + " after a pre-copy, or a pre-copy chunk at the pause");
        }
        if (!chunk && (state.hasFdNetns() || state.hasFdTun() || state.hasFdListen4() || state.hasFdListen6())) {
            throw new IllegalArgumentException("a delta with the environment (it came with the pre-copy)");
        }
        // keys are copyKey(slot, generation); a chunk can end or update none
        DeltaCheck delta = new DeltaCheck(
                k -> !chunk && (k >>> 32) < table.length && holds(table[(int) (k >>> 32)], (int) k),
                k -> "slot " + (k >>> 32) + " generation " + (k & 0xFFFFFFFFL));
        for (warren.handoff.v1.FlowCopyKey k : state.getEndedList()) {
            delta.ended(copyKey(k.getSlot(), k.getGeneration()));
        }
        for (FlowState s : state.getFlowsList()) {
            Flow f = table[s.getSlot()]; // check() has bounded it
            if (s.hasFdInner() || s.hasFdSocket()) {
                if (chunk || s.getUpdate()) {
                    throw new IllegalArgumentException("slot " + s.getSlot() + ": a copy or update with a downgrade's"
                            + " connecting sockets");
                }
            }
            if (s.getUpdate()) {
                delta.updated(copyKey(s.getSlot(), s.getGeneration()));
                boolean live = s.getStateValue() != Flow.QUARANTINED;
                boolean noDatagramSocket = live && s.getUdp() && s.getStateValue() == Flow.ACTIVE && f.udpFd < 0
                        && !s.hasFdUdp();
                if ((!f.live() && live) || s.hasFdFlow() || (s.hasFdUdp() && (f.udpFd >= 0 || !live))
                        || noDatagramSocket) {
                    throw new IllegalArgumentException("update of slot " + f.slot + ": " + stateName(f.state) + " -> "
                            + stateName(s.getStateValue()) + (s.hasFdFlow() ? " with a flow socket" : "")
                            + (s.hasFdUdp() ? " with a datagram socket" : ""));
                }
            } else if (f.copied ? !delta.isEnded(copyKey(f.slot, f.copiedGen)) : f.state != Flow.FREE) {
                throw new IllegalArgumentException("slot " + f.slot + " is in use here (a flow "
                        + (chunk ? "copied twice" : "whose copy did not end") + ")");
            }
        }
    }

    /** A copy's key (slot, generation) as one long for {@link DeltaCheck}: the slot high, the generation low. */
    private static long copyKey(int slot, int generation) {
        return Integer.toUnsignedLong(slot) << 32 | Integer.toUnsignedLong(generation);
    }

    private static boolean holds(Flow f, int generation) {
        return f.copied && f.copiedGen == generation;
    }

    private static String stateName(int st) {
        return switch (st) {
            case Flow.RESERVED -> "RESERVED";
            case Flow.ACTIVE -> "ACTIVE";
            case Flow.QUARANTINED -> "QUARANTINED";
            default -> "FREE";
        };
    }

    /** An update to a held copy (checked): state, counts, flags, key; the datagram socket it gained. */
    static void applyUpdate(FlowState s, List<Fd> fds, long nowNanos, Flow f) {
        f.state = s.getStateValue();
        f.haveKey = s.getHaveKey();
        if (s.hasOriginal()) {
            key(s.getOriginal(), f.original);
        }
        f.udp = s.getUdp();
        if (s.hasFdUdp()) {
            f.udpFd = fds.get(s.getFdUdp()).detach();
        }
        f.finFromFlow = s.getFinFromFlow();
        f.finFromKernel = s.getFinFromKernel();
        f.packetsIn = s.getPacketsIn();
        f.packetsOut = s.getPacketsOut();
        f.bytesIn = s.getBytesIn();
        f.bytesOut = s.getBytesOut();
        f.lastActiveNanos = nowNanos - s.getIdleMs() * 1_000_000L;
    }

    /** One flow without its fds and call (the caller adds those). */
    static FlowState.Builder one(Flow f, long nowNanos) {
        FlowState.Builder s = FlowState.newBuilder().setSlot(f.slot).setStateValue(f.state).setHaveKey(f.haveKey)
                .setUdp(f.udp).setFinFromFlow(f.finFromFlow).setFinFromKernel(f.finFromKernel)
                .setPacketsIn(f.packetsIn).setPacketsOut(f.packetsOut).setBytesIn(f.bytesIn).setBytesOut(f.bytesOut)
                .setIdleMs(Math.max(0, (nowNanos - f.lastActiveNanos) / 1_000_000)).setNatPort(f.natPort)
                .setDowngrade(f.downgrade).setInnerPort(f.innerPort).setMss4(f.mss4).setMss6(f.mss6)
                .setVnetHdr(f.vnet);
        if (f.haveKey) {
            s.setOriginal(tuple(f.original));
        }
        return s;
    }

    /** Rebuilds a table of {@code state.getSlots()} flows; takes the fds it names from {@code fds}. */
    static Flow[] read(BumblebeeState state, List<Fd> fds, long nowNanos) {
        Flow[] flows = new Flow[state.getSlots()];
        for (int i = 0; i < flows.length; i++) {
            flows[i] = new Flow(i);
        }
        read(state, fds, nowNanos, flows);
        return flows;
    }

    /**
     * Into an existing table of {@code state.getSlots()} flows (all FREE). The whole state is
     * {@link #check}ed first: a refused one (IllegalArgumentException) has taken no fd.
     */
    static void read(BumblebeeState state, List<Fd> fds, long nowNanos, Flow[] flows) {
        check(state, fds, flows.length);
        for (FlowState s : state.getFlowsList()) {
            readOne(s, fds, nowNanos, flows[s.getSlot()]);
        }
    }

    /** One flow (checked) into its FREE slot {@code f}, taking the fds it names. */
    static void readOne(FlowState s, List<Fd> fds, long nowNanos, Flow f) {
        f.state = s.getStateValue();
        f.haveKey = s.getHaveKey();
        if (s.hasOriginal()) {
            key(s.getOriginal(), f.original);
        }
        f.udp = s.getUdp();
        f.flowFd = s.hasFdFlow() ? fds.get(s.getFdFlow()).detach() : -1;
        f.udpFd = s.hasFdUdp() ? fds.get(s.getFdUdp()).detach() : -1;
        f.finFromFlow = s.getFinFromFlow();
        f.finFromKernel = s.getFinFromKernel();
        f.packetsIn = s.getPacketsIn();
        f.packetsOut = s.getPacketsOut();
        f.bytesIn = s.getBytesIn();
        f.bytesOut = s.getBytesOut();
        f.lastActiveNanos = nowNanos - s.getIdleMs() * 1_000_000L;
        f.natPort = s.getNatPort() != 0 ? s.getNatPort() : f.natPort;
        f.downgrade = s.getDowngrade();
        f.innerPort = s.getInnerPort();
        f.innerFd = s.hasFdInner() ? fds.get(s.getFdInner()).detach() : -1;
        f.socket = s.hasFdSocket() ? fds.get(s.getFdSocket()).transfer() : null;
        f.mss4 = s.getMss4();
        f.mss6 = s.getMss6();
        f.vnet = s.getVnetHdr();
        f.callRef = s.getCallRef();
    }

    /**
     * Refuses a state this table cannot take, before any fd is taken (a refusal halfway through
     * would leave the fds already moved into flows with no owner): its format and slot count; each
     * flow's slot (uint32, read unsigned) in the table and used once, its state not FREE and known,
     * its tuple's addresses both 4 or both 16 bytes; every fd index (uint32) in range and used
     * once, a flow's open.
     */
    static void check(BumblebeeState state, List<Fd> fds, int slots) {
        if (state.getFormat() != FORMAT) {
            throw new IllegalArgumentException("Bumblebee state format " + state.getFormat() + "; this version reads "
                    + FORMAT);
        }
        if (slots != state.getSlots()) {
            throw new IllegalArgumentException("state of " + Integer.toUnsignedLong(state.getSlots())
                    + " slots; this table has " + slots + " (bumblebee.slots must not change across an upgrade)");
        }
        java.util.BitSet slotUsed = new java.util.BitSet(slots);
        java.util.BitSet fdUsed = new java.util.BitSet(fds.size());
        // the namespace's, the TUN's and the listeners' fds: taken by the caller, maybe before this
        long none = -1;
        for (long u : new long[] {state.hasFdNetns() ? Integer.toUnsignedLong(state.getFdNetns()) : none,
                state.hasFdTun() ? Integer.toUnsignedLong(state.getFdTun()) : none,
                state.hasFdListen4() ? Integer.toUnsignedLong(state.getFdListen4()) : none,
                state.hasFdListen6() ? Integer.toUnsignedLong(state.getFdListen6()) : none}) {
            if (u != none) {
                if (u >= fds.size() || fdUsed.get((int) u)) {
                    throw new IllegalArgumentException("fd index " + u + " of " + fds.size() + " (or used twice)");
                }
                fdUsed.set((int) u);
            }
        }
        for (FlowState s : state.getFlowsList()) {
            long slot = Integer.toUnsignedLong(s.getSlot());
            if (slot >= slots || slotUsed.get((int) slot)) {
                throw new IllegalArgumentException("flow in slot " + slot + " of " + slots + " (or a slot twice)");
            }
            slotUsed.set((int) slot);
            int st = s.getStateValue();
            if (st != Flow.RESERVED && st != Flow.ACTIVE && st != Flow.QUARANTINED) {
                throw new IllegalArgumentException("flow in slot " + slot + " in state " + st);
            }
            if (s.hasOriginal()) {
                int a = s.getOriginal().getSrcIp().size();
                if ((a != 4 && a != 16) || s.getOriginal().getDstIp().size() != a) {
                    throw new IllegalArgumentException("flow in slot " + slot + ": addresses of " + a + " and "
                            + s.getOriginal().getDstIp().size() + " bytes");
                }
            }
            if (s.hasFdFlow()) {
                fdIndex(s.getFdFlow(), fds, fdUsed, slot);
            }
            if (s.hasFdUdp()) {
                fdIndex(s.getFdUdp(), fds, fdUsed, slot);
            }
            if (s.hasFdInner()) {
                fdIndex(s.getFdInner(), fds, fdUsed, slot);
            }
            if (s.hasFdSocket()) {
                fdIndex(s.getFdSocket(), fds, fdUsed, slot);
            }
        }
    }

    private static void fdIndex(int index, List<Fd> fds, java.util.BitSet used, long slot) {
        long i = Integer.toUnsignedLong(index);
        if (i >= fds.size() || used.get((int) i) || !fds.get((int) i).isOpen()) {
            throw new IllegalArgumentException("flow in slot " + slot + ": fd index " + i + " out of range ("
                    + fds.size() + " fds), closed or used twice");
        }
        used.set((int) i);
    }

    private static FiveTuple tuple(FlowKey k) {
        return Tuples.tuple(k);
    }

    static void key(FiveTuple t, FlowKey out) {
        out.version = t.getSrcIp().size() == 4 ? 4 : 6;
        out.protocol = t.getProtocol();
        java.util.Arrays.fill(out.src, (byte) 0);
        java.util.Arrays.fill(out.dst, (byte) 0);
        t.getSrcIp().copyTo(out.src, 0);
        t.getDstIp().copyTo(out.dst, 0);
        out.srcPort = t.getSrcPort();
        out.dstPort = t.getDstPort();
    }
}
