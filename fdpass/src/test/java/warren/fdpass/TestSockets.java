package warren.fdpass;

import java.util.ArrayList;
import java.util.List;
import jnr.ffi.Pointer;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/** Stream socket pairs and byte I/O through raw fds, for tests. */
public final class TestSockets {
    private TestSockets() {}

    public static Fd[] streamPair() throws NativeIoException {
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
        return new Fd[] {Fd.adopt(sv[0]), Fd.adopt(sv[1])};
    }

    /** n stream pairs; returns [ends sent away..., ends kept...]. */
    public static List<Fd[]> streamPairs(int n) throws NativeIoException {
        List<Fd[]> out = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            out.add(streamPair());
        }
        return out;
    }

    public static void writeAll(Fd fd, byte[] data) throws NativeIoException {
        Pointer p = Native.allocate(Math.max(1, data.length));
        p.put(0, data, 0, data.length);
        long off = 0;
        while (off < data.length) {
            long n = Native.ioResult("write", Native.write(fd.get(), p.slice(off), data.length - off));
            if (n > 0) {
                off += n;
            }
        }
    }

    public static byte[] readExactly(Fd fd, int len) throws NativeIoException {
        Pointer p = Native.allocate(Math.max(1, len));
        int off = 0;
        while (off < len) {
            long n = Native.ioResult("read", Native.read(fd.get(), p.slice(off), len - off));
            if (n == 0) {
                break;
            }
            if (n > 0) {
                off += (int) n;
            }
        }
        byte[] out = new byte[off];
        p.get(0, out, 0, off);
        return out;
    }
}
