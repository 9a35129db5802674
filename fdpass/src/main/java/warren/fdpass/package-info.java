/**
 * fdpass: SCM_RIGHTS over AF_UNIX SOCK_SEQPACKET, the transport of every warren control socket.
 *
 * <h2>Ownership</h2>
 * Every fd is held by exactly one {@link warren.fdpass.Fd}. Receiving puts fds into a
 * {@link warren.fdpass.Received} message, which owns them until a caller
 * {@link warren.fdpass.Received#take takes} one; closing the message closes the rest. Sending
 * borrows: the kernel duplicates the fds into the message.
 *
 * <h2>Messages</h2>
 * One message = bytes (at most 64 KiB inline) + at most 253 fds (SCM_MAX_FD), in one
 * {@code sendmsg(2)}. {@code recvmsg(2)} uses MSG_CMSG_CLOEXEC; MSG_TRUNC/MSG_CTRUNC close what
 * arrived and raise {@link warren.fdpass.FdPassException.Reason#TRUNCATED}. Larger payloads go in a
 * sealed {@link warren.fdpass.Memfd}; more fds go through {@link warren.fdpass.FdBatch}.
 *
 * <h2>Batches</h2>
 * {@link warren.fdpass.RecvBatch} (recvmmsg(2)) and {@link warren.fdpass.SendBatch} (sendmmsg(2))
 * move up to N packets, one per message, in one syscall between a socket and preallocated slots,
 * allocating nothing per call: the packet path's way to a client socket.
 *
 * <h2>Why hand-written bindings</h2>
 * jnr-unixsocket has no SOCK_SEQPACKET and no SCM_RIGHTS; Netty's epoll transport passes fds only
 * one per message on its domain-socket channel and has no SEQPACKET either. So the few syscalls
 * are bound with jnr-ffi in {@link warren.fdpass.libc} and the message layout is done by hand
 * ({@link warren.fdpass.libc.Layout}). The control-message codec that pairs fd fields with fds is
 * in {@link warren.fdpass.codec}.
 */
package warren.fdpass;
