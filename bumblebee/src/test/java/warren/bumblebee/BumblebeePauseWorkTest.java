package warren.bumblebee;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.bumblebee.nat.Nat;
import warren.daemon.Daemon;
import warren.daemon.control.Call;
import warren.daemon.control.ControlServer;
import warren.daemon.handoff.HandoffItem;
import warren.daemon.testing.RunningDaemon;
import warren.fdpass.Fd;
import warren.fdpass.SeqpacketSocket;
import warren.fdpass.libc.Native;
import warren.handoff.v1.BumblebeeState;
import warren.handoff.v1.ControlConnection;
import warren.handoff.v1.ControlState;
import warren.handoff.v1.FlowCopyKey;
import warren.handoff.v1.FlowState;
import warren.handoff.v1.PendingCall;
import warren.handoff.v1.RelayState;
import warren.netns.testing.NetnsExtension;

/**
 * Bumblebee's pause is O(changed), not O(flows), on both sides (issue 16, as
 * daemon's PauseWorkTest for Splicer): a table holding N idle pre-copied flows (the handler's
 * rehearsal chunk: every other one UDP), their calls pre-copied on one connection, takes a
 * delta in which one flow moved (an update of its counts) and one ended (its key, its call named
 * gone). During the pre-copy every flow got its call and task ({@code UpgradeHandler.preAttach});
 * the pause's adoption then visits the same number of calls and flows with 10 as with 2,000
 * flows. Before that, deltas the pre-attached calls contradict are refused and change nothing: a
 * flow ended whose call is still pending, a flow updated out of life whose call is still
 * pending. Then the same table is the old side of the next upgrade: pre-copied while it serves
 * (every loop's chunks until empty), paused and exported as a delta, whose writing visits only
 * the flows on the loops' changed lists: as many with 10 as with 2,000 idle flows, none here
 * (comparing every slot, as before, visited all of the table's 4,096). Counts work, not time.
 * In-process, on a daemon's own tables (the successor's path without a predecessor: the
 * warm-up's), on its loop thread.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class BumblebeePauseWorkTest {
    @TempDir
    Path dir;

    /** One adoption: calls pre-attached, calls/connections and flows/pairs the pause visited, tasks after. */
    private record Work(long attachedBeforePause, long newCalls, long newFlows, long tasksAfter, int unclaimed,
            long oldVisits) {}

    @Test
    void thePauseVisitsTheSameCallsAndFlowsWith10And2000IdlePreCopiedFlows() throws Exception {
        Work small = adopt(10, "a");
        Work large = adopt(2000, "b");
        System.out.println("Bumblebee pause work, 10 flows: " + small + "; 2,000 flows: " + large);
        assertEquals(10, small.attachedBeforePause(), "every pre-copied flow got its call and task in the pre-copy");
        assertEquals(2000, large.attachedBeforePause(), "every pre-copied flow got its call and task in the pre-copy");
        assertEquals(small.newCalls(), large.newCalls(), "calls and connections visited by the control server's adoption");
        assertEquals(small.newFlows(), large.newFlows(), "flows and relay pairs visited by the table's adoption");
        assertTrue(large.newFlows() <= 2 && large.newCalls() <= 2, large.toString());
        assertEquals(9, small.tasksAfter(), "the ended flow's task is gone, the others live on");
        assertEquals(1999, large.tasksAfter());
        assertEquals(0, large.unclaimed());
        // the old side: the same table pre-copied while serving, then paused; its export visits only what changed
        assertEquals(small.oldVisits(), large.oldVisits(), "flows the old side's export visited");
        assertTrue(large.oldVisits() <= 2, "the old side's export compared " + large.oldVisits() + " flows for an idle table");
    }

    /**
     * The warm-up hands its rehearsal no delta; the handler then adopts one as a real
     * predecessor's pause would send for an idle table (an update of one flow and the relay's
     * item), so that code runs before it counts.
     */
    @Test
    void theWarmUpsEmptyDeltaRehearsesARealOne() throws Exception {
        Work w = adopt(10, "c", true);
        assertEquals(1, w.newFlows(), "the rehearsal's update of slot 0");
        assertEquals(10, w.tasksAfter());
        assertEquals(0, w.unclaimed());
    }

    /**
     * The warm-up ({@code Upgrade.warmUp}, as a successor runs it before its hello) rehearses
     * Bumblebee's successor path: its throwaway daemon builds tables of its own on
     * {@code Environment.detached} (socket pairs, no namespace, no TUN), pre-adopts the rehearsal
     * chunk, ties the calls, adopts a delta, pauses, exports and abandons; afterwards the
     * process has exactly the fds it had before (the second warm-up: the first one's lazily
     * opened fds of the JVM and jnr are not the rehearsal's).
     */
    @Test
    void theWarmUpRehearsesTheSuccessorsPathOnTablesOfItsOwnAndLeavesNoFd() throws Exception {
        AtomicReference<UpgradeHandler> handler = new AtomicReference<>();
        warren.daemon.DaemonSpec spec = BumblebeeFlowsTest.keepingHandler(handler);
        warren.daemon.config.Config config = warren.daemon.config.Config.parse("audit.path = /dev/null\n",
                Daemon.configKeys(spec), "test");
        warren.daemon.WarmUps.run(spec, config);
        assertTrue(handler.get().rehearsed() > 0, "the first warm-up rehearsed nothing");
        java.util.Set<String> before = warren.fdpass.FdCount.snapshot();
        int count = warren.fdpass.FdCount.now();
        List<String> preCopies = warren.daemon.WarmUps.run(spec, config);
        UpgradeHandler h = handler.get();
        System.out.println("Bumblebee warm-up: the rehearsal adopted " + h.rehearsed() + " pre-copied flows (delta: "
                + h.adoptVisits() + " flows and pairs visited)");
        assertTrue(h.rehearsed() > 0, "the warm-up pre-adopted flows and took them through a delta");
        assertEquals(1, h.adoptVisits(), "the rehearsal's delta: an update of slot 0");
        assertEquals(Nat.PRE_COPY_ITEMS, preCopies, "what the successor's hello lists");
        assertEquals(java.util.Set.of(), warren.fdpass.FdCount.openedSince(before), "fds the warm-up left open");
        assertEquals(count, warren.fdpass.FdCount.awaitCount(count), "/proc/self/fd back to its count");
    }

    private Work adopt(int n, String tag) throws Exception {
        return adopt(n, tag, false);
    }

    private Work adopt(int n, String tag, boolean rehearsal) throws Exception {
        AtomicReference<UpgradeHandler> handler = new AtomicReference<>();
        List<Fd> fds = new ArrayList<>();
        SeqpacketSocket[] pair = SeqpacketSocket.pair();
        try (SeqpacketSocket keep = pair[1];
                RunningDaemon rd = new RunningDaemon(BumblebeeFlowsTest.keepingHandler(handler), dir.resolve(tag + ".sock"),
                        "audit.path = /dev/null\n")) {
            Daemon d = rd.daemon;
            UpgradeHandler h = handler.get();
            for (int i = 0; i < 2 * n; i++) {
                fds.add(Fd.adopt(Native.fcntl(pair[0].fd().get(), Native.F_DUPFD_CLOEXEC, 0)));
            }
            Fd connection = Fd.adopt(Native.fcntl(pair[0].fd().get(), Native.F_DUPFD_CLOEXEC, 0));
            fds.add(connection);
            return d.loop().call(() -> {
                ControlServer s = d.server();
                List<HandoffItem> chunk = h.rehearsalItems(n, fds.subList(0, 2 * n)); // slots 0..n-1, call refs 1..n
                int slots = BumblebeeState.parseFrom(chunk.get(0).payload()).getSlots();
                ControlConnection.Builder conn = ControlConnection.newBuilder().setNumber(1).setFd(0);
                for (int i = 0; i < n; i++) {
                    conn.addCalls(PendingCall.newBuilder().setRef(i + 1).setId(i + 1).setTask(i + 1).setKind("upgrade")
                            .setStartUnixNanos(1).setAgeNanos(1).setAcceptedSent(true));
                }
                long before = d.tasks().active();
                s.preAdoptCalls(ControlState.newBuilder().setFormat(1).addConnections(conn).build());
                h.preAdopt(1, chunk);
                h.preAttach(s::preCopiedCall, s::preAdoptTask);
                long attached = d.tasks().active() - before;

                // the pause: the connection again (no call changed), the call of slot 1's flow gone
                ControlState.Builder csb = ControlState.newBuilder().setFormat(1).setFdListener(0).setNextClient(2)
                        .setNextTask(n + 1).setCallsDelta(true).addConnections(ControlConnection.newBuilder()
                                .setNumber(1).setFd(1));
                if (!rehearsal) {
                    csb.addGoneCalls(2);
                }
                Map<Long, Call> calls = s.adoptConnections(csb.build(), List.of(s.listenerFd(), connection));
                if (rehearsal) {
                    h.adopt(1, List.of(), calls::get, s::adoptTask);
                    Work w = new Work(attached, s.adoptVisits(), h.adoptVisits(), d.tasks().active(), s.failUnclaimed(), 0);
                    h.pauseAndExport(s::callRef);
                    h.abandon();
                    s.abandonAfterHandoff();
                    return w;
                }
                long newCalls = s.adoptVisits();
                BumblebeeState.Builder delta = BumblebeeState.newBuilder().setFormat(1).setSlots(slots).setDelta(true);
                FlowState moved = FlowState.newBuilder().setSlot(0).setGeneration(1).setUpdate(true).setStateValue(2)
                        .setPacketsIn(5).setNatPort(20000).build();
                long tasks = d.tasks().active();
                // refused, nothing changed: slot 3's flow ended but its call (tied in the pre-copy) is not gone
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> h.adopt(1,
                        items(delta.clone().addEnded(key(3)).build()), calls::get, s::adoptTask));
                assertTrue(e.getMessage().contains("still pending"), e.getMessage());
                // refused: slot 5's flow updated out of life (quarantined), its call not gone
                e = assertThrows(IllegalArgumentException.class, () -> h.adopt(1, items(delta.clone().addFlows(
                        FlowState.newBuilder().setSlot(5).setGeneration(1).setUpdate(true).setStateValue(3)).build()),
                        calls::get, s::adoptTask));
                assertTrue(e.getMessage().contains("still pending"), e.getMessage());
                assertEquals(tasks, d.tasks().active(), "a refused delta changed no task");
                assertEquals(n, liveFlows(h), "a refused delta changed no flow");

                h.adopt(1, items(delta.addFlows(moved).addEnded(key(1)).build()), calls::get, s::adoptTask);
                long newFlows = h.adoptVisits();
                int unclaimed = s.failUnclaimed();
                long after = d.tasks().active();
                assertEquals(n - 1, liveFlows(h), "slot 1's flow ended");
                // now the old side of the next upgrade: this table pre-copied while it serves (every loop's
                // chunks until empty; their duplicates closed, as the sender does once sent), then paused
                // and exported: a delta per loop
                for (int k = 0; k < h.nats().length; k++) {
                    for (List<HandoffItem> c = h.preCopyLoop(k, s::taskRef, 1024); !c.isEmpty();
                            c = h.preCopyLoop(k, s::taskRef, 1024)) {
                        for (HandoffItem it : c) {
                            Fd.closeAll(it.fds());
                        }
                    }
                }
                List<HandoffItem> out = h.pauseAndExport(s::callRef);
                long oldVisits = h.exportVisits();
                int tables = 0;
                for (HandoffItem it : out) {
                    if (it.name().equals(Nat.STORE_ITEM)) {
                        tables++;
                        BumblebeeState oldDelta = BumblebeeState.parseFrom(it.payload());
                        assertTrue(oldDelta.getDelta(), "a delta after the pre-copy");
                        assertEquals(0, oldDelta.getFlowsCount() + oldDelta.getEndedCount(), "nothing moved in an idle table");
                    }
                }
                assertEquals(h.nats().length, tables, "a table delta per loop");
                // as the warm-up leaves its throwaway daemon: everything forgotten, this process's fds closed
                h.abandon();
                s.abandonAfterHandoff();
                return new Work(attached, newCalls, newFlows, after, unclaimed, oldVisits);
            }, 60_000);
        } finally {
            pair[0].close();
            Fd.closeAll(fds);
        }
    }

    private static List<HandoffItem> items(BumblebeeState delta) {
        return List.of(new HandoffItem(Nat.STORE_ITEM, delta.toByteArray(), List.of()),
                new HandoffItem(Nat.STORE_ITEM + ".relay", RelayState.newBuilder().setFormat(1).build().toByteArray(),
                        List.of()));
    }

    private static FlowCopyKey key(int slot) {
        return FlowCopyKey.newBuilder().setSlot(slot).setGeneration(1).build();
    }

    private static int liveFlows(UpgradeHandler h) {
        int n = 0;
        for (Nat nat : h.nats()) {
            n += nat.liveFlows();
        }
        return n;
    }
}
