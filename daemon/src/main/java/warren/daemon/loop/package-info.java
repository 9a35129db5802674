/**
 * The event loop every daemon runs: one thread, epoll, a table of handlers addressed by int,
 * timers, tasks posted from other threads through an eventfd wakeup, and duties run once per
 * cycle after the fd events (work a handler left for later when its wakeup's budget ran out). See
 * {@link warren.daemon.loop.EventLoop}.
 */
package warren.daemon.loop;
