package warren.bumblebee.nat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.code_intelligence.jazzer.junit.FuzzTest;
import com.google.protobuf.ByteString;
import com.google.protobuf.InvalidProtocolBufferException;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;
import warren.fdpass.Fd;
import warren.fdpass.FuzzSupport;
import warren.fdpass.libc.Native;
import warren.handoff.v1.BumblebeeState;

/**
 * Fuzz target for the successor's reading of Bumblebee's flow table ({@link FlowTableCodec#read}):
 * byte 0 the fds that arrived (mod 8), byte 1 which are closed (a bit each), the rest a
 * {@code BumblebeeState}; the table has the state's slot count (at most 1,024, else 0). Invariants:
 * the read succeeds or throws IllegalArgumentException having taken no fd (every fd still open in
 * the list, for the handoff to close); a read table holds each named fd in exactly one flow field,
 * leaves the others in the list, writes back with as many flows and fds; closing the flows and the
 * list leaves nothing open. {@code ./warren fuzz flow-table}.
 */
class FlowTableFuzzTest {
    @FuzzTest
    void read(byte[] in) throws Exception {
        if (in.length < 2) {
            return;
        }
        BumblebeeState st;
        try {
            st = BumblebeeState.parseFrom(ByteString.copyFrom(in, 2, in.length - 2));
        } catch (InvalidProtocolBufferException e) {
            return;
        }
        List<Fd> fds = FuzzSupport.eventfds((in[0] & 0xFF) % 8, in[1] & 0xFF);
        List<Integer> numbers = new ArrayList<>();
        for (Fd f : fds) {
            numbers.add(f.number());
        }
        long slots = Integer.toUnsignedLong(st.getSlots());
        Flow[] table = new Flow[slots <= 1024 ? (int) slots : 0];
        for (int i = 0; i < table.length; i++) {
            table[i] = new Flow(i);
        }
        List<Boolean> openBefore = new ArrayList<>();
        for (Fd f : fds) {
            openBefore.add(f.isOpen());
        }
        if (st.getPreCopy() || st.getDelta()) {
            copyForms(st, fds, numbers, table);
            return;
        }
        try {
            try {
                FlowTableCodec.read(st, fds, 1_000_000_000_000L, table);
            } catch (IllegalArgumentException refused) {
                for (int i = 0; i < fds.size(); i++) {
                    assertEquals(openBefore.get(i), fds.get(i).isOpen(), "a refused state took fd " + i);
                }
                return;
            }
            Set<Integer> held = new HashSet<>();
            int flows = 0;
            for (Flow f : table) {
                if (f.state == Flow.FREE) {
                    assertTrue(f.flowFd < 0 && f.udpFd < 0 && f.innerFd < 0 && f.socket == null, "a FREE slot holds an fd");
                    continue;
                }
                flows++;
                for (int n : new int[] {f.flowFd, f.udpFd, f.innerFd, f.socket == null ? -1 : f.socket.number()}) {
                    if (n >= 0) {
                        assertTrue(held.add(n), "fd " + n + " in two flow fields");
                        assertTrue(numbers.contains(n), "fd " + n + " not one that arrived");
                    }
                }
                if (f.haveKey && st.getFlowsList().stream().anyMatch(s -> s.getSlot() == f.slot && s.hasOriginal())) {
                    assertTrue(f.original.version == 4 || f.original.version == 6);
                }
            }
            assertEquals(st.getFlowsCount(), flows);
            for (Fd f : fds) {
                assertEquals(!held.contains(f.number()) && f.isOpen(), f.isOpen());
                assertFalse(held.contains(f.number()) && f.isOpen(), "fd " + f.number() + " both in a flow and the list");
            }
            List<Integer> out = new ArrayList<>();
            BumblebeeState again = FlowTableCodec.write(table, st.getMtu(), 1_000_000_000_000L, out);
            assertEquals(flows, again.getFlowsCount());
            assertEquals(held.size(), out.size());
        } finally {
            for (Flow f : table) {
                for (int n : new int[] {f.flowFd, f.udpFd, f.innerFd}) {
                    if (n >= 0) {
                        Native.close(n);
                    }
                }
                if (f.socket != null) {
                    f.socket.close();
                }
            }
            Fd.closeAll(fds);
        }
        FuzzSupport.assertClosed(numbers, "after the table and the list were closed");
    }

