package warren.fdpass;

import jnr.ffi.Pointer;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * Payloads too large for one message travel in a sealed memfd (memfd_create(2), fcntl(2)
 * F_ADD_SEALS). The sender writes the bytes, then seals write, grow, shrink and the seals
 * themselves, so the receiver can read them without the sender changing them underneath
 * (a time-of-check/time-of-use hazard otherwise). A receiver refuses an fd that is not a memfd or
 * lacks any of the four seals.
 */
public final class Memfd {
    private Memfd() {}

    /** All four seals: the content is immutable and the seal set final. */
    public static final int FULL_SEALS =
            Native.F_SEAL_SEAL | Native.F_SEAL_SHRINK | Native.F_SEAL_GROW | Native.F_SEAL_WRITE;
    private static final int CHUNK = 1 << 20;
    private static final int SMALL = 4096;
    private static final ThreadLocal<Pointer> SMALL_BUFFER = ThreadLocal.withInitial(() -> Native.allocate(SMALL));

    /** A new memfd holding {@code data}, fully sealed, owned by the caller. */
    public static Fd createSealed(String name, byte[] data) throws NativeIoException {
        Fd fd = createUnsealed(name, data);
        try {
            Native.fcntl(fd.get(), Native.F_ADD_SEALS, FULL_SEALS);
            return fd;
        } catch (NativeIoException | RuntimeException e) {
            fd.close();
            throw e;
        }
    }

    /** A memfd holding {@code data} without seals (for tests of the refusal, and for builders). */
    public static Fd createUnsealed(String name, byte[] data) throws NativeIoException {
        Fd fd = Fd.adopt(Native.memfd_create(name, Native.MFD_CLOEXEC | Native.MFD_ALLOW_SEALING));
        try {
            Native.ftruncate(fd.get(), data.length);
            Pointer buf = Native.allocate(Math.min(CHUNK, Math.max(1, data.length)));
            long off = 0;
            while (off < data.length) {
                int n = (int) Math.min(CHUNK, data.length - off);
                buf.put(0, data, (int) off, n);
                int done = 0;
                while (done < n) {
                    done += (int) Native.pwrite(fd.get(), buf.slice(done), n - done, off + done);
                }
                off += n;
            }
            return fd;
        } catch (NativeIoException | RuntimeException e) {
            fd.close();
            throw e;
        }
    }

    /**
     * Reads a sealed memfd's whole content. The fd stays owned by the caller.
     *
     * @throws FdPassException UNSEALED_MEMFD if it is not a memfd or not fully sealed, TOO_LARGE
     *     above {@code maxBytes}
     */
    public static byte[] readSealed(Fd fd, long maxBytes) throws NativeIoException, FdPassException {
        int seals;
        try {
            seals = Native.fcntl(fd.get(), Native.F_GET_SEALS, 0);
        } catch (NativeIoException e) {
            if (e.errno() == Errno.EINVAL || e.errno() == Errno.EBADF) {
                throw new FdPassException(FdPassException.Reason.UNSEALED_MEMFD,
                        fd + " is not a memfd (F_GET_SEALS: " + Errno.name(e.errno()) + ")");
            }
            throw e;
        }
        if ((seals & FULL_SEALS) != FULL_SEALS) {
            throw new FdPassException(FdPassException.Reason.UNSEALED_MEMFD,
                    "memfd payload is not sealed (seals 0x" + Integer.toHexString(seals)
                            + ", need 0x" + Integer.toHexString(FULL_SEALS) + ")");
        }
        // a small payload (a stored pair's description, ~0.3 KB) in one pread(2) and no fstat(2): a
        // recovery reads thousands; sealed against growing, a memfd that reads short has ended
        Pointer small = SMALL_BUFFER.get();
        long got = Native.pread(fd.get(), small, SMALL, 0);
        if (got >= 0 && got < SMALL && got <= maxBytes) {
            byte[] out = new byte[(int) got];
            small.get(0, out, 0, (int) got);
            return out;
        }
        long size = Native.fstat(fd.get())[1];
        if (size > maxBytes || size > Integer.MAX_VALUE - 8) {
            throw new FdPassException(FdPassException.Reason.TOO_LARGE,
                    "memfd payload of " + size + " bytes; at most " + maxBytes);
        }
        byte[] out = new byte[(int) size];
        // the first pread's bytes are kept (a payload of 4 KB or more is not read from 0 again)
        int off = (int) (got > 0 ? Math.min(got, size) : 0);
        small.get(0, out, 0, off);
        int n = readInto(fd, out, off);
        if (n < size) {
            throw new NativeIoException("pread", Errno.EIO, "memfd ended at " + n + " of " + size);
        }
        return out;
    }

    /**
     * Fills {@code out} from file offset {@code from} (pread(2), in chunks of up to 1 MiB; small
     * rests through this thread's buffer, no allocation); returns where the file ended, which is
     * {@code out.length} unless it was shorter.
     */
    public static int readInto(Fd fd, byte[] out, int from) throws NativeIoException {
        int off = from;
        int rest = out.length - off;
        // small payloads (a stored task's description, ~0.5 KB) reuse this thread's buffer: a
        // recovery reads thousands of them, and each direct allocation costs a malloc and a cleaner
        Pointer buf = rest <= SMALL ? SMALL_BUFFER.get() : Native.allocate(Math.min(CHUNK, Math.max(1, rest)));
        while (off < out.length) {
            int want = Math.min(CHUNK, out.length - off);
            long n = Native.pread(fd.get(), buf, want, off);
            if (n <= 0) {
                break;
            }
            buf.get(0, out, off, (int) n);
            off += (int) n;
        }
        return off;
    }
}
