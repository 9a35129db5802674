package warren.bumblebee.nat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import warren.daemon.loop.EventLoop;
import warren.daemon.metrics.Counters;
import warren.packet.Ip;

/**
 * A flow's timers across RESERVED -> ACTIVE. With N loops the activation is posted to the owner
 * loop by the loop that accepted, so the flow's FIN both ways may pass the owner's paths first;
 * the linger they started must survive the activation (it once gave way to the idle timer, and
 * the flow outlived its connection by bumblebee.idle_timeout).
 */
class LifecycleTest {
    private static final long IDLE_MS = 3_600_000;
    private static final long LINGER_MS = 200;
    private static final long HANDSHAKE_MS = 5_000;

    private EventLoop loop;
    private Lifecycle life;
    private NatCounters counters;
    private Flow flow;

    @BeforeEach
    void setUp() throws Exception {
        loop = new EventLoop(16, t -> { throw new AssertionError(t); });
        SlotTable slots = new SlotTable(loop, 4, 1500, 1_000);
        counters = new NatCounters(new Counters());
        life = new Lifecycle(loop, new Nat.Settings(1_000, IDLE_MS, HANDSHAKE_MS, LINGER_MS), slots, counters,
                new FlowStore(null));
        flow = slots.all()[0];
        flow.state = Flow.RESERVED;
        life.armHandshakeTimer(flow);
    }

    @AfterEach
    void tearDown() {
        loop.close();
    }

    private long dueInMillis() {
        assertNotNull(flow.timer, "the flow has a timer");
        assertFalse(flow.timer.cancelled());
        return TimeUnit.NANOSECONDS.toMillis(flow.timer.deadlineNanos() - System.nanoTime());
    }

    @Test
    void anActivationAfterFinBothWaysKeepsTheLinger() {
        life.forwarded(flow, true, Ip.TCP_ACK | Ip.TCP_FIN, 40);
        life.forwarded(flow, false, Ip.TCP_ACK | Ip.TCP_FIN, 40);
        assertTrue(dueInMillis() <= LINGER_MS, "FIN both ways while RESERVED starts the linger");
        life.activate(flow, counters.upgradeLatencyTcp);
        assertEquals(Flow.ACTIVE, flow.state);
        assertTrue(dueInMillis() <= LINGER_MS, "still the linger, not the idle timer: due in " + dueInMillis() + " ms");
    }

    @Test
    void anActivationAfterOneFinStartsTheIdleTimer() {
        life.forwarded(flow, true, Ip.TCP_ACK | Ip.TCP_FIN, 40);
        life.activate(flow, counters.upgradeLatencyTcp);
        assertTrue(dueInMillis() > HANDSHAKE_MS, "the idle timer: due in " + dueInMillis() + " ms");
    }

    @Test
    void aPausedActivationLeavesTheTimerToTheResume() {
        life.paused = true;
        life.activate(flow, counters.upgradeLatencyTcp);
        assertEquals(null, flow.timer, "the resume rearms it");
        life.paused = false;
        life.rearm(flow);
        assertTrue(dueInMillis() > HANDSHAKE_MS);
    }
}
