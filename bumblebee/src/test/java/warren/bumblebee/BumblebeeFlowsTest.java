package warren.bumblebee;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Status;
import warren.control.v1.Upgrade;
import warren.bumblebee.onramp.OnRamp;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;
import warren.linux.net.Netns;
import warren.packet.Checksum;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;

/** Many flows, slot exhaustion and quarantine, and hostile packets beside a working flow. */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class BumblebeeFlowsTest {
    @TempDir
    Path dir;
    private final ExecutorService pool = Executors.newCachedThreadPool();

    @AfterEach
    void tearDown() {
        pool.shutdownNow();
    }

    /** Echoes everything on an upgraded socket until EOF. */
    private void echo(Reply r) {
        Fd s = r.takeFd(r.response().getUpgraded().getFdSocket());
        r.close();
        pool.submit(() -> {
            try (s) {
                Pointer p = Native.allocate(65536);
                byte[] b = new byte[65536];
                int n;
                while ((n = TcpSockets.read(s, p, b, 0, b.length)) > 0) {
                    TcpSockets.writeFully(s, p, b, 0, n);
                }
            }
            return null;
        });
    }

    private static Response status(ControlClient c) throws Exception {
        try (Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                .get(5, TimeUnit.SECONDS)) {
            return r.response();
        }
    }

    private static Fd connect(OnRamp ramp, String ip, int port) throws Exception {
        return Netns.call("/run/netns/" + ramp.client,
                () -> TcpSockets.connect(new InetSocketAddress(InetAddress.getByName(ip), port)));
    }

    @Test
    void aThousandConcurrentFlowsEchoTheirOwnBytes(TestNetwork net) throws Exception {
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("bb.sock"),
                "audit.path = /dev/null\nbumblebee.close_linger = 100ms\nbumblebee.quarantine = 1s\n");
                ControlClient c = ControlClient.connect(d.control);
                OnRamp ramp = new OnRamp(net.namespace("onramp").name, c, this::echo)) {
            int flows = 1000;
            List<Fd> socks = new ArrayList<>();
            for (int i = 0; i < flows; i++) {
                socks.add(connect(ramp, i % 2 == 0 ? "198.18.99.9" : "fd00:99::9", 7000 + i % 100));
            }
            long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (status(c).getStatus().getCountersOrDefault("upgrades.tcp", 0) < flows && System.nanoTime() < until) {
                Thread.sleep(20); // the client's connect completes a moment before the listener accepts
            }
            assertEquals(flows, status(c).getStatus().getCountersOrDefault("upgrades.tcp", 0), "all upgraded");
            assertEquals(flows, status(c).getStatus().getTasksActive(), "all live at once");
            List<Future<?>> work = new ArrayList<>();
            for (int i = 0; i < flows; i++) {
                Fd s = socks.get(i);
                byte[] msg = ("flow " + i + " says hello").getBytes();
                work.add(pool.submit(() -> {
                    Pointer p = Native.allocate(256);
                    TcpSockets.writeFully(s, p, msg, 0, msg.length);
                    byte[] got = new byte[msg.length];
                    int off = 0;
                    while (off < got.length) {
                        int n = TcpSockets.read(s, p, got, off, got.length - off);
                        assertTrue(n > 0, "echo arrived");
                        off += n;
                    }
                    assertArrayEquals(msg, got);
                    return null;
                }));
            }
            for (Future<?> w : work) {
                w.get(60, TimeUnit.SECONDS);
            }
            // List: every flow with its traffic each way and its original and translated 5-tuples
            long t0 = System.nanoTime();
            warren.control.v1.Listing listing;
            try (Reply r = c.call(Request.newBuilder().setList(warren.control.v1.List.getDefaultInstance()), List.of())
                    .get(10, TimeUnit.SECONDS)) {
                listing = r.response().getListing();
            }
            System.out.printf("List of %d flows answered in %.1f ms%n", listing.getTasksCount(),
                    (System.nanoTime() - t0) / 1e6);
            assertEquals(flows, listing.getTasksCount());
            for (warren.control.v1.TaskInfo t : listing.getTasksList()) {
                assertEquals("upgrade", t.getKind(), t.toString());
                assertTrue(t.getPacketsOut() > 0 && t.getPacketsIn() > 0 && t.getBytesOut() > 0 && t.getBytesIn() > 0,
                        t.toString());
                assertEquals(2, t.getTuplesCount(), t.toString());
                int dport = t.getTuples(0).getDstPort();
                assertTrue(t.getTuples(0).getProtocol() == 6 && dport >= 7000 && dport < 7100, t.toString());
                assertEquals(6, t.getTuples(1).getProtocol(), t.toString());
                assertEquals(t.getTuples(0).getSrcIp().size(), t.getTuples(1).getSrcIp().size(), t.toString());
            }
            socks.forEach(Fd::close);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (status(c).getStatus().getTasksActive() > 0 && System.nanoTime() < deadline) {
                Thread.sleep(100);
            }
            assertEquals(0, status(c).getStatus().getTasksActive(), "every flow ended after FIN both ways");
            assertTrue(ramp.errors.isEmpty(), ramp.errors.toString());
        }
    }

    /** Bumblebee's spec, its handler kept in {@code into} (to pause and resume its loops' NATs; BumblebeePauseWorkTest too). */
    static warren.daemon.DaemonSpec keepingHandler(AtomicReference<UpgradeHandler> into) {
        warren.daemon.DaemonSpec s = Main.spec();
        return new warren.daemon.DaemonSpec(s.name(), s.version(), s.summary(), s.configKeys(), d -> {
            UpgradeHandler h = new UpgradeHandler(d);
            into.set(h);
            return h;
        });
    }

    private static boolean sleep(long ms) throws InterruptedException {
        Thread.sleep(ms);
        return true;
    }

    /** Writes {@code tag + " " + i} on every flow ({@code write}) and/or reads its echo back ({@code read}). */
    private void echoRound(List<Fd> socks, String tag, boolean write, boolean read) throws Exception {
        List<Future<?>> work = new ArrayList<>();
        for (int i = 0; i < socks.size(); i++) {
            Fd s = socks.get(i);
            byte[] msg = (tag + " " + i).getBytes();
            work.add(pool.submit(() -> {
                Pointer p = Native.allocate(256);
                if (write) {
                    TcpSockets.writeFully(s, p, msg, 0, msg.length);
                }
                if (read) {
                    byte[] got = new byte[msg.length];
                    for (int off = 0; off < got.length; ) {
                        int n = TcpSockets.read(s, p, got, off, got.length - off);
                        assertTrue(n > 0, "echo arrived");
                        off += n;
                    }
                    assertArrayEquals(msg, got);
                }
                return null;
            }));
        }
        for (Future<?> w : work) {
            w.get(60, TimeUnit.SECONDS);
        }
    }

    /**
     * Pausing a loop's NAT (an upgrade in place's step 1) is its EventLoop.Group's pause: O(1),
     * nothing unregistered (the loop keeps the TUN queue, the listeners and 1,000 flow sockets in
     * epoll), and what the flows send meanwhile waits in their sockets, held by the group, and
     * crosses at resume; three cycles. Prints how long each loop's pause took (before the group:
     * 2-92 ms at 1,000 flows, an epoll_ctl DEL and a timer cancel per flow).
     */
    @ParameterizedTest(name = "threads = {0}")
    @ValueSource(ints = {1, 2})
    void aPausedNatKeepsItsRegistrationsAndResumeDeliversWhatCameMeanwhile(int threads, TestNetwork net)
            throws Exception {
        AtomicReference<UpgradeHandler> handler = new AtomicReference<>();
        try (RunningDaemon d = new RunningDaemon(keepingHandler(handler), dir.resolve("bb.sock"),
                "audit.path = /dev/null\nthreads = " + threads + "\n");
                ControlClient c = ControlClient.connect(d.control);
                OnRamp ramp = new OnRamp(net.namespace("onramp").name, c, this::echo)) {
            int flows = 1000;
            List<Fd> socks = new ArrayList<>();
            for (int i = 0; i < flows; i++) {
                socks.add(connect(ramp, i % 2 == 0 ? "198.18.99.9" : "fd00:99::9", 7000 + i % 100));
            }
            long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (status(c).getStatus().getCountersOrDefault("upgrades.tcp", 0) < flows && System.nanoTime() < until) {
                Thread.sleep(20);
            }
            assertEquals(flows, status(c).getStatus().getCountersOrDefault("upgrades.tcp", 0), "all upgraded");
            echoRound(socks, "before", true, true);
            UpgradeHandler h = handler.get();
            warren.bumblebee.nat.Nat[] nats = h.nats();
            assertEquals(threads, nats.length);
            for (int cycle = 0; cycle < 3; cycle++) {
                for (int i = 0; i < nats.length; i++) {
                    int k = i;
                    warren.daemon.loop.EventLoop l = nats[k].eventLoop();
                    long[] r = l.call(() -> {
                        long regs = l.registrations();
                        long t0 = System.nanoTime();
                        h.pauseLoop(k);
                        long took = System.nanoTime() - t0;
                        return new long[] {regs, l.registrations(), took};
                    }, 10_000);
                    System.out.printf("threads = %d, cycle %d: loop %d's NAT paused in %.1f us with %d registrations%n",
                            threads, cycle, k, r[2] / 1e3, r[0]);
                    assertEquals(r[0], r[1], "loop " + k + ": pausing unregisters nothing");
                    assertTrue(nats[k].paused() && nats[k].group().paused());
                }
                echoRound(socks, "paused " + cycle, true, false);
                // each flow's packet waits in its socket, whose event the loop's NAT group holds
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                int held;
                do {
                    held = 0;
                    for (warren.bumblebee.nat.Nat n : nats) {
                        held += n.eventLoop().call(() -> n.group().heldEvents(), 10_000);
                    }
                } while (held < flows && System.nanoTime() < deadline && sleep(10));
                assertTrue(held >= flows, "every flow socket's event held: " + held);
                for (Fd s : socks) {
                    assertEquals(0, Native.pollOne(s.get(), Native.POLLIN, 0) & Native.POLLIN, "no echo while paused");
                }
                for (int i = nats.length - 1; i >= 0; i--) { // loop 0 last, as the upgrade coordinator does
                    int k = i;
                    nats[k].eventLoop().call(() -> {
                        h.resumeLoop(k);
                        return null;
                    }, 10_000);
                }
                for (warren.bumblebee.nat.Nat n : nats) {
                    assertTrue(!n.paused(), "resumed");
                }
                echoRound(socks, "paused " + cycle, false, true); // what was sent while paused crosses now
            }
            echoRound(socks, "after", true, true);
            socks.forEach(Fd::close);
            assertTrue(ramp.errors.isEmpty(), ramp.errors.toString());
        }
    }

    private static long counter(ControlClient c, String name) throws Exception {
        return status(c).getStatus().getCountersOrDefault(name, 0);
    }

    /** Byte {@code j} of flow {@code i}'s stream: differs per flow and per position. */
    private static byte pattern(int i, int j) {
        return (byte) (i * 31 + j * 7 + (j >> 8));
    }

    /**
     * threads = 2 without the steering program ({@code bumblebee.tun_steering = off}): the kernel
     * picks bb0's queue by its own flow table, so about half of the kernel's first answers (its
     * SYN-ACKs) come out of the queue of the loop that does not own their slot. That loop hands
     * them over to the owner's ring; every flow on both loops' slots carries every byte both
     * ways, nothing is dropped as "other loop", and a pause of both NATs (their groups hold the
     * rings' eventfd too) and the resume lose nothing.
     */
    @Test
    void withoutTheSteeringProgramTheLoopsHandPacketsOverAndEveryByteArrives(TestNetwork net) throws Exception {
        AtomicReference<UpgradeHandler> handler = new AtomicReference<>();
        try (RunningDaemon d = new RunningDaemon(keepingHandler(handler), dir.resolve("bb.sock"),
                "audit.path = /dev/null\nthreads = 2\nbumblebee.tun_steering = off\nbumblebee.close_linger = 100ms\n");
                ControlClient c = ControlClient.connect(d.control);
                OnRamp ramp = new OnRamp(net.namespace("onramp").name, c, this::echo)) {
            warren.bumblebee.nat.Nat[] nats = handler.get().nats();
            assertEquals(2, nats.length, "two loops without the program");
            assertTrue(nats[0].handsOver() && nats[1].handsOver(), "both loops hand over");
            int share = nats[1].freeShared();
            int flows = 200;
            int bytes = 256 << 10;
            List<Fd> socks = new ArrayList<>();
            for (int i = 0; i < flows; i++) {
                socks.add(connect(ramp, i % 2 == 0 ? "198.18.99.9" : "fd00:99::9", 7000 + i % 100));
            }
            long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (counter(c, "upgrades.tcp") < flows && System.nanoTime() < until) {
                Thread.sleep(20);
            }
            assertEquals(flows, counter(c, "upgrades.tcp"), "all upgraded");
            assertTrue(nats[0].freeShared() < share && nats[1].freeShared() < share, "flows on both loops' slots");
            List<Future<?>> work = new ArrayList<>();
            for (int i = 0; i < flows; i++) {
                Fd s = socks.get(i);
                int flow = i;
                work.add(pool.submit(() -> {
                    Pointer p = Native.allocate(16384);
                    byte[] b = new byte[16384];
                    for (int off = 0; off < bytes; off += b.length) {
                        for (int j = 0; j < b.length; j++) {
                            b[j] = pattern(flow, off + j);
                        }
                        TcpSockets.writeFully(s, p, b, 0, b.length);
                    }
                    return null;
                }));
                work.add(pool.submit(() -> {
                    Pointer p = Native.allocate(16384);
                    byte[] b = new byte[16384];
                    for (int off = 0; off < bytes; ) {
                        int n = TcpSockets.read(s, p, b, 0, Math.min(b.length, bytes - off));
                        assertTrue(n > 0, "flow " + flow + ": echo ended after " + off + " bytes");
                        for (int j = 0; j < n; j++) {
                            if (b[j] != pattern(flow, off + j)) {
                                throw new AssertionError("flow " + flow + ": byte " + (off + j) + " differs");
                            }
                        }
                        off += n;
                    }
                    return null;
                }));
            }
            for (Future<?> w : work) {
                w.get(120, TimeUnit.SECONDS);
            }
            // a pause holds the rings' eventfd with the rest of the NAT's group; the resume delivers
            for (int k = 0; k < nats.length; k++) {
                int loop = k;
                nats[k].eventLoop().call(() -> {
                    handler.get().pauseLoop(loop);
                    return null;
                }, 10_000);
            }
            echoRound(socks, "paused", true, false);
            for (int k = nats.length - 1; k >= 0; k--) {
                int loop = k;
                nats[k].eventLoop().call(() -> {
                    handler.get().resumeLoop(loop);
                    return null;
                }, 10_000);
            }
            echoRound(socks, "paused", false, true);
            long handed = counter(c, "handover.packets");
            System.out.printf("threads = 2, no steering program: %d flows x %d KiB each way, %d packets handed over,"
                    + " %d dropped at a full ring%n", flows, bytes >> 10, handed, counter(c, "drops.handover_full"));
            assertTrue(handed > 0, "the kernel's flow table put some packets on the other loop's queue");
            assertEquals(0, counter(c, "drops.tun_other_loop"), "no packet dropped for being on another loop's queue");
            assertEquals(0, counter(c, "errors.tun_steering_unavailable"), "off is a choice, not an error");
            socks.forEach(Fd::close);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (status(c).getStatus().getTasksActive() > 0 && System.nanoTime() < deadline) {
                Thread.sleep(100);
            }
            assertEquals(0, status(c).getStatus().getTasksActive(), "every flow ended after FIN both ways");
            assertTrue(ramp.errors.isEmpty(), ramp.errors.toString());
        }
    }

    @Test
    void slotExhaustionIsAClearErrorAndTheNextFlowAfterQuarantineWorks(TestNetwork net) throws Exception {
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("bb.sock"),
                "audit.path = /dev/null\nbumblebee.slots = 2\nbumblebee.quarantine = 500ms\n"
                        + "bumblebee.close_linger = 100ms\n");
                ControlClient c = ControlClient.connect(d.control);
                OnRamp ramp = new OnRamp(net.namespace("onramp").name, c, this::echo)) {
            Fd a = connect(ramp, "198.18.99.9", 80);
            Fd b = connect(ramp, "198.18.99.9", 81);
            // a third flow, handed over directly: no slot is free
            int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
            try (Fd mine = Fd.adopt(sv[0]); Fd theirs = Fd.adopt(sv[1]);
                    Reply r = c.call(Request.newBuilder().setUpgrade(Upgrade.newBuilder().setFdFlow(0)), List.of(theirs))
                            .get(10, TimeUnit.SECONDS)) {
                assertEquals(Error.Code.RESOURCE_EXHAUSTED, r.response().getError().getCode(), r.toString());
                assertTrue(r.response().getError().getMessage().contains("no free NAT slot"));
            }
            a.close();
            b.close();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            Fd next = null;
            while (next == null && System.nanoTime() < deadline) {
                if (status(c).getStatus().getTasksActive() == 0) {
                    Thread.sleep(700); // the quarantine
                    next = connect(ramp, "198.18.99.9", 82);
                } else {
                    Thread.sleep(50);
                }
            }
            try (Fd n = next) {
                Pointer p = Native.allocate(16);
                TcpSockets.writeFully(n, p, "again".getBytes(), 0, 5);
                byte[] got = new byte[5];
                assertEquals(5, TcpSockets.read(n, p, got, 0, 5));
                assertArrayEquals("again".getBytes(), got);
            }
            assertEquals(1, status(c).getStatus().getCountersOrDefault("upgrades.refused_no_slot", 0));
        }
    }

    @Test
    void malformedPacketsAreDroppedAndCountedWhileAnotherFlowWorks(TestNetwork net) throws Exception {
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("bb.sock"), "audit.path = /dev/null\n");
                ControlClient c = ControlClient.connect(d.control);
                OnRamp ramp = new OnRamp(net.namespace("onramp").name, c, this::echo)) {
            Fd good = connect(ramp, "198.18.99.9", 80);
            int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
            Fd hostile = Fd.adopt(sv[0]);
            try (Fd theirs = Fd.adopt(sv[1])) {
                CompletableFuture<Reply> pending = c.call(Request.newBuilder()
                        .setUpgrade(Upgrade.newBuilder().setFdFlow(0)), List.of(theirs));
                pending.whenComplete((r, e) -> {
                    if (r != null) {
                        r.close();
                    }
                });
            }
            byte[] syn = Hostile.syn();
            byte[][] bad = {
                java.util.Arrays.copyOf(syn, 10), // truncated
                Hostile.with(syn, 0, 0x44), // IHL 4
                Hostile.withOptions(syn), // IPv4 options
                Hostile.fragment(syn), // MF set
                Hostile.protocol(syn, 47), // GRE
                Hostile.v6Extension(), // hop-by-hop header
                Hostile.with(syn, 0, 0x75), // version 7
                Hostile.ack(syn), // not a flow start
            };
            Pointer p = Native.allocate(256);
            for (byte[] pkt : bad) {
                p.put(0, pkt, 0, pkt.length);
                assertEquals(pkt.length, Native.send(hostile.get(), p, pkt.length, Native.MSG_NOSIGNAL));
            }
            // the good flow goes on working meanwhile
            TcpSockets.writeFully(good, p, "still fine".getBytes(), 0, 10);
            byte[] got = new byte[10];
            int off = 0;
            while (off < 10) {
                off += TcpSockets.read(good, p, got, off, 10 - off);
            }
            assertArrayEquals("still fine".getBytes(), got);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            Response st;
            do {
                st = status(c);
                Thread.sleep(20);
            } while (st.getStatus().getCountersOrDefault("drops.not_a_flow_start", 0) == 0 && System.nanoTime() < deadline);
            var counters = st.getStatus().getCountersMap();
            for (String reason : List.of("truncated", "bad_ihl", "ipv4_options", "fragment", "unsupported_protocol",
                    "ipv6_extension", "bad_version", "not_a_flow_start")) {
                assertEquals(1L, counters.getOrDefault("drops." + reason, 0L), reason + " in " + counters);
            }
            hostile.close();
            good.close();
        }
    }

    @Test
    void theKernelsSynAckCarriesAnMssClampedToTheFlowsMtu(TestNetwork net) throws Exception {
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("bb.sock"), "audit.path = /dev/null\n");
                ControlClient c = ControlClient.connect(d.control)) {
            int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
            Fd mine = Fd.adopt(sv[0]);
            CompletableFuture<Reply> upgraded;
            try (Fd theirs = Fd.adopt(sv[1])) {
                upgraded = c.call(Request.newBuilder().setUpgrade(Upgrade.newBuilder().setFdFlow(0).setMtu(1280)),
                        List.of(theirs));
            }
            // a SYN offering MSS 1460
            ByteBuffer b = ByteBuffer.allocate(44);
            b.put(0, Hostile.syn(), 0, 40);
            b.putShort(2, (short) 44).put(32, (byte) 0x60);
            b.put(40, (byte) 2).put(41, (byte) 4).putShort(42, (short) 1460);
            Hostile.fixIp(b);
            warren.packet.PacketView v = new warren.packet.PacketView();
            assertEquals(warren.packet.DropReason.NONE, v.parse(b, 0, 44, new warren.packet.FlowKey()));
            v.fixChecksums();
            Pointer p = Native.allocate(2048);
            p.put(0, b.array(), 0, 44);
            Native.send(mine.get(), p, 44, Native.MSG_NOSIGNAL);
            assertTrue((Native.pollOne(mine.get(), Native.POLLIN, 5000) & Native.POLLIN) != 0, "a SYN-ACK");
            long n = Native.recv(mine.get(), p, 2048, 0);
            byte[] synAck = new byte[(int) n];
            p.get(0, synAck, 0, synAck.length);
            ByteBuffer sa = ByteBuffer.wrap(synAck);
            warren.packet.FlowKey k = new warren.packet.FlowKey();
            assertEquals(warren.packet.DropReason.NONE, v.parse(sa, 0, synAck.length, k));
            assertEquals("tcp 198.18.99.9:80 -> 198.18.50.1:5555", k.toString(), "reverse-NATed to the original");
            assertEquals(0x12, v.tcpFlags() & 0x12, "SYN-ACK");
            assertEquals(v.computeL4Checksum(), v.storedL4Checksum());
            int mss = -1;
            for (int i = 40; i + 3 < v.payloadOffset(); ) {
                int kind = synAck[i] & 0xFF;
                if (kind == 1) {
                    i++;
                    continue;
                }
                if (kind == 2) {
                    mss = ((synAck[i + 2] & 0xFF) << 8) | (synAck[i + 3] & 0xFF);
                    break;
                }
                if (kind == 0) {
                    break;
                }
                i += synAck[i + 1] & 0xFF;
            }
            assertEquals(1280 - 40, mss, "MSS clamped to the flow's MTU");
            mine.close();
            upgraded.whenComplete((r, e) -> {
                if (r != null) {
                    r.close();
                }
            });
        }
    }

    /** A TCP segment 198.18.50.1:5555 -> 198.18.99.9:80 with the given flags, numbers and payload. */
    static byte[] segment(int flags, long seq, long ack, int mssOption, int payload) {
        int opt = mssOption > 0 ? 4 : 0;
        int len = 40 + opt + payload;
        ByteBuffer b = ByteBuffer.allocate(len);
        b.put(0, (byte) 0x45).putShort(2, (short) len).put(6, (byte) 0x40).put(8, (byte) 64).put(9, (byte) 6);
        b.put(12, new byte[] {(byte) 198, 18, 50, 1}).put(16, new byte[] {(byte) 198, 18, 99, 9});
        b.putShort(20, (short) 5555).putShort(22, (short) 80).putInt(24, (int) seq).putInt(28, (int) ack);
        b.put(32, (byte) ((5 + opt / 4) << 4)).put(33, (byte) flags).putShort(34, (short) 65535);
        if (opt > 0) {
            b.put(40, (byte) 2).put(41, (byte) 4).putShort(42, (short) mssOption);
        }
        Hostile.fixIp(b);
        warren.packet.PacketView v = new warren.packet.PacketView();
        assertEquals(warren.packet.DropReason.NONE, v.parse(b, 0, len, new warren.packet.FlowKey()));
        v.fixChecksums();
        return b.array();
    }

    private static void send(Fd flow, byte[] pkt) {
        Pointer p = Native.allocate(pkt.length);
        p.put(0, pkt, 0, pkt.length);
        assertEquals(pkt.length, Native.send(flow.get(), p, pkt.length, Native.MSG_NOSIGNAL));
    }

    private static ByteBuffer receive(Fd flow) throws Exception {
        assertTrue((Native.pollOne(flow.get(), Native.POLLIN, 5000) & Native.POLLIN) != 0, "a packet from the kernel");
        Pointer p = Native.allocate(65536);
        long n = Native.recv(flow.get(), p, 65536, 0);
        byte[] got = new byte[(int) n];
        p.get(0, got, 0, got.length);
        return ByteBuffer.wrap(got);
    }

    private Fd theirEnd;

    /** A fresh flow socketpair: returns our end, keeps theirs for {@link #handshake}. */
    private Fd newFlow() throws Exception {
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
        theirEnd = Fd.adopt(sv[1]);
        return Fd.adopt(sv[0]);
    }

    /**
     * Hands the flow to Bumblebee (Upgrade) and makes a TCP handshake by hand on it: a SYN from
     * 198.18.50.1:5555 to 198.18.99.9:80 offering MSS 1460, the kernel's SYN-ACK, our ACK.
     */
    private CompletableFuture<Reply> handshake(ControlClient c, Fd flow) throws Exception {
        CompletableFuture<Reply> upgraded;
        try (Fd theirs = theirEnd) {
            upgraded = c.call(Request.newBuilder().setUpgrade(Upgrade.newBuilder().setFdFlow(0)), List.of(theirs));
        }
        send(flow, segment(0x02, 1000, 0, 1460, 0));
        ByteBuffer synAck = receive(flow);
        assertEquals(0x12, synAck.get(33) & 0x12, "the kernel answers the SYN");
        send(flow, segment(0x10, 1001, (synAck.getInt(24) & 0xFFFFFFFFL) + 1, 0, 0));
        return upgraded;
    }

    @Test
    void aFragmentationNeededFromTheFlowSideLowersTheKernelsPathMtu(TestNetwork net) throws Exception {
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("bb.sock"), "audit.path = /dev/null\n");
                ControlClient c = ControlClient.connect(d.control)) {
            Fd flow = newFlow();
            CompletableFuture<Reply> upgraded = handshake(c, flow);
            try (Reply r = upgraded.get(10, TimeUnit.SECONDS); Fd s = r.takeFd(0)) {
                // the kernel sends a full-sized segment...
                byte[] data = new byte[3000];
                TcpSockets.writeFully(s, Native.allocate(4096), data, 0, data.length);
                ByteBuffer seg = receive(flow);
                assertTrue(seg.capacity() > 1000, "a segment larger than the path will take: " + seg.capacity());
                // ...and the flow's side says it is too big for a 1000-byte hop
                ByteBuffer icmp = ByteBuffer.allocate(20 + 8 + 28);
                icmp.put(0, (byte) 0x45).putShort(2, (short) 56).put(8, (byte) 64).put(9, (byte) 1);
                icmp.put(12, new byte[] {(byte) 198, 18, 50, (byte) 254}).put(16, seg, 12, 4); // to the sender
                icmp.put(20, (byte) 3).put(21, (byte) 4).putShort(26, (short) 1000);
                icmp.put(28, seg, 0, 28);
                Hostile.fixIp(icmp);
                warren.packet.PacketView v = new warren.packet.PacketView();
                assertEquals(warren.packet.DropReason.NONE, v.parse(icmp, 0, 56, new warren.packet.FlowKey()));
                v.fixChecksums();
                send(flow, icmp.array());
                Pointer ti = Native.allocate(256);
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
                int pmtu;
                do {
                    Native.getsockopt(s.get(), Native.IPPROTO_TCP, Native.TCP_INFO, ti, 256);
                    pmtu = ti.getInt(60); // tcpi_pmtu
                    Thread.sleep(20);
                } while (pmtu != 1000 && System.nanoTime() < deadline);
                assertEquals(1000, pmtu, "the kernel's TCP took the translated ICMP error");
                assertEquals(1, status(c).getStatus().getCountersOrDefault("icmp.to_kernel", 0));
            }
            flow.close();
        }
    }

    @Test
    void aReusedSlotWorksWhileItsPreviousKernelConnectionStillLingers(TestNetwork net) throws Exception {
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("bb.sock"),
                "audit.path = /dev/null\nbumblebee.slots = 1\nbumblebee.quarantine = 50ms\n");
                ControlClient c = ControlClient.connect(d.control)) {
            for (int round = 0; round < 3; round++) {
                Fd flow = newFlow();
                CompletableFuture<Reply> upgraded = handshake(c, flow);
                try (Reply r = upgraded.get(10, TimeUnit.SECONDS)) {
                    assertEquals(Response.BodyCase.UPGRADED, r.response().getBodyCase(), r.toString());
                    r.takeFd(0).close(); // the kernel sends a FIN nobody will ever ACK: it lingers
                }
                flow.close(); // the flow ends; the only slot rests 50 ms, then the next round reuses it
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
                while (status(c).getStatus().getTasksActive() > 0 && System.nanoTime() < deadline) {
                    Thread.sleep(10);
                }
                Thread.sleep(100);
            }
        }
    }

    @Test
    void anIcmpErrorTheKernelSendsAboutAFlowReachesTheFlowWithItsInnerHeaderMappedBack(TestNetwork net) throws Exception {
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("bb.sock"), "audit.path = /dev/null\n");
                ControlClient c = ControlClient.connect(d.control)) {
            Fd flow = newFlow();
            CompletableFuture<Reply> upgraded = handshake(c, flow);
            try (Reply r = upgraded.get(10, TimeUnit.SECONDS); Fd s = r.takeFd(0)) {
                warren.control.v1.FiveTuple t = r.response().getUpgraded().getTranslated();
                // The kernel inside Bumblebee's namespace sends a "port unreachable" about the flow's
                // NAT-ed packet (pool:port -> listener) to the pool address, from a raw socket there.
                ByteBuffer icmp = ByteBuffer.allocate(8 + 28);
                icmp.put(0, (byte) 3).put(1, (byte) 3);
                ByteBuffer quoted = ByteBuffer.wrap(segment(0x10, 1001, 0, 0, 0));
                quoted.put(12, t.getSrcIp().toByteArray()).put(16, t.getDstIp().toByteArray());
                quoted.putShort(20, (short) t.getSrcPort()).putShort(22, (short) t.getDstPort());
                Hostile.fixIp(quoted);
                icmp.put(8, quoted.array(), 0, 28);
                icmp.putShort(2, (short) Checksum.finish(Checksum.sum(icmp, 0, icmp.capacity())));
                int nsFd = BumblebeeTest.netnsFd();
                Netns.call("/proc/self/fd/" + nsFd, () -> {
                    int raw = Native.socket(Native.AF_INET, Native.SOCK_RAW | Native.SOCK_CLOEXEC, 1);
                    try (Fd rs = Fd.adopt(raw)) {
                        byte[] to = Native.sockaddr(new InetSocketAddress(
                                InetAddress.getByAddress(t.getSrcIp().toByteArray()), 0));
                        Pointer p = Native.allocate(64);
                        p.put(0, icmp.array(), 0, icmp.capacity());
                        Pointer sa = Native.allocate(to.length);
                        sa.put(0, to, 0, to.length);
                        assertTrue(Native.sendto(rs.get(), p, icmp.capacity(), 0, sa, to.length) > 0, "sent");
                    }
                    return null;
                });
                ByteBuffer got = receive(flow);
                warren.packet.PacketView v = new warren.packet.PacketView();
                warren.packet.FlowKey outer = new warren.packet.FlowKey();
                assertEquals(warren.packet.DropReason.NONE, v.parse(got, 0, got.capacity(), outer));
                assertEquals(1, outer.protocol, "an ICMP error: " + outer);
                assertEquals(v.computeL4Checksum(), v.storedL4Checksum(), "ICMP checksum right");
                warren.packet.FlowKey inner = new warren.packet.FlowKey();
                assertTrue(warren.packet.IcmpError.innerKey(v, got, inner));
                assertEquals("tcp 198.18.50.1:5555 -> 198.18.99.9:80", inner.toString(), "the flow's own packet, mapped back");
                assertEquals("198.18.50.1", InetAddress.getByAddress(java.util.Arrays.copyOf(outer.dst, 4)).getHostAddress(),
                        "addressed to the flow's client");
                assertEquals(1, status(c).getStatus().getCountersOrDefault("icmp.to_flow", 0));
            }
            flow.close();
        }
    }

    /** Hostile packets built from a good SYN. */
    static final class Hostile {
        private Hostile() {}

        static byte[] syn() {
            ByteBuffer b = ByteBuffer.allocate(40);
            b.put(0, (byte) 0x45).putShort(2, (short) 40).put(8, (byte) 64).put(9, (byte) 6);
            b.put(12, new byte[] {(byte) 198, 18, 50, 1}).put(16, new byte[] {(byte) 198, 18, 99, 9});
            b.putShort(20, (short) 5555).putShort(22, (short) 80).put(32, (byte) 0x50).put(33, (byte) 0x02);
            fixIp(b);
            return b.array();
        }

        static void fixIp(ByteBuffer b) {
            b.putShort(10, (short) 0);
            long sum = 0;
            for (int i = 0; i < 20; i += 2) {
                sum += ((b.get(i) & 0xFF) << 8) | (b.get(i + 1) & 0xFF);
            }
            while ((sum >>> 16) != 0) {
                sum = (sum & 0xFFFF) + (sum >>> 16);
            }
            b.putShort(10, (short) ~sum);
        }

        static byte[] with(byte[] pkt, int off, int value) {
            byte[] c = pkt.clone();
            c[off] = (byte) value;
            ByteBuffer b = ByteBuffer.wrap(c);
            if (off != 0 || (value >>> 4) == 4) {
                fixIp(b);
            }
            return c;
        }

        static byte[] withOptions(byte[] pkt) {
            ByteBuffer b = ByteBuffer.allocate(44);
            b.put(0, pkt, 0, 20).put(24, pkt, 20, 20);
            b.put(0, (byte) 0x46).putShort(2, (short) 44);
            b.put(20, (byte) 1).put(21, (byte) 1).put(22, (byte) 1).put(23, (byte) 0);
            return b.array();
        }

        static byte[] fragment(byte[] pkt) {
            byte[] c = pkt.clone();
            c[6] = 0x20; // more fragments
            fixIp(ByteBuffer.wrap(c));
            return c;
        }

        static byte[] protocol(byte[] pkt, int proto) {
            byte[] c = pkt.clone();
            c[9] = (byte) proto;
            fixIp(ByteBuffer.wrap(c));
            return c;
        }

        static byte[] ack(byte[] pkt) {
            byte[] c = pkt.clone();
            c[33] = 0x10;
            return c;
        }

        static byte[] v6Extension() {
            ByteBuffer b = ByteBuffer.allocate(40 + 8 + 20);
            b.put(0, (byte) 0x60).putShort(4, (short) 28).put(6, (byte) 0).put(7, (byte) 64);
            b.put(8, (byte) 0xfd).put(23, (byte) 1).put(24, (byte) 0xfd).put(39, (byte) 2);
            b.put(40, (byte) 6); // hop-by-hop: next header TCP
            return b.array();
        }
    }
}
