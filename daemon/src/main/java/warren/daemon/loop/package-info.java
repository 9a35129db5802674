/**
 * The event loops every daemon runs. {@link warren.daemon.loop.EventLoop}: one thread, epoll, a
 * table of handlers addressed by int, timers, tasks posted from other threads through an eventfd
 * wakeup, and duties run once per cycle after the fd events (work a handler left for later when
 * its wakeup's budget ran out). {@link warren.daemon.loop.EventLoop.Group}: a component's
 * registrations and timers, paused and resumed together (events and due timers held while
 * paused, delivered at resume): how an engine stops at a clean point for an upgrade's handoff.
 * {@link warren.daemon.loop.Loops}: the daemon's N loops (config key {@code threads}), loop 0 the
 * control loop; {@code onEach} runs a step on every loop and waits (from a non-loop thread),
 * {@code gather} fans out from a loop and posts the results back. Loops share nothing but their
 * posted-task queues and LongAdder counters.
 */
package warren.daemon.loop;
