package warren.daemon.relay;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.code_intelligence.jazzer.junit.FuzzTest;
import com.google.protobuf.ByteString;
import com.google.protobuf.InvalidProtocolBufferException;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import warren.daemon.FdStoreNames;
import warren.daemon.StoreRecovery;
import warren.daemon.handoff.HandoffItem;
import warren.fdpass.Fd;
import warren.fdpass.FuzzSupport;
import warren.fdpass.Memfd;
import warren.fdpass.libc.Native;
import warren.handoff.v1.Linger;
import warren.handoff.v1.PendingCall;
import warren.handoff.v1.RelayDirection;
import warren.handoff.v1.RelayPair;
import warren.handoff.v1.RelayState;
import warren.handoff.v1.StoredPair;

/**
 * Fuzz targets for the relay's state: {@link #check} the check of a handed-in {@code RelayState}
 * ({@link RelayStateCodec#check}, before any fd is taken), {@link #storedPair} the recovery of a
 * pair from systemd's fd store ({@link RelayStore#RECOVERY}: a {@code StoredPair} in a sealed memfd
 * next to real sockets and pipes).
 */
class RelayStateFuzzTest {
    /**
     * Byte 0 the fds that arrived (mod 8), byte 1 which are closed (a bit each), the rest the state.
     * Invariants: passes or IllegalArgumentException; a passed state names only open fds in range,
     * each once, has two directions per pair, counts that are not negative with read &gt;= written,
     * and a pipe wherever bytes are in flight (an update, a delta's pair of a pre-copied one, names neither
     * sockets nor a pinned pipe the pre-copy sent: those are checked at adoption).
     */
    @FuzzTest
    void check(byte[] in) throws Exception {
        if (in.length < 2) {
            return;
        }
        RelayState st;
        try {
            st = RelayState.parseFrom(ByteString.copyFrom(in, 2, in.length - 2));
        } catch (InvalidProtocolBufferException e) {
            return;
        }
        List<Fd> fds = FuzzSupport.eventfds((in[0] & 0xFF) % 8, in[1] & 0xFF);
        try {
            try {
                RelayStateCodec.check(st, fds);
            } catch (IllegalArgumentException refused) {
                return;
            }
            assertPassable(st, fds);
        } finally {
            Fd.closeAll(fds);
        }
    }

    static void assertPassable(RelayState st, List<Fd> fds) {
        assertEquals(RelayStateCodec.FORMAT, st.getFormat());
        BitSet used = new BitSet();
        for (RelayPair rp : st.getPairsList()) {
            if (!rp.getUpdate()) { // an update's sockets, and a pinned pipe it leaves out, are its pre-copied pair's
                usable(rp.getFdA(), fds, used);
                usable(rp.getFdB(), fds, used);
            }
            assertEquals(2, rp.getDirectionsCount());
            for (RelayDirection d : rp.getDirectionsList()) {
                assertTrue(d.getRead() >= d.getWritten() && d.getWritten() >= 0, "counts " + d);
                if (d.getHasPipe()) {
                    usable(d.getPipeR(), fds, used);
                    usable(d.getPipeW(), fds, used);
                } else if (!rp.getUpdate()) { // an update's pipe in flight is checked at adoption (Relay.adoptCopies)
                    assertEquals(d.getRead(), d.getWritten(), "bytes in flight without a pipe");
                }
            }
        }
    }

    private static void usable(int index, List<Fd> fds, BitSet used) {
        long i = Integer.toUnsignedLong(index);
        assertTrue(i < fds.size(), "fd index " + i + " of " + fds.size() + " passed");
        assertTrue(fds.get((int) i).isOpen(), "a closed fd passed");
        assertTrue(!used.get((int) i), "an fd used twice passed");
        used.set((int) i);
    }

    /**
     * A stored pair after a crash: byte 0 bit 0 puts the real fds' inodes into the description (so
     * it can match), bit 1 says its control connection survived, bit 2 leaves the description out,
     * bits 3-5 rotate the order systemd hands the fds back in; the rest a {@code StoredPair}.
     * Invariants: the recovery does not throw for one bad entry; every item it makes holds a
     * {@code RelayState} that {@link RelayStateCodec#check} passes with the item's fds; every fd is
     * handed on in an item or closed (dropped or read), none left open behind.
     */
    @FuzzTest
    void storedPair(byte[] in) throws Exception {
        if (in.length < 1) {
            return;
        }
        StoredPair sp;
        try {
            sp = StoredPair.parseFrom(ByteString.copyFrom(in, 1, in.length - 1));
        } catch (InvalidProtocolBufferException e) {
            return;
        }
        int flags = in[0] & 0xFF;
        List<Fd> fds = new ArrayList<>(7);
        List<Integer> numbers = new ArrayList<>();
        List<HandoffItem> items = new ArrayList<>();
        try {
            int[] s = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
            int[] p1 = Native.pipe2(Native.O_CLOEXEC);
            int[] p2 = Native.pipe2(Native.O_CLOEXEC);
            for (int n : new int[] {s[0], s[1], p1[0], p1[1], p2[0], p2[1]}) {
                fds.add(Fd.adopt(n));
            }
            if ((flags & 1) != 0) {
                sp = sp.toBuilder().setInoA(ino(s[0])).setInoB(ino(s[1])).setInoPipeAToB(ino(p1[0]))
                        .setInoPipeBToA(ino(p2[0])).build();
            }
            if ((flags & 4) == 0) {
                fds.add(Memfd.createSealed("fuzz", sp.toByteArray()));
            }
            java.util.Collections.rotate(fds, (flags >>> 3) & 7);
            for (Fd f : fds) {
                numbers.add(f.number());
            }
            List<Fd> entryFds = new ArrayList<>(fds);
            StoreRecovery.Entry entry = new StoreRecovery.Entry(FdStoreNames.parse("p17"), entryFds);
            boolean alive = (flags & 2) != 0;
            RelayStore.RECOVERY.recover(List.of(entry), new StoreRecovery.Into() {
                @Override
                public long nowUnixNanos() {
                    return 1_700_000_000_000_000_000L;
                }

                @Override
                public boolean call(long connection, PendingCall call, boolean answered) {
                    return alive;
                }

                @Override
                public void item(HandoffItem item) {
                    items.add(item);
                }

                @Override
                public void drop(StoreRecovery.Entry e, String why) {
                    Fd.closeAll(e.fds());
                }

                @Override
                public void resumed(String what, int n) {}
            });
            for (HandoffItem it : items) {
                RelayState st = RelayState.parseFrom(it.payload());
                RelayStateCodec.check(st, it.fds()); // a recovered state must pass what the adopt checks
                assertPassable(st, it.fds());
            }
        } finally {
            for (HandoffItem it : items) {
                Fd.closeAll(it.fds());
            }
            Fd.closeAll(fds);
        }
        FuzzSupport.assertClosed(numbers, "after the recovery and its items were closed");
    }

