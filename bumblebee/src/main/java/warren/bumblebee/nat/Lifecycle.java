package warren.bumblebee.nat;

import java.util.List;
import warren.control.v1.Downgraded;
import warren.control.v1.Response;
import warren.daemon.Log;
import warren.daemon.audit.JsonLine;
import warren.daemon.loop.EventLoop;
import warren.daemon.metrics.Histogram;
import warren.fdpass.libc.Native;
import warren.packet.Ip;

/**
 * A live flow's timers and its one end. Timers: the handshake (RESERVED), idle (ACTIVE) and the
 * linger after FIN both ways, one at a time in {@link Flow#timer}. {@link #forwarded} follows the
 * TCP flags of what the two paths pass: RST ends the flow, FIN both ways starts the linger.
 * {@link #end} is the single place a flow ends: it closes the flow's sockets, answers or fails its
 * request, writes the audit end line, counts the reason and hands the slot to the quarantine.
 *
 * <p>The timers are scheduled in the NAT's {@link EventLoop.Group}: while it is paused (an upgrade
 * in place) one that comes due is held and fires right after the resume. A pause must not end a
 * flow, so the idle check and the handshake period count from the last resume at the earliest
 * ({@link #resumed}, O(1): the flows' last-activity times are not touched): a flow idle for most
 * of {@code idle_timeout} before a pause gets a whole one after it, and a handshake whose SYN
 * waited in its socket through the pause gets its whole period. The linger (FIN both ways) and
 * the quarantine only wait for the kernel's side, whose clock does not pause: held, they fire at
 * resume, after the packets held with them have passed. Loop thread only.
 */
final class Lifecycle {
    private final EventLoop loop;
    private final EventLoop.Group group;
    private final Nat.Settings settings;
    private final SlotTable slots;
    private final NatCounters counters;
    /** The loop's persistence: also its pre-copy's changed list ({@link FlowCopy#moved}). */
    final FlowStore store;
    /** The loop's index (0: the control loop). */
    final int index;
    /** When the NAT last resumed, or was made ({@link System#nanoTime}): a flow ages from then at the earliest. */
    private long resumedNanos = System.nanoTime();

    Lifecycle(EventLoop loop, EventLoop.Group group, Nat.Settings settings, SlotTable slots, NatCounters counters,
            FlowStore store) {
        this(loop, group, 0, settings, slots, counters, store);
    }

    /** Timers in {@code group}, the NAT's (null: none, a test's). */
    Lifecycle(EventLoop loop, EventLoop.Group group, int index, Nat.Settings settings, SlotTable slots,
            NatCounters counters, FlowStore store) {
        this.index = index;
        this.loop = loop;
        this.group = group;
        this.settings = settings;
        this.slots = slots;
        this.counters = counters;
        this.store = store;
        for (Flow f : slots.all()) {
            f.life = this;
        }
    }

    EventLoop loop() {
        return loop;
    }

    /**
     * The NAT resumes at {@code nowNanos} (after a pause, or an adopted table's start): the time
     * paused does not count as idle, nor against a handshake.
     */
    void resumed(long nowNanos) {
        resumedNanos = nowNanos;
    }

    /** Milliseconds from {@code sinceNanos} to now, or from the last resume if that came later. */
    private long millisSince(long sinceNanos) {
        long from = resumedNanos - sinceNanos > 0 ? resumedNanos : sinceNanos; // nanoTime: compare differences
        return (System.nanoTime() - from) / 1_000_000;
    }

    /**
     * Counts a TCP packet forwarded one way ({@code fromFlow}: flow to kernel) and follows its
     * flags: RST ends the flow at once, FIN both ways starts the linger before the end.
     */
    void forwarded(Flow f, boolean fromFlow, int flags, int length) {
        FlowCopy.moved(f);
        if (fromFlow) {
            f.packetsIn++;
            f.bytesIn += length;
            counters.packetsIn.increment();
        } else {
            f.packetsOut++;
            f.bytesOut += length;
            counters.packetsOut.increment();
        }
        f.lastActiveNanos = System.nanoTime();
        if ((flags & Ip.TCP_RST) != 0) {
            end(f, FlowEnd.FLOW_ENDED, fromFlow ? "RST from the flow" : "RST from the kernel");
        } else if ((flags & Ip.TCP_FIN) != 0) {
            if (fromFlow) {
                f.finFromFlow = true;
            } else {
                f.finFromKernel = true;
            }
            lingerIfClosed(f);
        }
    }

    /** FIN seen both ways: the flow ends after bumblebee.close_linger. */
    void lingerIfClosed(Flow f) {
        if (f.finFromFlow && f.finFromKernel) {
            if (f.timer != null) {
                f.timer.cancel();
            }
            f.timer = loop.schedule(settings.lingerMillis(), () -> end(f, FlowEnd.FLOW_ENDED, "FIN both ways"), group);
        }
    }

    /**
     * RESERVED -> ACTIVE for an upgrade answered now: the handshake timer gives way to the idle
     * one, or to the linger if FIN has already passed both ways. With N loops that happens: another
     * loop accepted and answered, and the requester's reply and close (the kernel's FIN) can cross
     * this loop's TUN queue before the posted activation does; the idle timer in its place kept
     * such a flow for bumblebee.idle_timeout instead of close_linger. (Activated while paused: the
     * timer waits in the group like the others.)
     */
    void activate(Flow f, Histogram latency) {
        FlowCopy.moved(f);
        f.state = Flow.ACTIVE;
        if (f.timer != null) {
            f.timer.cancel();
            f.timer = null;
        }
        rearm(f);
        warren.daemon.control.Call call = f.call;
        warren.daemon.task.TaskRegistry.Record r = call == null ? null : call.task(); // request to answer
        if (r != null) {
            latency.observeNanos(System.nanoTime() - r.startNanos());
        }
    }

