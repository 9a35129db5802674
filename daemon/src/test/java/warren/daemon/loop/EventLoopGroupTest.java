package warren.daemon.loop;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;

/**
 * Pausing as an event-loop feature: a paused {@link EventLoop.Group} holds its registrations'
 * events and its due timers, and delivers them at resume (nothing lost, nothing early);
 * registrations outside the group are served meanwhile. And {@link Loops}: onEach and gather
 * reach every loop on its own thread.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class EventLoopGroupTest {
    @Test
    void aPausedGroupHoldsEventsAndTimersUntilResume() throws Exception {
        List<Throwable> errors = new ArrayList<>();
        int[] p1 = Native.pipe2(Native.O_NONBLOCK | Native.O_CLOEXEC);
        int[] p2 = Native.pipe2(Native.O_NONBLOCK | Native.O_CLOEXEC);
        int[] p3 = Native.pipe2(Native.O_NONBLOCK | Native.O_CLOEXEC);
        try (EventLoop loop = new EventLoop(16, errors::add); Fd r1 = Fd.adopt(p1[0]); Fd w1 = Fd.adopt(p1[1]);
                Fd r2 = Fd.adopt(p2[0]); Fd w2 = Fd.adopt(p2[1]); Fd r3 = Fd.adopt(p3[0]); Fd w3 = Fd.adopt(p3[1])) {
            EventLoop.Group g = loop.group("test");
            List<String> seen = new ArrayList<>();
            loop.register(r1.get(), Native.EPOLLIN | Native.EPOLLET, ev -> seen.add("in-group " + ev), g);
            loop.register(r2.get(), Native.EPOLLIN | Native.EPOLLET, ev -> seen.add("outside " + ev));
            int gone = loop.register(r3.get(), Native.EPOLLIN | Native.EPOLLET, ev -> seen.add("gone " + ev), g);
            g.pause();
            loop.schedule(0, () -> seen.add("timer"), g);
            write(w1.get());
            write(w2.get());
            write(w3.get());
            for (int i = 0; i < 3; i++) {
                loop.doWork(10);
            }
            assertEquals(List.of("outside " + Native.EPOLLIN), seen, "only the registration outside the group is served");
            assertEquals(2, g.heldEvents());
            loop.unregister(gone); // what it held goes with it
            assertEquals(1, g.heldEvents());
            g.resume();
            assertEquals(List.of("outside " + Native.EPOLLIN, "in-group " + Native.EPOLLIN), seen,
                    "the held edge is delivered at resume, once");
            loop.doWork(0);
            assertEquals("timer", seen.get(seen.size() - 1), "the held timer fires in the next cycle");
            assertEquals(3, seen.size());
            loop.doWork(0);
            assertEquals(3, seen.size(), "nothing twice");
            assertTrue(errors.isEmpty(), errors.toString());
        }
    }

    @Test
    void onEachAndGatherReachEveryLoopOnItsThread() throws Exception {
        List<Throwable> errors = new CopyOnWriteArrayList<>();
        try (Loops loops = new Loops(3, 16, errors::add)) {
            Thread main = new Thread(() -> {
                try {
                    loops.run("t", errors::add);
                } catch (Exception e) {
                    errors.add(e);
                }
            }, "t-loop");
            main.start();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            for (int i = 0; i < loops.size(); i++) {
                while (!loops.get(i).started() && System.nanoTime() < deadline) {
                    Thread.sleep(5); // onEach runs the part of a loop not started yet on the caller's thread
                }
            }
            List<String> names = loops.onEach((i, l) -> i + " " + Thread.currentThread().getName(), 10_000);
            assertEquals(List.of("0 t-loop", "1 t-loop-1", "2 t-loop-2"), names);
            assertThrows(IllegalStateException.class, () -> loops.onEach((i, l) -> {
                if (i == 1) {
                    throw new IllegalStateException("loop 1 refuses");
                }
                return i;
            }, 10_000));
            java.util.concurrent.CompletableFuture<List<Integer>> gathered = new java.util.concurrent.CompletableFuture<>();
            loops.control().execute(() -> loops.gather(loops.control(), (i, l) -> {
                assertTrue(l.inLoop());
                return i * 10;
            }, (results, error) -> {
                assertTrue(loops.control().inLoop(), "the result comes back on the loop asked for");
                gathered.complete(results);
            }));
            assertEquals(List.of(0, 10, 20), gathered.get(10, TimeUnit.SECONDS));
            loops.stop();
            main.join(10_000);
            assertTrue(errors.isEmpty(), errors.toString());
        }
    }

    @Test
    void aLevelTriggeredRegistrationIsDisarmedWhileHeld() throws Exception {
        List<Throwable> errors = new ArrayList<>();
        int[] p = Native.pipe2(Native.O_NONBLOCK | Native.O_CLOEXEC);
        try (EventLoop loop = new EventLoop(16, errors::add); Fd r = Fd.adopt(p[0]); Fd w = Fd.adopt(p[1])) {
            EventLoop.Group g = loop.group("lt");
            List<Integer> seen = new ArrayList<>();
            int slot = loop.register(r.get(), Native.EPOLLIN, seen::add, g); // level-triggered, never drained here
            g.pause();
            write(w.get());
            for (int i = 0; i < 5; i++) {
                loop.doWork(0);
            }
            assertEquals(1, g.holds(), "held once, then disarmed: epoll reports the ready pipe no more");
            loop.modify(slot, Native.EPOLLIN | Native.EPOLLRDHUP); // recorded for the re-arm, not armed now
            loop.doWork(0);
            assertEquals(1, g.holds());
            w.close(); // the hang-up: reported once (every EPOLL_CTL_MOD gets EPOLLHUP|EPOLLERR), then disabled
            for (int i = 0; i < 5; i++) {
                loop.doWork(0);
            }
            assertEquals(2, g.holds(), "one more hold for the hang-up, then nothing");
            assertTrue(seen.isEmpty());
            g.resume();
            assertEquals(List.of(Native.EPOLLIN | Native.EPOLLHUP), seen, "the held events, OR'd, at resume");
            loop.doWork(0);
            assertTrue(seen.size() == 2 && (seen.get(1) & Native.EPOLLIN) != 0 && (seen.get(1) & Native.EPOLLHUP) != 0,
                    "re-armed with its events: still readable and hung up, reported again: " + seen);
            g.pause();
            for (int i = 0; i < 5; i++) {
                loop.doWork(0);
            }
            assertEquals(4, g.holds(), "a second pause disarms it again: its event, the hang-up once more, then nothing");
            loop.unregister(slot);
            g.resume();
            assertEquals(2, seen.size(), "unregistered while held: nothing delivered");
            assertTrue(errors.isEmpty(), errors.toString());
        }
    }

    @Test
    void postedTasksRunInBudgetsPerCycle() throws Exception {
        try (EventLoop loop = new EventLoop(16, t -> { throw new AssertionError(t); })) {
            int[] ran = new int[1];
            int total = 2 * EventLoop.POSTED_PER_CYCLE + 100;
            for (int i = 0; i < total; i++) {
                loop.execute(() -> ran[0]++);
            }
            loop.doWork(0);
            assertEquals(EventLoop.POSTED_PER_CYCLE, ran[0], "one budget per cycle: fds and timers come between");
            loop.doWork(1000); // does not wait: work is left
            loop.doWork(1000);
            assertEquals(total, ran[0]);
        }
    }

    @Test
    void aSlotReusedByAnotherGroupKeepsThatGroupsHeldEvent() throws Exception {
        List<Throwable> errors = new ArrayList<>();
        int[] p1 = Native.pipe2(Native.O_NONBLOCK | Native.O_CLOEXEC);
        int[] p2 = Native.pipe2(Native.O_NONBLOCK | Native.O_CLOEXEC);
        try (EventLoop loop = new EventLoop(16, errors::add); Fd r1 = Fd.adopt(p1[0]); Fd w1 = Fd.adopt(p1[1]);
                Fd r2 = Fd.adopt(p2[0]); Fd w2 = Fd.adopt(p2[1])) {
            EventLoop.Group a = loop.group("a");
            EventLoop.Group b = loop.group("b");
            List<String> seen = new ArrayList<>();
            a.pause();
            b.pause();
            int slot = loop.register(r1.get(), Native.EPOLLIN, ev -> seen.add("a"), a);
            write(w1.get());
            loop.doWork(0); // held by a (and disarmed)
            loop.unregister(slot); // a's list still names the slot
            int reused = loop.register(r2.get(), Native.EPOLLIN, ev -> seen.add("b"), b);
            assertEquals(slot, reused, "the freed slot is reused");
            write(w2.get());
            loop.doWork(0); // held by b, disarmed
            a.resume(); // must not take or drop b's held event
            assertTrue(seen.isEmpty(), seen.toString());
            assertEquals(1, b.heldEvents());
            b.resume();
            assertEquals(List.of("b"), seen, "b's event delivered at b's resume");
            loop.doWork(0);
            assertEquals(List.of("b", "b"), seen, "and the registration re-armed (level-triggered, still readable)");
            assertTrue(errors.isEmpty(), errors.toString());
        }
    }

    /**
     * A successor's pre-copy: sockets added to a paused group that drops write-only events report
     * EPOLLOUT at once; {@link EventLoop#drainWhileStopped} takes them before the loop runs, so its
     * first cycle after the resume delivers only what matters (a read), and an event of a
     * registration outside the group is kept for that first cycle, not lost.
     */
    @Test
    void aDrainBeforeTheFirstCycleDropsIdleWritabilityAndKeepsTheRest() throws Exception {
        List<Throwable> errors = new ArrayList<>();
        List<Fd> fds = new ArrayList<>();
        try (EventLoop loop = new EventLoop(64, errors::add)) {
            EventLoop.Group g = loop.group("copies");
            g.pause();
            g.dropWriteOnlyWhilePaused();
            List<String> seen = new ArrayList<>();
            int[] busy = null;
            for (int i = 0; i < 20; i++) { // 20 idle socket pairs: 40 writable sockets in the group
                int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_NONBLOCK | Native.SOCK_CLOEXEC);
                fds.add(Fd.adopt(sv[0]));
                fds.add(Fd.adopt(sv[1]));
                int k = i;
                loop.register(sv[0], Native.EPOLLIN | Native.EPOLLOUT | Native.EPOLLET, ev -> seen.add("pair " + k + " " + ev), g);
                if (i == 7) {
                    busy = sv;
                }
            }
            int[] outside = Native.pipe2(Native.O_NONBLOCK | Native.O_CLOEXEC);
            fds.add(Fd.adopt(outside[0]));
            fds.add(Fd.adopt(outside[1]));
            loop.register(outside[0], Native.EPOLLIN | Native.EPOLLET, ev -> seen.add("outside " + ev));
            write(busy[1]); // pair 7 has something to read
            write(outside[1]);
            int taken = loop.drainWhileStopped(8);
            assertEquals(21, taken, "20 sockets of the group and the pipe outside it");
            assertEquals(19, g.droppedWriteOnly(), "the idle sockets' EPOLLOUT are not held");
            assertEquals(1, g.heldEvents(), "pair 7's read is held");
            assertTrue(seen.isEmpty(), "nothing delivered before the loop runs: " + seen);
            g.resume();
            assertEquals(List.of("pair 7 " + (Native.EPOLLIN | Native.EPOLLOUT)), seen, "the held read, at the resume");
            loop.doWork(0);
            assertEquals(List.of("pair 7 " + (Native.EPOLLIN | Native.EPOLLOUT), "outside " + Native.EPOLLIN), seen,
                    "the event outside the group in the first cycle, and no idle EPOLLOUT");
            loop.doWork(0);
            assertEquals(2, seen.size(), "nothing twice");
            assertEquals(0, loop.drainWhileStopped(8), "a loop that has run is not drained");
            assertTrue(errors.isEmpty(), errors.toString());
        } finally {
            Fd.closeAll(fds);
        }
    }

    /** Only edge-triggered registrations' write-only events are dropped: a level-triggered one is held (and disarmed). */
    @Test
    void aLevelTriggeredWriteOnlyEventIsHeldNotDropped() throws Exception {
        List<Throwable> errors = new ArrayList<>();
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_NONBLOCK | Native.SOCK_CLOEXEC);
        try (EventLoop loop = new EventLoop(16, errors::add); Fd a = Fd.adopt(sv[0]); Fd b = Fd.adopt(sv[1])) {
            EventLoop.Group g = loop.group("lt");
            g.pause();
            g.dropWriteOnlyWhilePaused();
            List<Integer> seen = new ArrayList<>();
            loop.register(a.get(), Native.EPOLLOUT, seen::add, g);
            loop.drainWhileStopped(4);
            assertEquals(0, g.droppedWriteOnly());
            assertEquals(1, g.heldEvents(), "held, and disarmed: no busy loop while paused");
            assertEquals(0, loop.drainWhileStopped(0));
            g.resume();
            assertEquals(List.of(Native.EPOLLOUT), seen);
            assertTrue(errors.isEmpty(), errors.toString());
        }
    }

    private static void write(int fd) {
        jnr.ffi.Pointer p = Native.allocate(1);
        assertEquals(1, Native.write(fd, p, 1));
    }
}
