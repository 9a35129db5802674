package warren.fish.egress;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * PortTable and AddressTable against a HashMap over seeded random operations, and their memory
 * bound: a soft-unicast IP costs slots in proportion to the ports in use, never 3 x 65,536.
 */
class TablesTest {
    @Test
    void portTableAgreesWithAMapAndShrinksBack() {
        Random rnd = new Random(12);
        PortTable<Object> t = new PortTable<>();
        Map<Integer, Object> ref = new HashMap<>();
        int peak = 0;
        for (int op = 0; op < 200_000; op++) {
            int proto = rnd.nextInt(3);
            int port = rnd.nextInt(op < 100_000 ? 65536 : 2048); // wide, then clustered (long probe runs)
            int k = proto << 16 | port;
            Object v = ref.get(k);
            assertSame(v, t.get(proto, port));
            if (rnd.nextInt(3) > 0 || v == null) {
                Object n = new Object();
                assertEquals(v == null, t.put(proto, port, n));
                ref.putIfAbsent(k, n);
            } else {
                assertFalse(t.remove(proto, port, new Object()), "only the flow that holds the slot frees it");
                assertTrue(t.remove(proto, port, v));
                ref.remove(k);
            }
            assertEquals(ref.size(), t.size());
            peak = Math.max(peak, t.size());
            assertTrue(t.capacity() <= Math.max(PortTable.MIN_CAPACITY, 8 * (t.size() + 1)),
                    "capacity " + t.capacity() + " for " + t.size());
        }
        for (Map.Entry<Integer, Object> e : ref.entrySet()) {
            assertSame(e.getValue(), t.get(e.getKey() >>> 16, e.getKey() & 0xFFFF));
        }
        for (Map.Entry<Integer, Object> e : new ArrayList<>(ref.entrySet())) {
            assertTrue(t.remove(e.getKey() >>> 16, e.getKey() & 0xFFFF, e.getValue()));
        }
        assertEquals(0, t.size());
        assertEquals(PortTable.MIN_CAPACITY, t.capacity(), "back to the minimum once empty (peak " + peak + ")");
    }

    @Test
    void aSoftIpWithAFewFlowsCostsAFewSlots() {
        PortTable<Object> t = new PortTable<>();
        for (int p = 20000; p < 20010; p++) {
            t.put(0, p, p);
        }
        assertEquals(32, t.capacity(), "10 flows: 32 slots (4 + 4 bytes each), not 3 x 65,536 references");
        PortTable<Object> all = new PortTable<>();
        for (int p = 0; p < 65536; p++) {
            all.put(1, p, p);
        }
        assertEquals(65536, all.size());
        assertEquals(1 << 17, all.capacity(), "a full protocol: 2 slots a port");
        for (int p = 0; p < 65536; p++) {
            assertEquals(p, all.get(1, p));
            assertNull(all.get(0, p));
        }
    }

    @Test
    void addressTableAgreesWithAMap() {
        Random rnd = new Random(34);
        AddressTable<Object> t = new AddressTable<>();
        Map<String, Object> ref = new HashMap<>();
        List<byte[]> keys = new ArrayList<>();
        for (int i = 0; i < 3000; i++) {
            byte[] a = new byte[rnd.nextBoolean() ? 4 : 16];
            rnd.nextBytes(a);
            keys.add(a);
        }
        for (int op = 0; op < 50_000; op++) {
            byte[] a = keys.get(rnd.nextInt(keys.size()));
            String k = java.util.HexFormat.of().formatHex(a);
            byte[] probe = java.util.Arrays.copyOf(a, 16 + rnd.nextInt(4)); // read from a longer buffer, as from a key
            assertSame(ref.get(k), t.get(probe, a.length));
            if (ref.containsKey(k)) {
                assertTrue(t.remove(a));
                ref.remove(k);
            } else {
                Object v = new Object();
                t.put(a, v);
                ref.put(k, v);
            }
            assertEquals(ref.size(), t.size());
            assertEquals(ref.size(), t.values().size());
        }
        for (String k : new ArrayList<>(ref.keySet())) {
            assertTrue(t.remove(java.util.HexFormat.of().parseHex(k)));
        }
        assertEquals(AddressTable.MIN_CAPACITY, t.capacity());
    }
}
