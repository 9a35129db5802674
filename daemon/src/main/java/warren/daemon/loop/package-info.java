/**
 * The event loop every daemon runs: one thread, epoll, a table of handlers addressed by int,
 * timers, and tasks posted from other threads through an eventfd wakeup. See
 * {@link warren.daemon.loop.EventLoop}.
 */
package warren.daemon.loop;
