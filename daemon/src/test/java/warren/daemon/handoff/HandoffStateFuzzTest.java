package warren.daemon.handoff;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;

import com.code_intelligence.jazzer.junit.FuzzTest;
import com.google.protobuf.ByteString;
import com.google.protobuf.InvalidProtocolBufferException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import warren.fdpass.Fd;
import warren.fdpass.FuzzSupport;
import warren.handoff.v1.HandoffState;
import warren.handoff.v1.Item;

/**
 * Fuzz target for the successor's reading of a {@code HandoffState} ({@link HandoffReceiver#items}):
 * byte 0 the number of fds that arrived (mod 8), the rest the state. Invariants: the state either
 * parses and splits into items or is refused (InvalidProtocolBufferException,
 * IllegalArgumentException, nothing else); the items are the state's, in order, and their fds are
 * exactly the fds that arrived, each once, in order. {@code ./warren fuzz handoff-state}.
 */
class HandoffStateFuzzTest {
    @FuzzTest
    void items(byte[] in) throws Exception {
        if (in.length < 1) {
            return;
        }
        HandoffState st;
        try {
            st = HandoffState.parseFrom(ByteString.copyFrom(in, 1, in.length - 1));
        } catch (InvalidProtocolBufferException e) {
            return;
        }
        List<Fd> fds = FuzzSupport.eventfds((in[0] & 0xFF) % 8, 0);
        try {
            List<HandoffItem> items;
            try {
                items = HandoffReceiver.items(st, fds);
            } catch (IllegalArgumentException refused) {
                return;
            }
            assertEquals(st.getItemsCount(), items.size());
            int at = 0;
            for (int i = 0; i < items.size(); i++) {
                Item it = st.getItems(i);
                HandoffItem h = items.get(i);
                assertEquals(it.getName(), h.name());
                assertArrayEquals(it.getPayload().toByteArray(), h.payload());
                assertEquals(Integer.toUnsignedLong(it.getFdCount()), h.fds().size());
                for (Fd f : h.fds()) {
                    assertSame(fds.get(at++), f);
                }
            }
            assertEquals(fds.size(), at, "every fd that arrived is in an item");
        } finally {
            Fd.closeAll(fds);
        }
    }

    static byte[] seed(int fds, HandoffState st) {
        byte[] s = st.toByteArray();
        byte[] out = new byte[1 + s.length];
        out[0] = (byte) fds;
        System.arraycopy(s, 0, out, 1, s.length);
        return out;
    }

    static Map<String, byte[]> seeds() {
        Map<String, byte[]> s = new LinkedHashMap<>();
        Item control = Item.newBuilder().setName("control").setPayload(ByteString.copyFrom(new byte[] {8, 1, 16, 0}))
                .setFdCount(2).build();
        Item relay = Item.newBuilder().setName("splicer.relay").setPayload(ByteString.copyFrom(new byte[] {8, 1}))
                .setFdCount(4).build();
        s.put("control-and-relay", seed(6, HandoffState.newBuilder().setStateVersion(3).addItems(control).addItems(relay)
                .build()));
        s.put("no-fds", seed(0, HandoffState.newBuilder().setStateVersion(1).addItems(Item.newBuilder().setName("x"))
                .build()));
        s.put("counts-wrapping", seed(1, HandoffState.newBuilder().setStateVersion(1)
                .addItems(Item.newBuilder().setName("a").setFdCount(2)).addItems(Item.newBuilder().setName("b")
                        .setFdCount(-1)).build()));
        return s;
    }

    @Test
    void seedsAreInTheCorpus() throws Exception {
        Map<String, byte[]> s = seeds();
        for (byte[] in : s.values()) {
            items(in);
        }
        FuzzSupport.writeOrCheck(HandoffStateFuzzTest.class, "items", s);
    }
}
