package warren.bumblebee.nat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertSame;
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
 * the flow outlived its connection by bumblebee.idle_timeout). The timers are in the NAT's group:
 * one due while it is paused is held, and a pause neither times out a handshake nor counts as idle.
 */
class LifecycleTest {
    private static final long IDLE_MS = 3_600_000;
    private static final long LINGER_MS = 200;
    private static final long HANDSHAKE_MS = 5_000;
    /** A handshake or idle timeout the tests wait through. */
    private static final long SHORT_MS = 200;

    private EventLoop loop;
    private EventLoop.Group group;
    private Lifecycle life;
    private NatCounters counters;
    private Flow flow;

    @BeforeEach
    void setUp() throws Exception {
        loop = new EventLoop(16, t -> { throw new AssertionError(t); });
        group = loop.group("test");
        SlotTable slots = new SlotTable(loop, group, 4, 1500, 1_000);
        counters = new NatCounters(new Counters());
        life = new Lifecycle(loop, group, new Nat.Settings(1_000, IDLE_MS, HANDSHAKE_MS, LINGER_MS), slots, counters,
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
    void aPausedActivationArmsItsTimerInThePausedGroup() {
        group.pause();
        life.activate(flow, counters.upgradeLatencyTcp);
        assertTrue(dueInMillis() > HANDSHAKE_MS, "the idle timer, in the group: held while it is paused");
    }

    /** Runs the loop on this thread until {@code done}. */
    private void runUntil(java.util.function.BooleanSupplier done) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (!done.getAsBoolean()) {
            assertTrue(System.nanoTime() < deadline, "in time");
            loop.doWork(5);
        }
    }

    /**
     * Pauses the group until {@code flow}'s timer is due and has been held (one loop cycle after
     * its deadline), then resumes as Nat.resume does and runs until the held timer has fired.
     */
    private void pauseThroughTheTimer(Lifecycle l) throws Exception {
        EventLoop.Timer armed = flow.timer;
        group.pause();
        runUntil(() -> System.nanoTime() - armed.deadlineNanos() > 0);
        loop.doWork(0); // its deadline passed: held by the paused group
        assertSame(armed, flow.timer, "held, not fired, while paused");
        l.resumed(System.nanoTime());
        group.resume();
        runUntil(() -> flow.timer != armed);
    }

    @Test
    void aHandshakeDueDuringAPauseGetsItsWholePeriodAfterTheResume() throws Exception {
        Lifecycle l = new Lifecycle(loop, group, new Nat.Settings(1_000, IDLE_MS, SHORT_MS, LINGER_MS),
                new SlotTable(loop, group, 4, 1500, 1_000), counters, new FlowStore(null));
        flow.timer.cancel();
        l.armHandshakeTimer(flow);
        pauseThroughTheTimer(l);
        assertEquals(Flow.RESERVED, flow.state, "the pause ended no handshake");
        assertTrue(dueInMillis() > SHORT_MS / 2, "the rest of its period, from the resume: " + dueInMillis() + " ms");
    }

    @Test
    void aFlowIdleBeforeAPauseIsNotEndedAsIdleByIt() throws Exception {
        Lifecycle l = new Lifecycle(loop, group, new Nat.Settings(1_000, SHORT_MS, HANDSHAKE_MS, LINGER_MS),
                new SlotTable(loop, group, 4, 1500, 1_000), counters, new FlowStore(null));
        flow.timer.cancel();
        flow.state = Flow.ACTIVE;
        flow.lastActiveNanos = System.nanoTime() - TimeUnit.MILLISECONDS.toNanos(10 * SHORT_MS); // idle long since
        l.scheduleIdle(flow);
        pauseThroughTheTimer(l);
        assertEquals(Flow.ACTIVE, flow.state, "idle time counts from the resume: the pause ended no flow");
        assertTrue(dueInMillis() > SHORT_MS / 2, "checked again a whole idle_timeout later");
    }
}
