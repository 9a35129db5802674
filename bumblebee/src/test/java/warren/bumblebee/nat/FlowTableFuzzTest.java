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
        return s;
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
