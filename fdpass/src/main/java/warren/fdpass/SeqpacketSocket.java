package warren.fdpass;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import jnr.ffi.Pointer;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Layout;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * A connected AF_UNIX SOCK_SEQPACKET socket that carries messages of bytes plus up to
 * {@link Native#SCM_MAX_FD} fds each, one {@code sendmsg(2)} per message, and receives them with
 * {@code MSG_CMSG_CLOEXEC}.
 *
 * <p>The socket is non-blocking. {@link #send} and {@link #receive} return "would block" (false /
 * null) so they can sit in an epoll loop; {@link #sendBlocking} and {@link #receiveBlocking} wait
 * with poll(2) up to a deadline, for clients and the handoff. Native buffers ({@code msghdr},
 * {@code iovec}, control and data) are allocated once per socket, separately for the send and the
 * receive side, so one thread may send while another receives.
 *
 * <p>Receive rules: MSG_TRUNC (message larger than the receive buffer) or MSG_CTRUNC (more fds than
 * the control buffer holds) closes every fd that did arrive and throws
 * {@link FdPassException.Reason#TRUNCATED}; MSG_CTRUNC with room for SCM_MAX_FD fds means the
 * kernel could not install them (the receiver is out of fds) and throws
 * {@link FdPassException.Reason#FDS_NOT_INSTALLED} with the message's bytes. A zero-length read is end of file when the peer has
 * hung up (POLLRDHUP), otherwise an invalid empty message.
 *
 * <p>Sent fds are borrowed: the kernel duplicates them into the message; the caller still owns
 * and closes its own.
 */
public final class SeqpacketSocket implements AutoCloseable {
    /** Default largest message: warren's inline envelope limit. */
    public static final int DEFAULT_MAX_MESSAGE = 64 * 1024;

    private final Fd fd;
    private final PeerCredentials peer;
    private final int maxMessage;
    private final int maxFdsPerReceive;

    // send side
    private final Pointer sendMsg = Native.allocate(Layout.MSGHDR_SIZE);
    private final Pointer sendIov = Native.allocate(Layout.IOVEC_SIZE);
    private final Pointer sendControl = Native.allocate(Layout.cmsgSpace(Native.SCM_MAX_FD * 4));
    private final Pointer sendData;
    // receive side
    private final Pointer recvMsg = Native.allocate(Layout.MSGHDR_SIZE);
    private final Pointer recvIov = Native.allocate(Layout.IOVEC_SIZE);
    private final Pointer recvControl;
    private final int recvControlLen;
    private final Pointer recvData;

    SeqpacketSocket(Fd fd, int maxMessage, int maxFdsPerReceive) throws NativeIoException {
        this.fd = fd;
        this.maxMessage = maxMessage;
        this.maxFdsPerReceive = maxFdsPerReceive;
        this.sendData = Native.allocate(maxMessage);
        this.recvData = Native.allocate(maxMessage);
        // room for the fds only: SCM_CREDENTIALS arrives only if we set SO_PASSCRED, which we do not
        this.recvControlLen = Layout.cmsgSpace(maxFdsPerReceive * 4);
        this.recvControl = Native.allocate(recvControlLen);
        int[] cred = new int[3];
        Native.getsockoptInts(fd.get(), Native.SOL_SOCKET, Native.SO_PEERCRED, cred);
        this.peer = new PeerCredentials(cred[0], cred[1], cred[2], Native.getsockoptPeerGroups(fd.get()));
    }

    /** Wraps an owned, connected SEQPACKET socket (checked) with the default limits. */
    public static SeqpacketSocket wrap(Fd fd) throws NativeIoException, FdPassException {
        return wrap(fd, DEFAULT_MAX_MESSAGE, Native.SCM_MAX_FD);
    }

    /** Wraps with explicit limits; {@code maxFdsPerReceive} below 253 is for tests of CTRUNC. */
    public static SeqpacketSocket wrap(Fd fd, int maxMessage, int maxFdsPerReceive)
            throws NativeIoException, FdPassException {
        FdInfo info = FdInfo.of(fd);
        if (!info.isSocket() || info.domain() != Native.AF_UNIX || info.type() != Native.SOCK_SEQPACKET
                || info.listening()) {
            throw new FdPassException(FdPassException.Reason.BAD_FD_TYPE,
                    fd + " is " + info.describe() + ", expected a connected AF_UNIX SOCK_SEQPACKET socket");
        }
        int flags = Native.fcntl(fd.get(), Native.F_GETFL, 0);
        if ((flags & Native.O_NONBLOCK) == 0) {
            Native.fcntl(fd.get(), Native.F_SETFL, flags | Native.O_NONBLOCK);
        }
        return new SeqpacketSocket(fd, maxMessage, maxFdsPerReceive);
    }

    /** Connects to a listening SEQPACKET socket at {@code path}. */
    public static SeqpacketSocket connect(Path path) throws NativeIoException, FdPassException {
        Fd fd = Fd.adopt(Native.socket(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC, 0));
        try {
            Native.connect(fd.get(), Native.sockaddrUn(path.toString()), path.toString());
            return wrap(fd);
        } catch (NativeIoException | FdPassException | RuntimeException e) {
            fd.close();
            throw e;
        }
    }

    /** A connected pair (socketpair(2)), for tests and in-process plumbing. */
    public static SeqpacketSocket[] pair() throws NativeIoException, FdPassException {
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
        Fd a = Fd.adopt(sv[0]);
        Fd b = Fd.adopt(sv[1]);
        try {
            return new SeqpacketSocket[] {wrap(a), wrap(b)};
        } catch (NativeIoException | FdPassException | RuntimeException e) {
            a.close();
            b.close();
            throw e;
        }
    }

    public Fd fd() {
        return fd;
    }

    public PeerCredentials peer() {
        return peer;
    }

    public int maxMessage() {
        return maxMessage;
    }

    /**
     * Sends one message with {@code fds} attached in one sendmsg(2). Returns false if the socket
     * buffer is full (EAGAIN): nothing was sent, try again on EPOLLOUT.
     *
     * @throws FdPassException TOO_MANY_FDS for more than 253 fds, TOO_LARGE for more than
     *     {@link #maxMessage()} bytes, EMPTY_MESSAGE for zero bytes
     */
    public boolean send(byte[] data, List<Fd> fds) throws NativeIoException, FdPassException {
        return send(data, 0, data.length, fds);
    }

    public boolean send(byte[] data, int off, int len, List<Fd> fds) throws NativeIoException, FdPassException {
        int n = fds == null ? 0 : fds.size();
        if (n > Native.SCM_MAX_FD) {
            throw new FdPassException(FdPassException.Reason.TOO_MANY_FDS,
                    n + " fds in one message; at most " + Native.SCM_MAX_FD + " (SCM_MAX_FD)");
        }
        if (len > maxMessage) {
            throw new FdPassException(FdPassException.Reason.TOO_LARGE,
                    "message of " + len + " bytes; at most " + maxMessage + " inline");
        }
        if (len == 0) {
            throw new FdPassException(FdPassException.Reason.EMPTY_MESSAGE, "zero-length message");
        }
        sendData.put(0, data, off, len);
        sendIov.putAddress(Layout.IOV_BASE, sendData.address());
        sendIov.putLong(Layout.IOV_LEN, len);
        sendMsg.putAddress(Layout.MSG_NAME, 0L);
        sendMsg.putInt(Layout.MSG_NAMELEN, 0);
        sendMsg.putAddress(Layout.MSG_IOV, sendIov.address());
        sendMsg.putLong(Layout.MSG_IOVLEN, 1);
        if (n > 0) {
            sendControl.putLong(Layout.CMSG_LEN_OFF, Layout.cmsgLen(n * 4));
            sendControl.putInt(Layout.CMSG_LEVEL, Native.SOL_SOCKET);
            sendControl.putInt(Layout.CMSG_TYPE, Native.SCM_RIGHTS);
            for (int i = 0; i < n; i++) {
                sendControl.putInt(Layout.CMSG_HDR_SIZE + 4L * i, fds.get(i).get());
            }
            sendMsg.putAddress(Layout.MSG_CONTROL, sendControl.address());
            sendMsg.putLong(Layout.MSG_CONTROLLEN, Layout.cmsgSpace(n * 4));
        } else {
            sendMsg.putAddress(Layout.MSG_CONTROL, 0L);
            sendMsg.putLong(Layout.MSG_CONTROLLEN, 0);
        }
        sendMsg.putInt(Layout.MSG_FLAGS, 0);
        long rc = Native.sendmsg(fd.get(), sendMsg, Native.MSG_NOSIGNAL | Native.MSG_DONTWAIT);
        return rc != Native.WOULD_BLOCK;
    }

    /** Sends, waiting for room up to {@code timeoutMs}. */
    public void sendBlocking(byte[] data, List<Fd> fds, long timeoutMs) throws NativeIoException, FdPassException {
        long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
        while (!send(data, fds)) {
            await(Native.POLLOUT, deadline, "send");
        }
    }

    /**
     * Receives one message, or null if none is queued (EAGAIN). Returns {@link Received#eof()} when
     * the peer has closed.
     */
    public Received receive() throws NativeIoException, FdPassException {
        recvIov.putAddress(Layout.IOV_BASE, recvData.address());
        recvIov.putLong(Layout.IOV_LEN, maxMessage);
        recvMsg.putAddress(Layout.MSG_NAME, 0L);
        recvMsg.putInt(Layout.MSG_NAMELEN, 0);
        recvMsg.putAddress(Layout.MSG_IOV, recvIov.address());
        recvMsg.putLong(Layout.MSG_IOVLEN, 1);
        recvMsg.putAddress(Layout.MSG_CONTROL, recvControl.address());
        recvMsg.putLong(Layout.MSG_CONTROLLEN, recvControlLen);
        recvMsg.putInt(Layout.MSG_FLAGS, 0);
        long n = Native.recvmsg(fd.get(), recvMsg, Native.MSG_CMSG_CLOEXEC | Native.MSG_DONTWAIT);
        if (n == Native.WOULD_BLOCK) {
            return null;
        }
        int flags = recvMsg.getInt(Layout.MSG_FLAGS);
        List<Fd> fds = collectFds();
        if ((flags & (Native.MSG_TRUNC | Native.MSG_CTRUNC)) == Native.MSG_CTRUNC
                && maxFdsPerReceive >= Native.SCM_MAX_FD) {
            // room for every fd a message can carry: the kernel failed to install them (scm_detach_fds)
            int arrived = fds.size();
            Fd.closeAll(fds);
            byte[] data = new byte[(int) n];
            recvData.get(0, data, 0, (int) n);
            throw new FdPassException(FdPassException.Reason.FDS_NOT_INSTALLED, "the fds of this message could not"
                    + " be received (MSG_CTRUNC with room for " + Native.SCM_MAX_FD + " fds: the receiver is out of"
                    + " fds, EMFILE); closed the " + arrived + " that arrived", data);
        }
        if ((flags & (Native.MSG_TRUNC | Native.MSG_CTRUNC)) != 0) {
            int arrived = fds.size();
            Fd.closeAll(fds);
            throw new FdPassException(FdPassException.Reason.TRUNCATED,
                    ((flags & Native.MSG_TRUNC) != 0 ? "message larger than " + maxMessage + " bytes"
                            : "more fds than the receiver's limit of " + maxFdsPerReceive)
                            + " (MSG_" + ((flags & Native.MSG_TRUNC) != 0 ? "TRUNC" : "CTRUNC")
                            + "); closed the " + arrived + " fds that arrived");
        }
        if (n == 0) {
            if (fds.isEmpty() && peerHungUp()) {
                return Received.eof();
            }
            Fd.closeAll(fds);
            throw new FdPassException(FdPassException.Reason.EMPTY_MESSAGE, "zero-length message");
        }
        byte[] data = new byte[(int) n];
        recvData.get(0, data, 0, (int) n);
        return Received.of(data, fds);
    }

    /** Receives one message, waiting up to {@code timeoutMs}. */
    public Received receiveBlocking(long timeoutMs) throws NativeIoException, FdPassException {
        long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
        while (true) {
            Received r = receive();
            if (r != null) {
                return r;
            }
            await(Native.POLLIN, deadline, "receive");
        }
    }

    private List<Fd> collectFds() {
        long controlLen = recvMsg.getLong(Layout.MSG_CONTROLLEN);
        List<Fd> fds = new ArrayList<>(0);
        long off = 0;
        while (off + Layout.CMSG_HDR_SIZE <= controlLen) {
            long len = recvControl.getLong(off + Layout.CMSG_LEN_OFF);
            int level = recvControl.getInt(off + Layout.CMSG_LEVEL);
            int type = recvControl.getInt(off + Layout.CMSG_TYPE);
            if (len < Layout.CMSG_HDR_SIZE || off + len > controlLen) {
                break; // malformed by the kernel's own rules: nothing more to read
            }
            if (level == Native.SOL_SOCKET && type == Native.SCM_RIGHTS) {
                int count = (int) ((len - Layout.CMSG_HDR_SIZE) / 4);
                for (int i = 0; i < count; i++) {
                    fds.add(Fd.adopt(recvControl.getInt(off + Layout.CMSG_HDR_SIZE + 4L * i)));
                }
            }
            off += Layout.cmsgAlign((int) len);
        }
        return fds;
    }

    private boolean peerHungUp() throws NativeIoException {
        int revents = Native.pollOne(fd.get(), Native.POLLIN | Native.POLLRDHUP, 0);
        return (revents & (Native.POLLRDHUP | Native.POLLHUP)) != 0;
    }

    private void await(int events, long deadline, String what) throws NativeIoException, FdPassException {
        long left = deadline - System.nanoTime();
        if (left <= 0) {
            throw new FdPassException(FdPassException.Reason.TIMEOUT, what + " timed out");
        }
        int revents = Native.pollOne(fd.get(), events, (int) Math.max(1, Math.min(Integer.MAX_VALUE, left / 1_000_000L)));
        if ((revents & Native.POLLERR) != 0) {
            int err = Native.getsockoptInt(fd.get(), Native.SOL_SOCKET, Native.SO_ERROR);
            throw new NativeIoException(what, err == 0 ? Errno.EPIPE : err);
        }
        if (events == Native.POLLOUT && (revents & Native.POLLHUP) != 0) {
            throw new FdPassException(FdPassException.Reason.CLOSED, "peer closed the connection");
        }
    }

    /** shutdown(SHUT_WR): the peer reads EOF after the queued messages. */
    public void shutdownOutput() throws NativeIoException {
        Native.shutdown(fd.get(), Native.SHUT_WR);
    }

    @Override
    public void close() {
        fd.close();
    }

    @Override
    public String toString() {
        return "seqpacket " + fd + " (" + peer + ")";
    }
}
