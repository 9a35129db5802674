package warren.bumblebee.nat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;
import warren.control.v1.EndReason;
import warren.control.v1.Error;
import warren.daemon.handoff.HandoffItem;
import warren.handoff.v1.BumblebeeState;
import warren.handoff.v1.FlowState;
import warren.handoff.v1.PendingCall;
import warren.handoff.v1.RelayState;
import warren.handoff.v1.StoredTask;
import warren.handoff.v1.StoredTasks;

/**
 * What a successor reads (FlowStore.inherited): the handoff's two items, or after a crash the fd
 * store's tasks renumbered behind the environment's extras; and the typed end reasons' mapping.
 */
class FlowStoreTest {
    private static final int SLOTS = 16;

    @Test
    void aCrashRecoveryRebuildsTheTableBehindTheExtras() throws Exception {
        // recovery hands the extras in its own order, then each task's fds
        List<String> extras = List.of("x.tun", "x.netns", "x.listen6", "x.listen4");
        StoredTasks.Builder stored = StoredTasks.newBuilder().addAllExtras(extras);
        FlowState udp = FlowState.newBuilder().setSlot(3).setStateValue(Flow.ACTIVE).setUdp(true).setFdFlow(0).setFdUdp(1)
                .setIdleMs(5000).setVnetHdr(true).build();
        FlowState tcp = FlowState.newBuilder().setSlot(9).setStateValue(Flow.RESERVED).setFdFlow(0).build();
        stored.addTasks(task(41, udp)).addFdCounts(2).addTasks(task(42, tcp)).addFdCounts(1);
        Nat.Inherited in = FlowStore.inherited(
                List.of(new HandoffItem(FlowStore.RECOVERED_ITEM, stored.build().toByteArray(), List.of())), SLOTS, 1500);
        BumblebeeState st = in.state();
        assertEquals(0, st.getFdTun());
        assertEquals(1, st.getFdNetns());
        assertEquals(3, st.getFdListen4());
        assertEquals(2, st.getFdListen6());
        assertEquals(SLOTS, st.getSlots());
        assertEquals(2, st.getFlowsCount());
        assertEquals(41, st.getFlows(0).getCallRef(), "a recovered flow's request is its task");
        assertEquals(4, st.getFlows(0).getFdFlow(), "behind the four extras");
        assertEquals(5, st.getFlows(0).getFdUdp());
        assertEquals(0, st.getFlows(0).getIdleMs(), "idle starts over");
        assertTrue(st.getFlows(0).getVnetHdr(), "a vnet_hdr flow stays one");
        assertEquals(6, st.getFlows(1).getFdFlow(), "behind the first task's two fds");
        assertTrue(in.relayStates().isEmpty(), "no downgrade was stored");
        assertTrue(in.relayFds().isEmpty());
    }

    @Test
    void aRecoveryWithoutTheEnvironmentOrOfAnotherItemIsRefused() {
        StoredTasks noTun = StoredTasks.newBuilder().addExtras("x.netns").addExtras("x.listen4").addExtras("x.listen6")
                .build();
        assertThrows(IllegalArgumentException.class, () -> FlowStore.inherited(
                List.of(new HandoffItem(FlowStore.RECOVERED_ITEM, noTun.toByteArray(), List.of())), SLOTS, 1500));
        StoredTasks fish = StoredTasks.newBuilder().addExtras("x.netns").addExtras("x.tun").addExtras("x.listen4")
                .addExtras("x.listen6").addTasks(StoredTask.newBuilder().setItem("fish.egress")).addFdCounts(0).build();
        assertThrows(IllegalArgumentException.class, () -> FlowStore.inherited(
                List.of(new HandoffItem(FlowStore.RECOVERED_ITEM, fish.toByteArray(), List.of())), SLOTS, 1500));
    }

    @Test
    void aHandoffNeedsBothItemsAndTheSameSlotCount() throws Exception {
        BumblebeeState table = BumblebeeState.newBuilder().setFormat(FlowTableCodec.FORMAT).setSlots(SLOTS).setMtu(1500)
                .setFdNetns(0).setFdTun(1).setFdListen4(2).setFdListen6(3).build();
        HandoffItem t = new HandoffItem(FlowStore.ITEM, table.toByteArray(), List.of());
        HandoffItem r = new HandoffItem(FlowStore.RELAY_ITEM, RelayState.newBuilder().setFormat(1).build().toByteArray(),
                List.of());
        assertEquals(table, FlowStore.inherited(List.of(t, r), SLOTS, 1500).state());
        assertThrows(IllegalArgumentException.class, () -> FlowStore.inherited(List.of(t), SLOTS, 1500));
        assertThrows(IllegalArgumentException.class, () -> FlowStore.inherited(List.of(t, r), SLOTS * 2, 1500));
        assertThrows(IllegalArgumentException.class, () -> FlowStore.inherited(
                List.of(t, r, new HandoffItem("fish.egress", new byte[0], List.of())), SLOTS, 1500));
        BumblebeeState bare = table.toBuilder().clearFdTun().build();
        assertThrows(IllegalArgumentException.class, () -> FlowStore.inherited(
                List.of(new HandoffItem(FlowStore.ITEM, bare.toByteArray(), List.of()), r), SLOTS, 1500));
    }

