/**
 * daemon: the plumbing every warren daemon shares, so Splicer, Bumblebee and Fish differ only in
 * their request handlers and tasks.
 * <ul>
 *   <li>{@link warren.daemon.Daemon}: lifecycle (options, config, audit, control socket, SIGTERM
 *       drain, exit status);</li>
 *   <li>{@link warren.daemon.loop}: the single-threaded epoll duty cycle;</li>
 *   <li>{@link warren.daemon.control}: the control server and the exactly-once answer;</li>
 *   <li>{@link warren.daemon.task}: tasks in flight (the root of the handoff state);</li>
 *   <li>{@link warren.daemon.audit}, {@link warren.daemon.config}, {@link warren.daemon.metrics},
 *       {@link warren.daemon.cli}; {@link warren.daemon.client}: the client side.</li>
 * </ul>
 * Handoff (DESIGN §4) will snapshot the task registry with each task's fds into the handoff
 * encoding; every task's state is plain data owned by the loop thread for that reason.
 */
package warren.daemon;
