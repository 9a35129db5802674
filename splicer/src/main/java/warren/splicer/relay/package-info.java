/**
 * The relay: {@link warren.splicer.relay.Pair} (state machine and the splice(2) hot path),
 * {@link warren.splicer.relay.Relay} (epoll registration, timers, retire and hand-back) and the
 * pipe pool. Syscalls: splice(2) with SPLICE_F_MOVE|SPLICE_F_NONBLOCK (|SPLICE_F_MORE when a
 * read filled the pipe), shutdown(2) SHUT_WR for half-close, fcntl(2) F_SETPIPE_SZ,
 * getsockopt(2) TCP_INFO at the end.
 */
package warren.splicer.relay;
