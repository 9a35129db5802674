package warren.fish.egress;

import static org.junit.jupiter.api.Assertions.assertEquals;
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
import warren.control.v1.FiveTuple;
import warren.fdpass.Fd;
import warren.fdpass.FuzzSupport;
import warren.fdpass.libc.Native;
import warren.handoff.v1.FishState;
import warren.handoff.v1.PendingCall;
import warren.handoff.v1.StoredTask;
import warren.handoff.v1.StoredTasks;

/**
 * Fuzz targets for Fish's state: {@link #read} a handed-in {@code FishState}
 * ({@link FishStateCodec#read}), {@link #fromFdStore} the state rebuilt from systemd's fd store
 * after a crash ({@link FishStateCodec#fromFdStore}, the stored tasks as {@code TaskStore} gives
 * them).
 */
class FishStateFuzzTest {
    static final String ITEM = "fish.egress";
    static final String TUN = "fish0";

    /**
     * Byte 0 the fds that arrived (mod 8), byte 1 which are closed (a bit each), the rest the
     * state (a full state, a pre-copy chunk or a delta with updates and ended keys). Invariants:
     * read succeeds or throws IllegalArgumentException having taken no fd; the records it returns
     * (the whole clients: a delta's updates are not records) hold each named fd once, their IPs 4 or
     * 16 bytes with an identity as long or none, their flows' ports in their range, a key exactly in
     * a pre-copy chunk; an update passed names a key, no socket, flows of one family; closing the
     * records' fds and the list leaves nothing open. {@code ./warren fuzz fish-state}.
     */
    @FuzzTest
    void read(byte[] in) throws Exception {
        if (in.length < 2) {
            return;
        }
        FishState st;
        try {
            st = FishState.parseFrom(ByteString.copyFrom(in, 2, in.length - 2));
        } catch (InvalidProtocolBufferException e) {
            return;
        }
        List<Fd> fds = FuzzSupport.eventfds((in[0] & 0xFF) % 8, in[1] & 0xFF);
        List<Integer> numbers = new ArrayList<>();
        List<Boolean> openBefore = new ArrayList<>();
        for (Fd f : fds) {
            numbers.add(f.number());
            openBefore.add(f.isOpen());
        }
        List<FishStateCodec.ClientRecord> records = List.of();
        try {
            try {
                records = FishStateCodec.read(st, fds);
            } catch (IllegalArgumentException refused) {
                for (int i = 0; i < fds.size(); i++) {
                    assertEquals(openBefore.get(i), fds.get(i).isOpen(), "a refused state took fd " + i);
                }
                return;
            }
            int updates = 0;
            for (warren.handoff.v1.FishClient u : st.getClientsList()) {
                if (u.getUpdate()) {
                    updates++;
                    assertTrue(u.getKey() != 0 && !u.hasFdPackets() && !st.getPreCopy(), "an update passed: " + u);
                    for (warren.handoff.v1.FishFlow f : u.getFlowsList()) {
                        assertEquals(f.getClient().getSrcIp().size(), f.getClient().getDstIp().size());
                    }
                }
            }
            assertTrue(!st.getPreCopy() || st.getEndedCount() == 0, "no ended keys in a pre-copy chunk");
            assertEquals(st.getClientsCount() - updates, records.size());
            Set<Integer> held = new HashSet<>();
            for (FishStateCodec.ClientRecord r : records) {
                if (r.fd() >= 0) {
                    assertTrue(held.add(r.fd()), "fd " + r.fd() + " in two clients");
                    assertTrue(numbers.contains(r.fd()));
                }
                assertTrue(r.softIp().length == 4 || r.softIp().length == 16);
                assertEquals(st.getPreCopy(), r.key() != 0, "a key exactly in a pre-copy chunk");
                assertTrue(r.identity().length == 0 || r.identity().length == r.softIp().length);
                for (FishStateCodec.FlowRecord f : r.flows()) {
                    assertTrue(Integer.toUnsignedLong(f.egressPort()) >= Integer.toUnsignedLong(r.first())
                            && Integer.toUnsignedLong(f.egressPort()) <= Integer.toUnsignedLong(r.last()));
                    assertEquals(r.softIp().length, f.client().getSrcIp().size());
                }
            }
        } finally {
            for (FishStateCodec.ClientRecord r : records) {
                if (r.fd() >= 0) {
                    Native.close(r.fd());
                }
            }
            Fd.closeAll(fds);
        }
        FuzzSupport.assertClosed(numbers, "after the records and the list were closed");
    }

