/**
 * The splice(2) relay shared by the daemons (Splicer's pairs, Bumblebee's downgrades):
 * {@link warren.daemon.relay.Pair} (state machine and the hot path),
 * {@link warren.daemon.relay.Relay} (epoll registration, timers, retire; what happens at the end
 * is a {@link warren.daemon.relay.Relay.Ending}) and the pipe pool. Syscalls: splice(2) with
 * SPLICE_F_MOVE|SPLICE_F_NONBLOCK (|SPLICE_F_MORE when a read filled the pipe), shutdown(2)
 * SHUT_WR for half-close, fcntl(2) F_SETPIPE_SZ, getsockopt(2) TCP_INFO at the end, setsockopt(2)
 * SO_LINGER {on, 0} while a pair is held (a daemon that dies resets its connections) and the
 * original at hand-back. A pump has a budget per wakeup (16 splice rounds); a direction that
 * still moves bytes waits on the relay's ready list, run once per loop cycle (an
 * {@link warren.daemon.loop.EventLoop.Duty}).
 */
package warren.daemon.relay;
