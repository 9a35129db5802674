/**
 * libc bindings (jnr-ffi) and the one place where errno becomes data: {@link
 * warren.fdpass.libc.LibC} is the raw interface, {@link warren.fdpass.libc.Native} the typed
 * facade (EINTR retried, EAGAIN returned as WOULD_BLOCK, other errors thrown as
 * {@link warren.fdpass.libc.NativeIoException} naming the syscall and errno), and
 * {@link warren.fdpass.libc.Layout} the struct offsets for Linux x86_64.
 */
package warren.fdpass.libc;