    /**
     * The input is a {@code StoredTasks}. Invariants: fromFdStore returns a state or refuses it
     * (IllegalArgumentException, or InvalidProtocolBufferException for a client description that
     * does not parse); a state it returns names the TUN and one socket per task, and
     * {@link FishStateCodec#check} passes it with the fds the store held (extras, then each task's).
     * {@code ./warren fuzz stored-tasks}.
     */
    @FuzzTest
    void fromFdStore(byte[] in) throws Exception {
        StoredTasks stored;
        try {
            stored = StoredTasks.parseFrom(in);
        } catch (InvalidProtocolBufferException e) {
            return;
        }
        FishState st;
        try {
            st = FishStateCodec.fromFdStore(stored, ITEM, TUN, List.of());
        } catch (IllegalArgumentException | InvalidProtocolBufferException refused) {
            return;
        }
        assertEquals(stored.getTasksCount(), st.getClientsCount());
        long total = stored.getExtrasCount();
        for (int c : stored.getFdCountsList()) {
            total += Integer.toUnsignedLong(c);
        }
        if (total > 256) {
            return; // many extras: not worth as many eventfds
        }
        List<Fd> fds = FuzzSupport.eventfds((int) total, 0);
        try {
            FishStateCodec.check(st, fds); // what the adopt will read must pass
        } finally {
            Fd.closeAll(fds);
        }
    }

    static byte[] seed(int fds, int closed, FishState st) {
        byte[] s = st.toByteArray();
        byte[] out = new byte[2 + s.length];
        out[0] = (byte) fds;
        out[1] = (byte) closed;
        System.arraycopy(s, 0, out, 2, s.length);
        return out;
    }

    static FishState written() {
        FiveTuple tcp = FiveTuple.newBuilder().setProtocol(6).setSrcIp(ByteString.copyFrom(new byte[] {(byte) 198, 18, 60, 1}))
                .setSrcPort(45000).setDstIp(ByteString.copyFrom(new byte[] {(byte) 198, 18, 0, 2})).setDstPort(80).build();
        FishStateCodec.ClientRecord c = new FishStateCodec.ClientRecord("a", new byte[] {(byte) 198, 18, (byte) 202, 5},
                20000, 20009, 100, new byte[] {(byte) 198, 18, 60, 1}, 20002, 10, 12, 1000, 1500, 7,
                ByteString.copyFromUtf8("m"), List.of(new FishStateCodec.FlowRecord(tcp, 20001, true, true, false, false,
                        22, 2500, 1234)), 41, true);
        FishStateCodec.ClientRecord v6 = new FishStateCodec.ClientRecord("b", new byte[16], 21000, 21009, 101,
                new byte[0], 21000, 0, 0, 0, 0, 8, ByteString.EMPTY, List.of(), 42, false);
        return FishStateCodec.write(List.of(c, v6), new ArrayList<>()).toBuilder().setFdTun(2).build();
    }