    /**
     * The pre-copy's forms (a chunk with pre_copy, a delta): a chunk is placed into the empty
     * table as Nat.preAdopt does (without registering), a delta applied as Nat.adoptDelta does to
     * a table holding {@link #heldCopies}. Invariants: refused having taken no fd and changed no
     * slot; accepted, each fd named is in exactly one flow field and no longer in the list, no
     * FREE slot holds an fd; closing the flows and the list leaves nothing open.
     */
    private static void copyForms(BumblebeeState st, List<Fd> fds, List<Integer> numbers, Flow[] table) {
        if (st.getDelta()) {
            heldCopies(table);
        }
        List<Boolean> openBefore = new ArrayList<>();
        for (Fd f : fds) {
            openBefore.add(f.isOpen());
        }
        StringBuilder before = new StringBuilder();
        for (Flow f : table) {
            before.append(f.state).append(f.copied).append(f.flowFd).append(f.udpFd).append(' ');
        }
        try {
            try {
                FlowTableCodec.checkCopy(st, fds, table, st.getPreCopy());
            } catch (IllegalArgumentException refused) {
                for (int i = 0; i < fds.size(); i++) {
                    assertEquals(openBefore.get(i), fds.get(i).isOpen(), "a refused chunk or delta took fd " + i);
                }
                StringBuilder after = new StringBuilder();
                for (Flow f : table) {
                    after.append(f.state).append(f.copied).append(f.flowFd).append(f.udpFd).append(' ');
                }
                assertEquals(before.toString(), after.toString(), "a refused chunk or delta changed a slot");
                return;
            }
            for (warren.handoff.v1.FlowCopyKey k : st.getEndedList()) {
                table[k.getSlot()].state = Flow.FREE;
                table[k.getSlot()].copied = false;
            }
            for (warren.handoff.v1.FlowState s : st.getFlowsList()) {
                Flow f = table[s.getSlot()];
                if (s.getUpdate()) {
                    FlowTableCodec.applyUpdate(s, fds, 1_000_000_000_000L, f);
                } else {
                    FlowTableCodec.readOne(s, fds, 1_000_000_000_000L, f);
                }
            }
            Set<Integer> held = new HashSet<>();
            for (Flow f : table) {
                for (int n : new int[] {f.flowFd, f.udpFd, f.innerFd, f.socket == null ? -1 : f.socket.number()}) {
                    if (n >= 0) {
                        assertTrue(f.state != Flow.FREE, "a FREE slot holds fd " + n);
                        assertTrue(held.add(n), "fd " + n + " in two flow fields");
                        assertTrue(numbers.contains(n), "fd " + n + " not one that arrived");
                    }
                }
            }
            for (Fd f : fds) {
                assertFalse(held.contains(f.number()) && f.isOpen(), "fd " + f.number() + " both in a flow and the list");
            }
        } finally {
            for (Flow f : table) {
                for (int n : new int[] {f.flowFd, f.udpFd, f.innerFd}) {
                    if (n >= 0) {
                        Native.close(n);
                    }
                }
                if (f.socket != null) {
                    f.socket.close();
                }
            }
            Fd.closeAll(fds);
        }
        FuzzSupport.assertClosed(numbers, "after the table and the list were closed");
    }

    /**
     * The copies a successor holds before a delta (no fds, so the fuzz's fds are the delta's
     * only): slot 1 ACTIVE TCP generation 1, slot 3 RESERVED UDP generation 2, slot 6
     * QUARANTINED generation 3.
     */
    static void heldCopies(Flow[] table) {
        int[][] copies = {{1, Flow.ACTIVE, 1}, {3, Flow.RESERVED, 2}, {6, Flow.QUARANTINED, 3}};
        for (int[] c : copies) {
            if (c[0] < table.length) {
                Flow f = table[c[0]];
                f.state = c[1];
                f.copied = true;
                f.copiedGen = c[2];
                f.udp = c[0] == 3;
            }
        }
    }

    static byte[] seed(int fds, int closed, BumblebeeState st) {
        byte[] s = st.toByteArray();
        byte[] out = new byte[2 + s.length];
        out[0] = (byte) fds;
        out[1] = (byte) closed;
        System.arraycopy(s, 0, out, 2, s.length);
        return out;
    }

