package warren.linux.net;

import jnr.ffi.Pointer;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * TUN devices (Documentation/networking/tuntap.rst): open /dev/net/tun and TUNSETIFF with
 * IFF_TUN | IFF_NO_PI, so each read(2) returns one raw IP packet and each write(2) injects one.
 * The device is created in the calling thread's network namespace (see {@link Netns#call}); it
 * lives as long as its fd, unless made persistent.
 *
 * <pre>
 * struct ifreq (40): 0 char ifr_name[16]   16 short ifr_flags
 * </pre>
 */
public final class Tun {
    private Tun() {}

    public static final long TUNSETIFF = 0x400454caL;
    public static final int IFF_TUN = 0x0001;
    public static final int IFF_NO_PI = 0x1000;
    public static final int IFF_MULTI_QUEUE = 0x0100;
    private static final int IFREQ_SIZE = 40;
    private static final int IFNAMSIZ = 16;
    private static final int O_RDWR = 2;

    /** Creates (or attaches to) TUN device {@code name}; the fd is non-blocking if asked. */
    public static Fd open(String name, boolean nonBlocking) throws NativeIoException {
        byte[] n = name.getBytes(java.nio.charset.StandardCharsets.US_ASCII);
        if (n.length >= IFNAMSIZ) {
            throw new IllegalArgumentException("interface name too long: " + name);
        }
        Fd fd = Fd.adopt(Native.open("/dev/net/tun", O_RDWR | (nonBlocking ? Native.O_NONBLOCK : 0)));
        try {
            Pointer ifr = Native.allocate(IFREQ_SIZE);
            ifr.put(0, n, 0, n.length);
            ifr.putShort(IFNAMSIZ, (short) (IFF_TUN | IFF_NO_PI));
            Native.ioctl(fd.get(), TUNSETIFF, ifr, "TUNSETIFF " + name);
            return fd;
        } catch (NativeIoException | RuntimeException e) {
            fd.close();
            throw e;
        }
    }

    /** if_nametoindex(3) in the calling thread's namespace; 0 if there is no such interface. */
    public static int index(String name) {
        return Native.if_nametoindex(name);
    }
}