    /** Checks every bumblebee.idle_timeout whether the flow has been idle that long (a pause excepted). */
    void scheduleIdle(Flow f) {
        f.timer = loop.schedule(settings.idleMillis(), () -> {
            if (f.state != Flow.ACTIVE) {
                return;
            }
            long idle = millisSince(f.lastActiveNanos);
            if (idle >= settings.idleMillis()) {
                end(f, FlowEnd.IDLE_TIMEOUT, "idle for " + idle + " ms");
            } else if (!(f.finFromFlow && f.finFromKernel)) {
                scheduleIdle(f);
            }
        }, group);
    }

    /** A RESERVED flow ends if it is not ACTIVE within bumblebee.handshake_timeout (a pause excepted). */
    void armHandshakeTimer(Flow f) {
        armHandshakeTimer(f, System.nanoTime(), settings.handshakeMillis());
    }

    private void armHandshakeTimer(Flow f, long beganNanos, long delayMillis) {
        f.timer = loop.schedule(delayMillis, () -> {
            if (f.state != Flow.RESERVED) {
                return;
            }
            long left = settings.handshakeMillis() - millisSince(beganNanos);
            if (left > 0) { // a pause came in between: the rest of the period, counted from the resume
                armHandshakeTimer(f, beganNanos, left);
                return;
            }
            end(f, FlowEnd.TIMEOUT, f.downgrade
                    ? "the peer did not complete the handshake within " + settings.handshakeMillis() + " ms"
                    : "no kernel handshake within " + settings.handshakeMillis() + " ms");
        }, group);
    }

    /** A live flow's timer for its state: after an activation, or an adoption (the period starts over). */
    void rearm(Flow f) {
        if (f.state == Flow.RESERVED) {
            armHandshakeTimer(f);
        } else if (f.finFromFlow && f.finFromKernel) {
            lingerIfClosed(f);
        } else if (!f.downgrade) {
            scheduleIdle(f);
        }
    }

    /** Ends a flow once: closes its socket, answers (if still due), audit end, quarantines the slot. */
    void end(Flow f, FlowEnd reason, String detail) {
        if (!f.live()) {
            return;
        }
        long storedTask = store.storedTask(f);
        // a TCP upgrade whose kernel connection another loop accepted and answered meanwhile
        boolean acceptedElsewhere = f.state == Flow.RESERVED && f.accept.getAndSet(Flow.ACCEPT_CLOSED) == Flow.ACCEPT_ACCEPTED;
        boolean answered = (f.state == Flow.ACTIVE && !f.downgrade) || acceptedElsewhere;
        f.trace = null; // its trace sees the task end and finishes; the slot's next flow is not traced
        closeSockets(f);
        JsonLine audit = new JsonLine().put("reason", reason.outcome).put("detail", detail == null ? "" : detail)
                .put("slot", f.slot).put("kind", f.downgrade ? "downgrade" : f.udp ? "udp" : "tcp")
                .put("original", f.haveKey ? Tuples.text(f.original) : "")
                .put("translated", f.haveKey && !f.udp ? Tuples.translatedText(f) : "")
                .put("packets_in", f.packetsIn).put("packets_out", f.packetsOut)
                .put("bytes_in", f.bytesIn).put("bytes_out", f.bytesOut);
        counters.ended(reason).increment();
        counters.bytesOut.add(f.bytesIn);
        counters.bytesIn.add(f.bytesOut);
        if (f.downgrade && f.state == Flow.ACTIVE) {
            warren.daemon.relay.Pair pair = f.relay;
            f.relay = null;
            if (pair != null) {
                pair.end(warren.control.v1.EndReason.FLOW_ENDED, reason.outcome); // its Ending closes both sockets
            }
            f.call.reply(Response.newBuilder().setDowngraded(Downgraded.newBuilder()
                    .setTuple(Tuples.tuple(Tuples.reversed(f.original))).setPacketsIn(f.packetsIn)
                    .setPacketsOut(f.packetsOut).setBytesIn(f.bytesIn).setBytesOut(f.bytesOut).setReason(reason.wire)),
                    List.of(), reason.outcome, audit);
        } else if (answered) {
            f.call.endTask(reason.outcome, audit);
        } else {
            f.call.fail(reason.unanswered, "flow ended before the upgrade completed: " + reason.outcome
                    + (detail == null ? "" : " (" + detail + ")"));
        }
        f.call = null;
        if (storedTask != 0) {
            store.remove(storedTask); // after the answer is queued
        }
        FlowCopy.moved(f); // QUARANTINED now
        slots.quarantine(f);
        if (Log.debugEnabled()) { // the line is built only when it is written
            Log.debug("slot " + f.slot + " ended: " + reason.outcome);
        }
    }

    /** Unregisters and closes what the flow owns: flow socket, datagram socket, a downgrade's sockets, timer. */
    private void closeSockets(Flow f) {
        loop.unregister(f.flowReg);
        if (f.innerFd >= 0) {
            loop.unregister(f.innerReg);
            Native.close(f.innerFd);
            f.innerFd = -1;
        }
        if (f.socket != null) {
            f.socket.close();
            f.socket = null;
        }
        Native.close(f.flowFd);
        f.flowFd = -1;
        f.flowReg = -1;
        if (f.udpFd >= 0) {
            loop.unregister(f.udpReg);
            Native.close(f.udpFd);
            f.udpFd = -1;
            f.udpReg = -1;
        }
        if (f.timer != null) {
            f.timer.cancel();
            f.timer = null;
        }
    }
}