    /** A table as FlowTableCodecTest builds it, written by the real codec (fd numbers stand in: only the indices are kept). */
    static BumblebeeState written() {
        Flow[] table = new Flow[8];
        for (int i = 0; i < table.length; i++) {
            table[i] = new Flow(i);
        }
        Flow tcp = table[1];
        tcp.state = Flow.ACTIVE;
        tcp.haveKey = true;
        tcp.original.version = 4;
        tcp.original.protocol = 6;
        tcp.original.src[0] = (byte) 198;
        tcp.original.src[1] = 18;
        tcp.original.src[3] = 1;
        tcp.original.dst[0] = (byte) 198;
        tcp.original.dst[1] = 18;
        tcp.original.dst[3] = 2;
        tcp.original.srcPort = 40000;
        tcp.original.dstPort = 443;
        tcp.flowFd = 100;
        tcp.packetsIn = 10;
        tcp.natPort = 12345;
        Flow udp = table[5];
        udp.state = Flow.ACTIVE;
        udp.haveKey = true;
        udp.udp = true;
        udp.original.version = 6;
        udp.original.protocol = 17;
        udp.original.src[0] = (byte) 0xfd;
        udp.original.src[15] = 1;
        udp.original.dst[0] = (byte) 0xfd;
        udp.original.dst[15] = 2;
        udp.original.srcPort = 5353;
        udp.original.dstPort = 53;
        udp.flowFd = 101;
        udp.udpFd = 102;
        udp.vnet = true;
        table[6].state = Flow.QUARANTINED;
        table[7].state = Flow.RESERVED;
        table[7].flowFd = 103;
        return FlowTableCodec.write(table, 1500, 1_000_000_000_000L, new ArrayList<>());
    }

    static Map<String, byte[]> seeds() {
        Map<String, byte[]> s = new LinkedHashMap<>();
        BumblebeeState w = written();
        s.put("four-flows", seed(4, 0, w));
        s.put("one-fd-closed", seed(4, 2, w));
        s.put("fd-missing", seed(3, 0, w));
        s.put("slot-past-2^31", seed(4, 0, w.toBuilder().setFlows(0, w.getFlows(0).toBuilder().setSlot(-3)).build()));
        s.put("fd-twice", seed(4, 0, w.toBuilder().setFlows(1, w.getFlows(1).toBuilder().setFdUdp(0)).build()));
        // the pre-copy's forms: a chunk (keys, duplicates) and deltas against heldCopies
        BumblebeeState.Builder chunk = w.toBuilder().setPreCopy(true);
        for (int i = 0; i < chunk.getFlowsCount(); i++) {
            chunk.setFlows(i, chunk.getFlows(i).toBuilder().setGeneration(i + 1));
        }
        s.put("pre-copy-chunk", seed(4, 0, chunk.build()));
        s.put("pre-copy-chunk-with-update", seed(4, 0, chunk.setFlows(0, chunk.getFlows(0).toBuilder().setUpdate(true))
                .build()));
        BumblebeeState delta = delta();
        s.put("delta", seed(2, 0, delta));
        s.put("delta-ended-twice", seed(2, 0, delta.toBuilder().addEnded(delta.getEnded(0)).build()));
        s.put("delta-unknown-key", seed(2, 0, delta.toBuilder().setFlows(0, delta.getFlows(0).toBuilder()
                .setGeneration(9)).build()));
        s.put("delta-reused-slot-not-ended", seed(2, 0, delta.toBuilder().clearEnded().build()));
        s.put("delta-quarantined-live-again", seed(2, 0, delta.toBuilder().addFlows(warren.handoff.v1.FlowState
                .newBuilder().setSlot(6).setGeneration(3).setUpdate(true).setStateValue(Flow.ACTIVE)).build()));
        return s;
    }

    /**
     * A delta against {@link #heldCopies} as the old side writes it: slot 1's copy streamed (an
     * update), slot 3's UDP flow got its datagram socket (fd 0), slot 6's quarantine ended and the
     * slot was claimed again (ended key + the new flow whole, fd 1).
     */
    static BumblebeeState delta() {
        Flow[] old = new Flow[8];
        for (int i = 0; i < old.length; i++) {
            old[i] = new Flow(i);
        }
        heldCopies(old);
        old[1].flowFd = 100;
        old[3].flowFd = 101;
        for (Flow f : old) {
            if (f.copied) {
                f.generation = f.copiedGen;
                FlowCopy.record(f);
            }
        }
        old[1].packetsIn += 5;
        old[3].state = Flow.ACTIVE;
        old[3].udpFd = 102;
        old[6].generation++;
        old[6].state = Flow.RESERVED;
        old[6].flowFd = 103;
        return FlowTableCodec.writeDelta(old, 8, 1500, 1_000_000_000_000L, new ArrayList<>(), c -> 0);
    }

    @Test
    void seedsAreInTheCorpus() throws Exception {
        Map<String, byte[]> s = seeds();
        for (byte[] in : s.values()) {
            read(in);
        }
        FuzzSupport.writeOrCheck(FlowTableFuzzTest.class, "read", s);
    }
}
