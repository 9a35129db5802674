package warren.fish;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.function.LongFunction;
import java.util.function.ToLongFunction;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.daemon.DaemonSpec;
import warren.daemon.control.Call;
import warren.daemon.handoff.HandoffItem;
import warren.daemon.loop.EventLoop;
import warren.daemon.metrics.Counters;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fish.egress.Egress;
import warren.handoff.v1.FishClient;
import warren.handoff.v1.FishFlow;
import warren.handoff.v1.FishState;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.Packets;
import warren.netns.testing.TestNetwork;
import warren.packet.Checksum;

/**
 * Fish's pre-copy (issue 16), both sides in one process. The old side: each lane's chunks carry
 * its queue once and its clients with keys, socket duplicates and flows, in at most maxFds fds;
 * while they are copied a client's flow sees packets, a new flow starts, a TCP flow ends (RST,
 * then its short timeout), a client ends and another begins; the delta at the pause then carries
 * exactly that: the new client whole, the ended client's key, an update of the client that moved
 * with only its 2 changed or added flows (of 4), an update of the client whose flow ended with that
 * flow's tuple, and nothing of the idle client. The successor side (an engine built on the
 * pre-copied queue, its loop not running): refuses deltas that do not fit (an end or update of a
 * key never copied, a key ended twice, ended and updated, an update's ended flow never copied, a
 * flow moved to another port), changing nothing, then applies the real one. A resume forgets the
 * copy: the next export is whole again. The successor's duplicates are all closed when it is
 * discarded.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class FishPreCopyTest {
    private static final long LOOP_MS = 10_000;
    private static final byte[] CLIENT = {(byte) 198, 18, 60, 1};

    @TempDir
    Path dir;

    @Test
    void theDeltaCarriesOnlyWhatChangedAndTheSuccessorRefusesWhatDoesNotFit(TestNetwork net) throws Exception {
        EgressHandler[] handler = new EgressHandler[1];
        DaemonSpec fish = Main.spec();
        DaemonSpec keeping = new DaemonSpec(fish.name(), fish.version(), fish.summary(), fish.configKeys(), d -> {
            handler[0] = new EgressHandler(d);
            return handler[0];
        });
        try (Topology t = new Topology(net, dir, "threads = 1\nfish.tcp_close_timeout = 4000\n", keeping)) {
            EgressHandler h = handler[0];
            RunningDaemon rd = (RunningDaemon) t.fish;
            Counters counters = rd.daemon.counters();
            EventLoop loop = rd.daemon.loops().get(0);
            Fd a = t.rawClient("a", 10000, 10099); // 3 UDP flows: one sends again during the copy, one new one starts
            Fd b = t.rawClient("b", 10100, 10199); // a UDP flow, and a TCP flow that ends during the copy
            Fd c = t.rawClient("c", 10200, 10299); // ends during the copy
            Fd d = t.rawClient("d", 10300, 10399); // idle: nothing of it in the delta
            for (int port = 5000; port < 5003; port++) {
                exchange(a, port, "a" + port, t);
            }
            exchange(b, 6000, "b", t);
            exchange(d, 7000, "d", t);
            Packets.send(b, tcp4(CLIENT, 6001, t.server.getAddress(), 9, 0x04)); // an RST: closing, short timeout
            awaitCounter(counters, "reservations.made", 6);

            Map<Long, Call> byTask = new ConcurrentHashMap<>();
            ToLongFunction<Call> ref = call -> {
                byTask.put(call.task().number(), call);
                return call.task().number();
            };
            List<HandoffItem> chunks = new ArrayList<>();
            for (int i = 0; i < 5; i++) {
                List<HandoffItem> got = loop.call(() -> h.preCopyLoop(0, ref, 3), LOOP_MS);
                if (got.isEmpty()) {
                    break;
                }
                chunks.addAll(got);
            }
            assertEquals(2, chunks.size(), "a chunk of the queue and 2 clients (3 fds), then one of 2 clients");
            FishState c1 = FishState.parseFrom(chunks.get(0).payload());
            FishState c2 = FishState.parseFrom(chunks.get(1).payload());
            assertTrue(c1.getPreCopy() && c1.hasFdTun() && c1.getQueues() == 1, c1.toString());
            assertEquals(3, chunks.get(0).fds().size());
            assertFalse(c2.hasFdTun());
            assertEquals(2, c2.getClientsCount());
            Map<String, FishClient> copied = new TreeMap<>();
            for (FishState s : List.of(c1, c2)) {
                for (FishClient fc : s.getClientsList()) {
                    assertTrue(fc.getKey() != 0 && fc.getKey() == fc.getCallRef(), fc.toString());
                    copied.put(fc.getTenant(), fc);
                }
            }
            assertEquals(List.of("a", "b", "c", "d"), new ArrayList<>(copied.keySet()));
            assertEquals(3, copied.get("a").getFlowsCount());
            assertEquals(2, copied.get("b").getFlowsCount(), "b's TCP flow is in its copy");

            // during the copy: a's flow 5000 sends again and flow 5003 starts; c ends; e begins; b's TCP flow expires
            exchange(a, 5000, "again", t);
            exchange(a, 5003, "new", t);
            long expired = counters.get("flows.expired");
            c.close();
            awaitTrue(() -> !loop.call(() -> h.egress().describe(), LOOP_MS).containsKey("c"), "client c ends");
            Fd e = t.rawClient("e", 10400, 10499);
            awaitCounter(counters, "flows.expired", expired + 1); // b's TCP flow (c had none)
            Map<String, String> before = loop.call(() -> h.egress().describe(), LOOP_MS);
            assertEquals("1 flows", before.get("b").substring(0, 7), before.toString());

            List<HandoffItem> delta = loop.call(() -> {
                h.pauseLoop(0);
                return h.exportLoop(0, ref);
            }, LOOP_MS);
            FishState ds = FishState.parseFrom(delta.get(0).payload());
            assertFalse(ds.hasFdTun(), "the queue went with the pre-copy");
            assertEquals(1, delta.get(0).fds().size(), "only the socket of the client begun since: " + ds);
            assertEquals(List.of(copied.get("c").getKey()), ds.getEndedList());
            Map<String, FishClient> whole = new TreeMap<>();
            Map<Long, FishClient> updates = new TreeMap<>();
            for (FishClient fc : ds.getClientsList()) {
                if (fc.getUpdate()) {
                    updates.put(fc.getKey(), fc);
                } else {
                    whole.put(fc.getTenant(), fc);
                }
            }
            assertEquals(List.of("e"), new ArrayList<>(whole.keySet()));
            assertEquals(java.util.Set.of(copied.get("a").getKey(), copied.get("b").getKey()), updates.keySet(),
                    "d was idle: " + ds);
            FishClient ua = updates.get(copied.get("a").getKey());
            List<Integer> ports = new ArrayList<>();
            for (FishFlow f : ua.getFlowsList()) {
                ports.add(f.getClient().getSrcPort());
            }
            ports.sort(null);
            assertEquals(List.of(5000, 5003), ports, "only a's flows that moved: " + ua);
            assertEquals(0, ua.getEndedFlowsCount());
            FishClient ub = updates.get(copied.get("b").getKey());
            assertEquals(0, ub.getFlowsCount(), ub.toString());
            assertEquals(1, ub.getEndedFlowsCount());
            assertEquals(6001, ub.getEndedFlows(0).getSrcPort());

            // the successor: an engine on the pre-copied queue (its loop does not run), the chunks, then deltas
            int fdsBefore = openFds();
            int chunkFds = 0;
            for (HandoffItem it : chunks) {
                chunkFds += it.fds().size();
            }
            EventLoop sl = new EventLoop(1024, x -> { });
            Egress s = Egress.adoptQueues(new EventLoop[] {sl}, counters, rd.daemon.audit(), h.egress().settings(),
                    new Fd[] {chunks.get(0).fds().get(c1.getFdTun()).transfer()});
            try {
                for (HandoffItem it : chunks) {
                    s.preAdopt(FishState.parseFrom(it.payload()), it.fds());
                }
                assertEquals(4, s.copies());
                Map<String, String> built = s.describe();
                assertEquals("3 flows", built.get("a").substring(0, 7), built.toString());
                LongFunction<Call> calls = byTask::get;
                List<Fd> dfds = delta.get(0).fds();
                long ka = copied.get("a").getKey();
                long kc = copied.get("c").getKey();
                FishState endsC = FishState.newBuilder().setFormat(1).addEnded(kc).build();
                FishState updatesC = FishState.newBuilder().setFormat(1).addClients(FishClient.newBuilder().setKey(kc)
                        .setUpdate(true).setNextPort(10200)).build();
                FishState unknown = FishState.newBuilder().setFormat(1).addClients(FishClient.newBuilder().setKey(999_999)
                        .setUpdate(true).setNextPort(10000)).build();
                FishState neverCopiedFlow = ds.toBuilder().setClients(ds.getClientsList().indexOf(ub), ub.toBuilder()
                        .setEndedFlows(0, ub.getEndedFlows(0).toBuilder().setSrcPort(6999))).build();
                FishFlow moved = ua.getFlowsList().stream().filter(f -> f.getClient().getSrcPort() == 5000).findFirst()
                        .orElseThrow();
                FishState movedPort = ds.toBuilder().setClients(ds.getClientsList().indexOf(ua), ua.toBuilder()
                        .setFlows(ua.getFlowsList().indexOf(moved), moved.toBuilder().setEgressPort(
                                moved.getEgressPort() == 10099 ? 10098 : 10099))).build();
                Map<String, List<FishState>> refused = new java.util.LinkedHashMap<>();
                refused.put("a key ended twice", List.of(ds, endsC));
                refused.put("a key ended and updated", List.of(ds, updatesC));
                refused.put("an update of a key never copied", List.of(ds, unknown));
                refused.put("an ended flow never copied", List.of(neverCopiedFlow));
                refused.put("a flow moved to another port", List.of(movedPort));
                for (Map.Entry<String, List<FishState>> r : refused.entrySet()) {
                    List<List<Fd>> fds = new ArrayList<>();
                    for (int i = 0; i < r.getValue().size(); i++) {
                        fds.add(i == 0 ? dfds : List.of());
                    }
                    assertThrows(IllegalArgumentException.class, () -> s.adoptDelta(r.getValue(), fds, calls,
                            (call, task) -> { }), r.getKey());
                    assertEquals(4, s.copies(), r.getKey() + ": nothing applied");
                    assertEquals(built, s.describe(), r.getKey() + ": nothing applied");
                }
                List<Call> adopted = new ArrayList<>();
                // the delta's fds are the old process's own (views): the successor gets duplicates, as over the wire
                List<Fd> sent = new ArrayList<>();
                for (Fd f : dfds) {
                    sent.add(Fd.adopt(Native.fcntl(f.get(), Native.F_DUPFD_CLOEXEC, 0)));
                }
                s.adoptDelta(List.of(ds), List.of(sent), calls, (call, task) -> adopted.add(call));
                assertEquals(0, s.copies());
                assertEquals(4, adopted.size(), "a, b, d and e, each with its call");
                Map<String, String> after = s.describe();
                assertEquals(java.util.Set.of("a", "b", "d", "e"), after.keySet());
                assertEquals("4 flows", after.get("a").substring(0, 7), after.toString());
                assertEquals("1 flows", after.get("b").substring(0, 7), after.toString());
                assertEquals(before.get("a"), after.get("a"), "a's flows and counts as in the old process");
            } finally {
                s.discard();
                sl.close();
            }
            for (HandoffItem it : chunks) {
                Fd.closeAll(it.fds()); // the sender's part: those the successor did not take
            }
            assertEquals(fdsBefore - chunkFds, openFds(), "every duplicate closed, by the successor or the sender");

            // the old process resumes: the copy is forgotten, the next export is whole
            List<HandoffItem> full = loop.call(() -> {
                h.resumeLoop(0);
                h.pauseLoop(0);
                List<HandoffItem> x = h.exportLoop(0, ref);
                h.resumeLoop(0);
                return x;
            }, LOOP_MS);
            FishState fs = FishState.parseFrom(full.get(0).payload());
            assertTrue(fs.hasFdTun());
            assertEquals(4, fs.getClientsCount());
            assertTrue(fs.getClientsList().stream().noneMatch(fc -> fc.getUpdate() || fc.getKey() != 0), fs.toString());
            exchange(a, 5000, "after", t); // and it serves on
            e.close();
        }
    }

    /** Sends a UDP packet from {@code fd} to the echo server and waits for its answer. */
    private static void exchange(Fd fd, int sport, String text, Topology t) throws Exception {
        Packets.send(fd, Packets.udp4(CLIENT, sport, t.server.getAddress(), 7, text));
        Pointer buf = Native.allocate(2048);
        assertTrue(Native.pollOne(fd.get(), Native.POLLIN, 10_000) > 0, "no answer within 10 s");
        long n = Native.recv(fd.get(), buf, 2048, Native.MSG_DONTWAIT);
        byte[] got = new byte[(int) n];
        buf.get(0, got, 0, got.length);
        assertTrue(Packets.udp4Payload(got, got.length).startsWith(text + " from "), Packets.udp4Payload(got, got.length));
    }

    /** An IPv4 TCP segment (no payload) with {@code flags}, both checksums right. */
    static byte[] tcp4(byte[] src, int sport, byte[] dst, int dport, int flags) {
        ByteBuffer b = ByteBuffer.allocate(40);
        b.put(0, (byte) 0x45).putShort(2, (short) 40).put(8, (byte) 64).put(9, (byte) 6);
        b.put(12, src).put(16, dst);
        b.putShort(10, (short) Checksum.finish(Checksum.sum(b, 0, 20)));
        b.putShort(20, (short) sport).putShort(22, (short) dport).putInt(24, 1).put(32, (byte) 0x50)
                .put(33, (byte) flags).putShort(34, (short) 1024);
        ByteBuffer pseudo = ByteBuffer.allocate(32);
        pseudo.put(0, src).put(4, dst).put(9, (byte) 6).putShort(10, (short) 20);
        pseudo.put(12, b.array(), 20, 20);
        b.putShort(36, (short) Checksum.finish(Checksum.sum(pseudo, 0, 32)));
        return b.array();
    }

    private interface Check {
        boolean holds() throws Exception;
    }

    /** Waits (up to 30 s) until {@code check} holds: an observable state, not a duration. */
    private static void awaitTrue(Check check, String what) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (!check.holds()) {
            assertTrue(System.nanoTime() < deadline, "waited 30 s for: " + what);
            Thread.sleep(20);
        }
    }

    private static void awaitCounter(Counters counters, String name, long atLeast) throws Exception {
        awaitTrue(() -> counters.get(name) >= atLeast, name + " >= " + atLeast + " (is " + counters.get(name) + ")");
    }

    private static int openFds() {
        String[] fds = new java.io.File("/proc/self/fd").list();
        return fds == null ? -1 : fds.length;
    }
}
