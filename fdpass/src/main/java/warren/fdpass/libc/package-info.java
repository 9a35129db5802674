/**
 * libc bindings (jnr-ffi) and the one place where errno becomes data. {@link
 * warren.fdpass.libc.LibC} is the raw interface; its only instance is private to {@link
 * warren.fdpass.libc.Native}, the typed facade every other package calls. The facade has two
 * shapes: the I/O calls a loop makes per packet or per byte (read, write, send, sendto, recv,
 * recvmmsg, splice) return the count or {@code -errno} (EINTR retried, EAGAIN as
 * {@code WOULD_BLOCK == -EAGAIN}) and neither throw nor allocate; every other call throws
 * {@link warren.fdpass.libc.NativeIoException} naming the syscall and errno, with
 * {@code try}-prefixed variants for the few callers that branch on an errno. {@link
 * warren.fdpass.libc.Layout} holds the struct offsets for Linux x86_64.
 */
package warren.fdpass.libc;
