package warren.daemon.control;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.code_intelligence.jazzer.junit.FuzzTest;
import com.google.protobuf.ByteString;
import com.google.protobuf.InvalidProtocolBufferException;
import java.util.BitSet;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;
import warren.daemon.metrics.Counters;
import warren.fdpass.Fd;
import warren.fdpass.FuzzSupport;
import warren.handoff.v1.ControlConnection;
import warren.handoff.v1.ControlState;
import warren.handoff.v1.HistogramState;
import warren.handoff.v1.PendingCall;

/**
 * Fuzz target for the check of a handed-in {@code ControlState} ({@link ControlStateCodec#check}),
 * which runs before {@code ControlServer.adoptConnections} takes any fd: byte 0 the fds that
 * arrived (mod 8), byte 1 which of them are closed already (a bit each), the rest the state.
 * Invariants: the check passes or throws IllegalArgumentException (nothing else); a state it passes
 * is one adopt can take without losing an fd: the listener's and every connection's index in range,
 * (the listener's fd may be closed: the successor takes it first) and used once, connection numbers
 * and call refs unique;
 * its histograms are adopted (or skipped) without an exception. {@code ./warren fuzz control-state}.
 */
class ControlStateFuzzTest {
    @FuzzTest
    void check(byte[] in) throws Exception {
        if (in.length < 2) {
            return;
        }
        ControlState st;
        try {
            st = ControlState.parseFrom(ByteString.copyFrom(in, 2, in.length - 2));
        } catch (InvalidProtocolBufferException e) {
            return;
        }
        List<Fd> fds = FuzzSupport.eventfds((in[0] & 0xFF) % 8, in[1] & 0xFF);
        try {
            try {
                ControlStateCodec.check(st, fds);
            } catch (IllegalArgumentException refused) {
                return;
            }
            assertEquals(ControlStateCodec.FORMAT, st.getFormat());
            BitSet used = new BitSet();
            long listener = Integer.toUnsignedLong(st.getFdListener());
            assertTrue(listener < fds.size(), "listener index " + listener + " of " + fds.size() + " passed");
            used.set((int) listener); // may be taken already (closed here): the successor's server has it
            Set<Long> numbers = new HashSet<>();
            Set<Long> refs = new HashSet<>();
            for (ControlConnection cc : st.getConnectionsList()) {
                usable(Integer.toUnsignedLong(cc.getFd()), fds, used);
                assertTrue(numbers.add(cc.getNumber()), "connection number twice");
                for (PendingCall pc : cc.getCallsList()) {
                    assertTrue(refs.add(pc.getRef()), "call ref twice");
                }
            }
            for (PendingCall pc : st.getDetachedList()) {
                assertTrue(refs.add(pc.getRef()), "call ref twice");
            }
            Counters counters = new Counters();
            int skipped = counters.adoptHistograms(st.getHistogramsMap());
            assertTrue(skipped >= 0 && skipped <= st.getHistogramsCount());
        } finally {
            Fd.closeAll(fds);
        }
    }

    private static void usable(long i, List<Fd> fds, BitSet used) {
        assertTrue(i < fds.size(), "fd index " + i + " of " + fds.size() + " passed");
        assertTrue(fds.get((int) i).isOpen(), "a closed fd passed");
        assertTrue(!used.get((int) i), "an fd used twice passed");
        used.set((int) i);
    }

    static byte[] seed(int fds, int closed, ControlState st) {
        byte[] s = st.toByteArray();
        byte[] out = new byte[2 + s.length];
        out[0] = (byte) fds;
        out[1] = (byte) closed;
        System.arraycopy(s, 0, out, 2, s.length);
        return out;
    }

    static Map<String, byte[]> seeds() {
        Map<String, byte[]> s = new LinkedHashMap<>();
        ControlState.Builder head = ControlStateCodec.head(12, 40, 39, Map.of("requests", 39L, "errors", 1L),
                Map.of("request_seconds", HistogramState.newBuilder().addUpperBounds(0.001).addUpperBounds(0.01)
                        .addCounts(30).addCounts(9).addCounts(0).setSum(0.05).build()),
                "/run/warren/splicer.sock", 123456789L);
        ControlState two = head.clone()
                .addConnections(ControlStateCodec.connection(3, 1).addCalls(PendingCall.newBuilder().setRef(1).setId(7)
                        .setTask(17).setKind("splice").setStartUnixNanos(1_700_000_000_000_000_000L).setPeerPid(99)))
                .addConnections(ControlStateCodec.connection(5, 2).addCalls(PendingCall.newBuilder().setRef(2).setId(7)
                        .setTask(18).setKind("egress")))
                .addDetached(PendingCall.newBuilder().setRef(3).setId(1).setTask(11).setKind("upgrade")).build();
        s.put("two-connections", seed(3, 0, two));
        s.put("listener-only", seed(1, 0, head.clone().build()));
        s.put("closed-connection-fd", seed(3, 4, two));
        s.put("duplicate-ref", seed(3, 0, two.toBuilder().addDetached(PendingCall.newBuilder().setRef(1)).build()));
        s.put("listener-past-2^31", seed(3, 0, two.toBuilder().setFdListener(-2).build()));
        return s;
    }

    @Test
    void seedsAreInTheCorpus() throws Exception {
        Map<String, byte[]> s = seeds();
        for (byte[] in : s.values()) {
            check(in);
        }
        FuzzSupport.writeOrCheck(ControlStateFuzzTest.class, "check", s);
    }
}