    static Map<String, byte[]> readSeeds() {
        Map<String, byte[]> s = new LinkedHashMap<>();
        FishState w = written();
        s.put("two-clients-and-tun", seed(3, 0, w));
        s.put("socket-closed", seed(3, 2, w));
        s.put("second-client-bad-port", seed(3, 0, w.toBuilder().setClients(1, w.getClients(1).toBuilder()
                .addFlows(w.getClients(0).getFlows(0))).build()));
        s.put("identity-too-long", seed(3, 0, w.toBuilder().setClients(0, w.getClients(0).toBuilder()
                .setIdentity(ByteString.copyFrom(new byte[20]))).build()));
        // pre-copy (issue 16): a chunk (queue 1 of 2, clients with keys), a delta (a client begun
        // since, an update with a changed flow and an ended one, an ended key), and refused forms
        FishState chunk = w.toBuilder().setPreCopy(true).setQueueIndex(1).setQueues(2)
                .setClients(0, w.getClients(0).toBuilder().setKey(41)).setClients(1, w.getClients(1).toBuilder().setKey(42))
                .build();
        s.put("pre-copy-chunk", seed(3, 0, chunk));
        warren.handoff.v1.FishClient update = warren.handoff.v1.FishClient.newBuilder().setKey(41).setUpdate(true)
                .setNextPort(20003).setPacketsOut(11).setIdentity(w.getClients(0).getIdentity())
                .addFlows(w.getClients(0).getFlows(0).toBuilder().setPackets(23))
                .addEndedFlows(w.getClients(0).getFlows(0).getClient().toBuilder().setSrcPort(45001)).build();
        FishState delta = w.toBuilder().clearFdTun().removeClients(0).addClients(update).addEnded(43).build();
        s.put("delta-update-and-ended", seed(3, 0, delta));
        s.put("chunk-client-without-key", seed(3, 0, chunk.toBuilder().setClients(1, w.getClients(1)).build()));
        s.put("chunk-queue-index-out-of-range", seed(3, 0, chunk.toBuilder().setQueueIndex(2).build()));
        s.put("update-with-socket", seed(3, 0, delta.toBuilder().setClients(1, update.toBuilder().setFdPackets(0))
                .build()));
        s.put("updated-and-ended", seed(3, 0, delta.toBuilder().addEnded(41).build()));
        s.put("update-flow-of-two-families", seed(3, 0, delta.toBuilder().setClients(1, update.toBuilder()
                .setFlows(0, update.getFlows(0).toBuilder().setClient(update.getFlows(0).getClient().toBuilder()
                        .setDstIp(ByteString.copyFrom(new byte[16]))))).build()));
        return s;
    }

    static Map<String, byte[]> storedSeeds() {
        Map<String, byte[]> s = new LinkedHashMap<>();
        FishState w = written();
        StoredTask t1 = StoredTask.newBuilder().setCall(PendingCall.newBuilder().setId(7).setTask(41).setKind("egress"))
                .setConnection(3).setItem(ITEM).setPayload(w.getClients(0).toBuilder().clearFlows().clearFdPackets()
                        .build().toByteString()).setVersion(1).build();
        StoredTask t2 = t1.toBuilder().setCall(t1.getCall().toBuilder().setTask(42).setId(8))
                .setPayload(w.getClients(1).toBuilder().clearFdPackets().build().toByteString()).build();
        StoredTasks two = StoredTasks.newBuilder().addExtras(TUN).addTasks(t1).addTasks(t2).addFdCounts(1).addFdCounts(1)
                .build();
        s.put("tun-and-two-clients", two.toByteArray());
        s.put("fd-counts-missing", two.toBuilder().clearFdCounts().addFdCounts(1).build().toByteArray());
        s.put("no-tun", two.toBuilder().clearExtras().build().toByteArray());
        return s;
    }

    @Test
    void seedsAreInTheCorpus() throws Exception {
        Map<String, byte[]> r = readSeeds();
        for (byte[] in : r.values()) {
            read(in);
        }
        FuzzSupport.writeOrCheck(FishStateFuzzTest.class, "read", r);
        Map<String, byte[]> f = storedSeeds();
        for (byte[] in : f.values()) {
            fromFdStore(in);
        }
        FuzzSupport.writeOrCheck(FishStateFuzzTest.class, "fromFdStore", f);
    }
}