    /**
     * A predecessor with 2 loops hands one table per loop (loop 0's with the environment) and every
     * TUN queue: the successor reads one table with each flow's fds renumbered into one list, and
     * queue 1 behind them (queue 0 is the table's fd_tun; its second copy is closed).
     */
    @Test
    void theTablesOfSeveralLoopsAreMergedWithTheirQueues() throws Exception {
        List<warren.fdpass.Fd> open = new java.util.ArrayList<>();
        for (int i = 0; i < 8; i++) {
            open.add(warren.fdpass.Fd.adopt(warren.fdpass.libc.Native.open("/dev/null", 0)));
        }
        try {
            BumblebeeState loop0 = BumblebeeState.newBuilder().setFormat(FlowTableCodec.FORMAT).setSlots(SLOTS).setMtu(1500)
                    .setFdNetns(0).setFdTun(1).setFdListen4(2).setFdListen6(3)
                    .addFlows(FlowState.newBuilder().setSlot(1).setStateValue(Flow.ACTIVE).setFdFlow(4).setCallRef(7)).build();
            BumblebeeState loop1 = BumblebeeState.newBuilder().setFormat(FlowTableCodec.FORMAT).setSlots(SLOTS).setMtu(1500)
                    .addFlows(FlowState.newBuilder().setSlot(2).setStateValue(Flow.RESERVED).setFdFlow(0).setCallRef(8)).build();
            HandoffItem r = new HandoffItem(FlowStore.RELAY_ITEM, RelayState.newBuilder().setFormat(1).build().toByteArray(),
                    List.of());
            Nat.Inherited in = FlowStore.inherited(List.of(
                    new HandoffItem(FlowStore.ITEM, loop0.toByteArray(), open.subList(0, 5)), r,
                    new HandoffItem(FlowStore.QUEUES_ITEM, new byte[0], open.subList(6, 8)),
                    new HandoffItem(FlowStore.ITEM, loop1.toByteArray(), open.subList(5, 6)), r), SLOTS, 1500);
            assertEquals(2, in.state().getFlowsCount());
            assertEquals(4, in.state().getFlows(0).getFdFlow());
            assertEquals(5, in.state().getFlows(1).getFdFlow(), "loop 1's flow behind loop 0's five fds");
            assertEquals(1, in.state().getFdTun());
            assertEquals(2, in.queues());
            assertEquals(List.of(6), in.queueAt(), "queue 1 behind both tables' fds");
            assertTrue(in.fds().get(6) == open.get(7));
            assertTrue(!open.get(6).isOpen(), "the second copy of queue 0 closed");
            assertEquals(2, in.relayStates().size(), "each loop's relay item");
            assertThrows(IllegalArgumentException.class, () -> FlowStore.inherited(List.of(
                    new HandoffItem(FlowStore.ITEM, loop1.toByteArray(), List.of()), r), SLOTS, 1500),
                    "no table with the environment");
        } finally {
            warren.fdpass.Fd.closeAll(open);
        }
    }

    @Test
    void endReasonsAreTypedOnceWithTheirOutcomeCounterAndWireValue() {
        assertEquals("TIMEOUT", FlowEnd.TIMEOUT.outcome);
        assertEquals("flows.ended.idle_timeout", FlowEnd.IDLE_TIMEOUT.counter);
        assertEquals(EndReason.ERROR, FlowEnd.TIMEOUT.wire, "a handshake timeout has no EndReason of its own");
        assertEquals(Error.Code.TIMEOUT, FlowEnd.TIMEOUT.unanswered);
        assertEquals(Error.Code.NOT_FOUND, FlowEnd.CANCELLED.unanswered);
        assertEquals(Error.Code.SHUTTING_DOWN, FlowEnd.SHUTDOWN.unanswered);
        assertEquals(Error.Code.PEER_GONE, FlowEnd.FLOW_ENDED.unanswered);
        assertEquals(FlowEnd.FLOW_ENDED, FlowEnd.ofRelay(EndReason.BOTH_EOF));
        for (FlowEnd e : FlowEnd.values()) {
            assertEquals(e.outcome, e.wire == EndReason.ERROR ? e.outcome : e.wire.name(), "outcome = wire name");
            if (e != FlowEnd.TIMEOUT) {
                assertEquals(e, FlowEnd.ofRelay(e.wire), "a relay's reason maps back");
            }
        }
        assertEquals(FlowEnd.ERROR, FlowEnd.ofRelay(EndReason.END_REASON_UNSPECIFIED));
    }

    private static StoredTask task(long number, FlowState fs) {
        return StoredTask.newBuilder().setCall(PendingCall.newBuilder().setTask(number)).setItem(FlowStore.ITEM)
                .setPayload(fs.toByteString()).build();
    }
}
