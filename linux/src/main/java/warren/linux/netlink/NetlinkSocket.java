package warren.linux.netlink;

import jnr.ffi.Pointer;
import warren.fdpass.Fd;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * A netlink socket (AF_NETLINK, SOCK_RAW, blocking) and the one reader of the kernel's answers:
 * {@link #exchange} sends the messages a {@link NetlinkMessage} holds and reads until every
 * request of a sequence range is answered.
 *
 * <p>An answer is an {@code NLMSG_ERROR} (error 0 = ACK, else {@code -errno}) carrying the
 * request's sequence number, or {@code NLMSG_DONE} at the end of a dump. Other messages with a
 * sequence number of the range (a GET's reply, a dump's parts) go to the caller's {@link Reply};
 * messages of other sequence numbers (late answers to an earlier request) are skipped.
 *
 * <pre>
 * nlmsgerr (after nlmsghdr): 0 i32 error (0 or -errno)  4 the request's nlmsghdr ...
 * </pre>
 *
 * One socket per instance, in the network namespace of the thread that opened it; not thread-safe.
 */
public final class NetlinkSocket implements AutoCloseable {
    /** A message answering one of the requests: its type and payload {@code [payload, end)} in {@link #buffer()}. */
    public interface Reply {
        void message(int type, int payload, int end);
    }

    private final Fd fd;
    private final Pointer rx;
    private final int rxSize;
    private int seq;

    /** {@code protocol}: NETLINK_ROUTE, NETLINK_NETFILTER, ...; sequence numbers start after {@code firstSeq}. */
    public NetlinkSocket(int protocol, int receiveSize, int firstSeq) throws NativeIoException {
        this.fd = Fd.adopt(Native.socket(Native.AF_NETLINK, Native.SOCK_RAW | Native.SOCK_CLOEXEC, protocol));
        this.rx = Native.allocate(receiveSize);
        this.rxSize = receiveSize;
        this.seq = firstSeq;
    }

    /** The sequence number for the next request. */
    public int nextSeq() {
        return ++seq;
    }

    /** Where the answers are read: {@link Reply} offsets point in here. */
    public Pointer buffer() {
        return rx;
    }

    /** A request answered by one ACK or error: {@link #exchange} of one sequence number. */
    public int exchange(NetlinkMessage m, int requestSeq, Reply reply, String what) throws NativeIoException {
        return exchange(m, requestSeq, requestSeq, reply, what);
    }

    /**
     * Sends {@code m} (all its messages, one write) and reads until each sequence number in
     * {@code [firstSeq, lastSeq]} has had its NLMSG_ERROR, or an NLMSG_DONE of the range came.
     * Returns the first error's errno, 0 if none. {@code reply} (may be null) sees every other
     * message of the range.
     */
    public int exchange(NetlinkMessage m, int firstSeq, int lastSeq, Reply reply, String what)
            throws NativeIoException {
        int len = m.length();
        if (Native.ioResult("write", Native.write(fd.get(), m.buffer(), len)) != len) {
            throw new NativeIoException("sendmsg", Errno.EIO, what);
        }
        int pending = lastSeq - firstSeq + 1;
        int error = 0;
        while (true) {
            long n = Native.ioResult("read", Native.read(fd.get(), rx, rxSize));
            for (int off = 0; off + NetlinkMessage.NLMSG_HDRLEN <= n; ) {
                int mlen = rx.getInt(off);
                if (mlen < NetlinkMessage.NLMSG_HDRLEN || off + mlen > n) {
                    break;
                }
                int type = rx.getShort(off + 4) & 0xFFFF;
                int mseq = rx.getInt(off + 8);
                if (mseq - firstSeq >= 0 && lastSeq - mseq >= 0) {
                    if (type == NetlinkMessage.NLMSG_ERROR) {
                        int err = -rx.getInt(off + NetlinkMessage.NLMSG_HDRLEN);
                        if (err != 0 && error == 0) {
                            error = err;
                        }
                        if (--pending == 0) {
                            return error;
                        }
                    } else if (type == NetlinkMessage.NLMSG_DONE) {
                        return error; // the end of a dump
                    } else if (reply != null) {
                        reply.message(type, off + NetlinkMessage.NLMSG_HDRLEN, off + mlen);
                    }
                }
                off += NetlinkMessage.align(mlen);
            }
        }
    }

    @Override
    public void close() {
        fd.close();
    }
}