    private static long ino(int fd) throws Exception {
        return Native.fstat(fd)[3];
    }

    static byte[] seed(int first, byte[] message) {
        byte[] out = new byte[1 + message.length];
        out[0] = (byte) first;
        System.arraycopy(message, 0, out, 1, message.length);
        return out;
    }

    static RelayPair pair(int base, long inFlight) {
        return RelayPair.newBuilder().setFdA(base).setFdB(base + 1).setFlags(0).setOriginalFlagsA(2)
                .setOriginalFlagsB(2).setIdleTimeoutMs(300_000).setLifetimeMs(0).setByteLimit(0)
                .setStartUnixNanos(1_699_999_000_000_000_000L).setAgeNanos(1_000_000).setARemote("198.18.0.1:40000")
                .setBRemote("198.18.0.2:80").setCallRef(1)
                .setOriginalLingerA(Linger.newBuilder()).setOriginalLingerB(Linger.newBuilder())
                .addDirections(RelayDirection.newBuilder().setRead(1000 + inFlight).setWritten(1000).setHasPipe(true)
                        .setPipeR(base + 2).setPipeW(base + 3).setPipeSize(65536))
                .addDirections(RelayDirection.newBuilder().setRead(500).setWritten(500).setHasPipe(true)
                        .setPipeR(base + 4).setPipeW(base + 5).setPipeSize(65536))
                .build();
    }

    static Map<String, byte[]> checkSeeds() {
        Map<String, byte[]> s = new LinkedHashMap<>();
        RelayState two = RelayState.newBuilder().setFormat(RelayStateCodec.FORMAT).addPairs(pair(0, 10)).build();
        s.put("one-pair-pipes", seed(6, prepend(0, two.toByteArray())));
        s.put("closed-fd", seed(6, prepend(2, two.toByteArray())));
        s.put("index-past-2^31", seed(6, prepend(0, two.toBuilder().setPairs(0, pair(0, 0).toBuilder().setFdB(-1))
                .build().toByteArray())));
        RelayPair noPipe = pair(0, 0).toBuilder().setDirections(0, RelayDirection.newBuilder().setRead(5).setWritten(5))
                .setDirections(1, RelayDirection.newBuilder().setRead(7).setWritten(7)).build();
        s.put("no-pipes", seed(2, prepend(0, RelayState.newBuilder().setFormat(1).addPairs(noPipe).build().toByteArray())));
        return s;
    }

    private static byte[] prepend(int b, byte[] rest) {
        return seed(b, rest);
    }

    static Map<String, byte[]> storedSeeds() {
        Map<String, byte[]> s = new LinkedHashMap<>();
        StoredPair sp = StoredPair.newBuilder().setPair(pair(0, 0)).setCall(PendingCall.newBuilder().setId(7).setTask(17)
                .setKind("splice").setStartUnixNanos(1_699_999_000_000_000_000L)).setConnection(3)
                .setItem("splicer.relay").build();
        s.put("pair-alive", seed(1 | 2, sp.toByteArray()));
        s.put("pair-alive-rotated", seed(1 | 2 | (3 << 3), sp.toByteArray()));
        s.put("pair-connection-gone", seed(1, sp.toByteArray()));
        s.put("pair-inodes-wrong", seed(2, sp.toByteArray()));
        s.put("pair-pipe-index-far", seed(1 | 2, sp.toBuilder().setPair(sp.getPair().toBuilder()
                .setDirections(0, sp.getPair().getDirections(0).toBuilder().setPipeR(40))).build().toByteArray()));
        return s;
    }

    @Test
    void seedsAreInTheCorpus() throws Exception {
        Map<String, byte[]> c = checkSeeds();
        for (byte[] in : c.values()) {
            check(in);
        }
        FuzzSupport.writeOrCheck(RelayStateFuzzTest.class, "check", c);
        Map<String, byte[]> p = storedSeeds();
        for (byte[] in : p.values()) {
            storedPair(in);
        }
        FuzzSupport.writeOrCheck(RelayStateFuzzTest.class, "storedPair", p);
    }
}
