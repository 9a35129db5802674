package warren.fdpass;

import java.nio.ByteBuffer;
import jnr.ffi.Pointer;
import warren.fdpass.libc.Layout;
import warren.fdpass.libc.Native;

/**
 * recvmmsg(2) into preallocated slots: one direct buffer of {@code count} slots of {@code slot}
 * bytes, the mmsghdr and iovec arrays pointing at them, and a pointer per slot, all built once.
 * {@link #receive} reads up to {@code count} messages (packets) in one call without allocating.
 * Single-threaded.
 *
 * <p><b>Headroom</b> ({@link #receive(int, int)}): a message can be received {@code headroom}
 * bytes into its slot, so the caller can put a header in front of it without moving it (a
 * virtio_net_hdr before a plain packet on its way to a TUN with IFF_VNET_HDR). The iovecs are
 * rewritten only when the headroom changes.
 */
public final class RecvBatch {
    private final int count;
    private final int slot;
    private final ByteBuffer buffer;
    private final Pointer[] slots;
    private final Pointer mmsg;
    private final Pointer iovs;
    private int headroom;

    public RecvBatch(int count, int slot) {
        this.count = count;
        this.slot = slot;
        this.buffer = ByteBuffer.allocateDirect(count * slot);
        Pointer base = Pointer.wrap(Native.RUNTIME, buffer);
        this.slots = new Pointer[count];
        this.mmsg = Native.allocate(count * Layout.MMSGHDR_SIZE);
        this.iovs = Native.allocate(count * Layout.IOVEC_SIZE);
        for (int i = 0; i < count; i++) {
            slots[i] = base.slice((long) i * slot);
            long iov = (long) i * Layout.IOVEC_SIZE;
            iovs.putAddress(iov + Layout.IOV_BASE, slots[i].address());
            iovs.putLong(iov + Layout.IOV_LEN, slot);
            long m = (long) i * Layout.MMSGHDR_SIZE;
            mmsg.putAddress(m + Layout.MSG_IOV, iovs.address() + iov);
            mmsg.putLong(m + Layout.MSG_IOVLEN, 1);
        }
    }

    /**
     * Receives up to {@link #count()} messages, each into its slot at the headroom last set (0 at
     * first), without blocking: the number received, 0 if none
     * was queued (EAGAIN), or {@code -errno} on failure. A message of length 0 is end of file.
     */
    public int receive(int fd) {
        for (int i = 0; i < count; i++) {
            mmsg.putInt((long) i * Layout.MMSGHDR_SIZE + Layout.MSG_FLAGS, 0);
        }
        int got = Native.recvmmsg(fd, mmsg, count, Native.MSG_DONTWAIT);
        return got == Native.WOULD_BLOCK ? 0 : got;
    }

    /**
     * {@link #receive(int)} with each message put {@code headroom} bytes (0 to the slot size)
     * into its slot: message i starts at {@link #offset}(i) + headroom, and at most
     * {@code slot - headroom} bytes of it are received.
     */
    public int receive(int fd, int headroom) {
        if (headroom != this.headroom) {
            if (headroom < 0 || headroom >= slot) {
                throw new IllegalArgumentException("headroom " + headroom + " in a slot of " + slot);
            }
            for (int i = 0; i < count; i++) {
                long iov = (long) i * Layout.IOVEC_SIZE;
                iovs.putAddress(iov + Layout.IOV_BASE, slots[i].address() + headroom);
                iovs.putLong(iov + Layout.IOV_LEN, slot - headroom);
            }
            this.headroom = headroom;
        }
        return receive(fd);
    }

    /** The headroom of the last {@link #receive} (0 unless {@link #receive(int, int)} set one). */
    public int headroom() {
        return headroom;
    }

    /** Length of message {@code i} of the last {@link #receive}. */
    public int length(int i) {
        return mmsg.getInt((long) i * Layout.MMSGHDR_SIZE + Layout.MMSG_LEN);
    }

    /** Offset of slot {@code i} in {@link #buffer()}. */
    public int offset(int i) {
        return i * slot;
    }

    /** Pointer to the start of slot {@code i}. */
    public Pointer pointer(int i) {
        return slots[i];
    }

    public ByteBuffer buffer() {
        return buffer;
    }

    public int count() {
        return count;
    }
}
