package warren.fdpass;

import java.nio.ByteBuffer;
import jnr.ffi.Pointer;
import warren.fdpass.libc.Layout;
import warren.fdpass.libc.Native;

/**
 * sendmmsg(2) from preallocated slots, the sending twin of {@link RecvBatch}: one direct buffer of
 * {@code count} slots of {@code slot} bytes, the mmsghdr and iovec arrays pointing at them (one
 * iovec per message), built once. Fill slot i through {@link #buffer()} at {@link #offset}(i),
 * set its {@link #length(int, int)}, then {@link #send} messages {@code from..from+n-1} in one
 * call without allocating. Single-threaded.
 *
 * <p>Meant for the packets software GSO cuts out of one super-packet ({@code warren.packet.Gso}
 * writes segment k into slot k) on their way to a client that takes one packet per message: one
 * syscall for up to {@code count} packets instead of one each. On a connected datagram or
 * SEQPACKET socket each message is one packet; a short count means the socket was full at that
 * message, which the caller resends from (e.g. on EPOLLOUT) or drops like any packet.
 */
public final class SendBatch {
    /** MSG_DONTWAIT | MSG_NOSIGNAL: never block a loop thread, a closed peer is EPIPE not SIGPIPE. */
    private static final int FLAGS = Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL;
    private final int count;
    private final int slot;
    private final ByteBuffer buffer;
    private final Pointer[] slots;
    private final Pointer mmsg;
    private final Pointer iovs;
    /** mmsg sliced at each message, so {@link #send} from any index allocates nothing. */
    private final Pointer[] mmsgAt;

    public SendBatch(int count, int slot) {
        if (count < 1 || slot < 1) {
            throw new IllegalArgumentException("count " + count + ", slot " + slot);
        }
        this.count = count;
        this.slot = slot;
        this.buffer = ByteBuffer.allocateDirect(count * slot);
        Pointer base = Pointer.wrap(Native.RUNTIME, buffer);
        this.slots = new Pointer[count];
        this.mmsgAt = new Pointer[count];
        this.mmsg = Native.allocate(count * Layout.MMSGHDR_SIZE);
        this.iovs = Native.allocate(count * Layout.IOVEC_SIZE);
        for (int i = 0; i < count; i++) {
            slots[i] = base.slice((long) i * slot);
            long iov = (long) i * Layout.IOVEC_SIZE;
            iovs.putAddress(iov + Layout.IOV_BASE, slots[i].address());
            iovs.putLong(iov + Layout.IOV_LEN, 0);
            long m = (long) i * Layout.MMSGHDR_SIZE;
            mmsg.putAddress(m + Layout.MSG_IOV, iovs.address() + iov);
            mmsg.putLong(m + Layout.MSG_IOVLEN, 1);
            mmsgAt[i] = mmsg.slice(m);
        }
    }

    /** Sets the length of message {@code i} (the bytes of its slot that {@link #send} sends). */
    public void length(int i, int length) {
        if (length < 0 || length > slot) {
            throw new IllegalArgumentException("message of " + length + " bytes in a slot of " + slot);
        }
        iovs.putLong((long) i * Layout.IOVEC_SIZE + Layout.IOV_LEN, length);
    }

    /** The length set for message {@code i}. */
    public int length(int i) {
        return (int) iovs.getLong((long) i * Layout.IOVEC_SIZE + Layout.IOV_LEN);
    }

    /**
     * Sends messages {@code from .. from + n - 1} in one sendmmsg(2) without blocking: the number
     * sent (from {@code from} on), 0 if the socket could not take the first (EAGAIN), or
     * {@code -errno} if the first failed otherwise (EPIPE: the peer is gone).
     */
    public int send(int fd, int from, int n) {
        if (from < 0 || n < 0 || from + n > count) {
            throw new IllegalArgumentException("messages " + from + ".." + (from + n) + " of " + count);
        }
        if (n == 0) {
            return 0;
        }
        int sent = Native.sendmmsg(fd, mmsgAt[from], n, FLAGS);
        return sent == Native.WOULD_BLOCK ? 0 : sent;
    }

    /** {@code send(fd, 0, n)}. */
    public int send(int fd, int n) {
        return send(fd, 0, n);
    }

    /** Bytes the kernel took of message {@code i} in the last {@link #send} that reached it. */
    public int sent(int i) {
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

    /** Bytes per slot: the longest message. */
    public int slotSize() {
        return slot;
    }
}
