package warren.daemon.testing.livefuzz;

import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import jnr.ffi.Pointer;
import warren.control.v1.Error;
import warren.control.v1.Response;
import warren.daemon.client.ControlClient;
import warren.fdpass.Fd;
import warren.fdpass.FdPassException;
import warren.fdpass.Received;
import warren.fdpass.SeqpacketSocket;
import warren.fdpass.codec.ControlCodec;
import warren.fdpass.codec.Decoded;
import warren.fdpass.codec.ProtocolException;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Layout;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * One fuzzing connection to a daemon's control socket, used by one thread: sends any bytes (empty,
 * oversized) with any fds in one sendmsg(2), reads every answer (closing the fds it carries), and
 * keeps the books the answers are checked against:
 * <ul>
 *   <li>every final answer names an id in flight on this connection (ids the daemon could read
 *       are counted per id; answers with id 0 are to messages it could not read; a mutation that
 *       made a message a spill of a foreign fd allows one answer of any id);</li>
 *   <li>a message with one right answer gets it (or RESOURCE_EXHAUSTED: "not now");</li>
 *   <li>no answer is INTERNAL, every answer decodes, the daemon never drops the connection.</li>
 * </ul>
 * A violation is reported to {@link Findings}.
 */
final class Connection implements AutoCloseable {
    private static final int SEND_BUFFER = 256 << 10;
    private static final long SEND_TIMEOUT_NS = 30_000_000_000L;

    private final SeqpacketSocket socket;
    private final Findings findings;
    private final TaskNumbers tasks;
    private final Pointer msg = Native.allocate(Layout.MSGHDR_SIZE);
    private final Pointer iov = Native.allocate(Layout.IOVEC_SIZE);
    private final Pointer control = Native.allocate(Layout.cmsgSpace(Native.SCM_MAX_FD * 4));
    private final Pointer data = Native.allocate(SEND_BUFFER);
    /** Final answers still due, by request id. */
    private final Map<Long, Integer> inFlight = new HashMap<>();
    /** The one right answer of a request, by id (only while its id is in flight once). */
    private final Map<Long, Error.Code> expected = new HashMap<>();
    private final Map<Long, String> what = new HashMap<>();
    private int wild;
    private int due;
    /** Messages without an id this side knows, not yet answered (for pacing only: their answers have id 0). */
    private int anonymous;
    /** Requests the daemon answers at once (no task body), not yet answered: for pacing. */
    private final java.util.Set<Long> prompt = new java.util.HashSet<>();
    boolean dead;
    long answers;
    /** Messages this side's kernel would not send (EMSGSIZE, ENOBUFS, ETOOMANYREFS): not the daemon's doing. */
    long unsendable;

    Connection(Path path, Findings findings, TaskNumbers tasks) throws Exception {
        this.socket = SeqpacketSocket.connect(path);
        this.findings = findings;
        this.tasks = tasks;
    }

    /** Requests whose final answer has not come (ids this side knows). */
    int due() {
        return due;
    }

    Map<Long, String> dueRequests() {
        Map<Long, String> out = new HashMap<>();
        inFlight.forEach((id, n) -> out.put(id, n + " x " + what.get(id)));
        return out;
    }

    /** Sends {@code m} (waiting for room while reading answers); false if the daemon has gone. */
    boolean send(Messages.Message m) throws Exception {
        if (dead) {
            return false;
        }
        if (m.idKind == Messages.IdKind.READ) {
            int n = inFlight.merge(m.id, 1, Integer::sum);
            due++;
            what.put(m.id, m.toString());
            if (m.prompt) {
                prompt.add(m.id);
            }
            if (n == 1 && m.expected != null) {
                expected.put(m.id, m.expected);
            } else {
                expected.remove(m.id); // two in flight with one id: DUPLICATE_ID for one, which is unknown
            }
        } else if (m.idKind == Messages.IdKind.WILD) {
            wild++;
            anonymous++;
        } else {
            anonymous++;
        }
        long deadline = System.nanoTime() + SEND_TIMEOUT_NS;
        while (true) {
            long rc;
            try {
                rc = sendmsg(m);
            } catch (NativeIoException e) {
                if (e.errno() == Errno.EPIPE || e.errno() == Errno.ECONNRESET) {
                    findings.add("the daemon closed a connection that was sending (" + e.getMessage() + ") before " + m);
                    dead = true;
                    return false;
                }
                forget(m);
                unsendable++;
                findings.note("not sent by this side's kernel: " + e.getMessage().replaceAll("[0-9]+", "N"));
                return false;
            }
            if (rc != Native.WOULD_BLOCK) {
                return true;
            }
            if (System.nanoTime() > deadline) {
                findings.add("the daemon read nothing from a connection for 30 s (sendmsg blocked) at " + m);
                dead = true;
                return false;
            }
            Native.pollOne(socket.fd().get(), Native.POLLIN | Native.POLLOUT, 100);
            drain();
        }
    }

    /** Undoes the books of a message that never left. */
    private void forget(Messages.Message m) {
        if (m.idKind == Messages.IdKind.READ) {
            Integer n = inFlight.get(m.id);
            if (n != null && n > 1) {
                inFlight.put(m.id, n - 1);
            } else if (n != null) {
                inFlight.remove(m.id);
                expected.remove(m.id);
                what.remove(m.id);
                prompt.remove(m.id);
            }
            due--;
        } else if (m.idKind == Messages.IdKind.WILD) {
            wild--;
            anonymous--;
        } else {
            anonymous--;
        }
    }

    private long sendmsg(Messages.Message m) throws NativeIoException {
        int len = m.bytes.length;
        data.put(0, m.bytes, 0, len);
        iov.putAddress(Layout.IOV_BASE, data.address());
        iov.putLong(Layout.IOV_LEN, len);
        msg.putAddress(Layout.MSG_NAME, 0L);
        msg.putInt(Layout.MSG_NAMELEN, 0);
        msg.putAddress(Layout.MSG_IOV, iov.address());
        msg.putLong(Layout.MSG_IOVLEN, 1);
        int n = m.fds.size();
        if (n > 0) {
            control.putLong(Layout.CMSG_LEN_OFF, Layout.cmsgLen(n * 4));
            control.putInt(Layout.CMSG_LEVEL, Native.SOL_SOCKET);
            control.putInt(Layout.CMSG_TYPE, Native.SCM_RIGHTS);
            for (int i = 0; i < n; i++) {
                control.putInt(Layout.CMSG_HDR_SIZE + 4L * i, m.fds.get(i).get());
            }
            msg.putAddress(Layout.MSG_CONTROL, control.address());
            msg.putLong(Layout.MSG_CONTROLLEN, Layout.cmsgSpace(n * 4));
        } else {
            msg.putAddress(Layout.MSG_CONTROL, 0L);
            msg.putLong(Layout.MSG_CONTROLLEN, 0);
        }
        msg.putInt(Layout.MSG_FLAGS, 0);
        return Native.sendmsg(socket.fd().get(), msg, Native.MSG_NOSIGNAL | Native.MSG_DONTWAIT);
    }

    /** Reads every answer queued now. */
    void drain() throws Exception {
        while (!dead) {
            Received r;
            try {
                r = socket.receive();
            } catch (FdPassException e) {
                findings.add("an answer the client could not receive: " + e.getMessage());
                continue;
            } catch (NativeIoException e) {
                findings.add("receive failed on a fuzzing connection: " + e.getMessage());
                dead = true;
                return;
            }
            if (r == null) {
                return;
            }
            if (r.isEof()) {
                findings.add("the daemon closed a fuzzing connection with " + due + " requests due");
                dead = true;
                return;
            }
            answer(r);
        }
    }

    /**
     * Messages the daemon answers at once (every body but the tasks': Splice, Upgrade, Downgrade,
     * Egress, Trace) not answered yet: how far the sender is ahead of the daemon.
     */
    int unread() {
        return prompt.size() + anonymous;
    }

    /**
     * Waits (reading answers) until at most {@code window} requests are unanswered or {@code ms}
     * pass: a sender far ahead of the daemon would fill its socket with messages that a dropped
     * connection then throws away unread.
     */
    void pace(int window, long ms) throws Exception {
        long deadline = System.nanoTime() + ms * 1_000_000L;
        while (!dead && unread() > window && System.nanoTime() < deadline) {
            await(10);
        }
    }

    /** Waits up to {@code ms} for answers and reads them. */
    void await(int ms) throws Exception {
        if (!dead) {
            Native.pollOne(socket.fd().get(), Native.POLLIN, ms);
            drain();
        }
    }

    private void answer(Received r) {
        Decoded<Response> d;
        try {
            d = ControlCodec.decodeResponse(r);
        } catch (ProtocolException e) {
            findings.add("an answer that does not decode: " + e.code() + " " + e.getMessage());
            return;
        }
        Response resp = d.message();
        findings.answer(resp.getBodyCase() == Response.BodyCase.ERROR ? "Error " + resp.getError().getCode()
                : resp.getBodyCase().name());
        d.close(); // the fds an answer hands back (Spliced's a and b, Upgraded's socket)
        answers++;
        if (resp.getBodyCase() == Response.BodyCase.ACCEPTED) {
            tasks.seen(resp.getAccepted().getTask());
            return;
        }
        if (ControlClient.isNonFinal(resp.getBodyCase())) {
            return;
        }
        if (resp.getBodyCase() == Response.BodyCase.ERROR && resp.getError().getCode() == Error.Code.RESOURCE_EXHAUSTED) {
            findings.note("RESOURCE_EXHAUSTED: " + resp.getError().getMessage().replaceAll("[0-9]+", "N"));
        }
        if (resp.getBodyCase() == Response.BodyCase.ERROR && resp.getError().getCode() == Error.Code.INTERNAL) {
            findings.add("INTERNAL error answered to id " + resp.getId() + " (" + what.get(resp.getId()) + "): "
                    + resp.getError().getMessage());
        }
        long id = resp.getId();
        Integer n = inFlight.get(id);
        if (n == null) {
            if (id == 0) {
                anonymous = Math.max(0, anonymous - 1);
                return; // an answer to a message the daemon could not read
            }
            if (wild > 0) {
                wild--;
                anonymous = Math.max(0, anonymous - 1);
                return;
            }
            findings.add("a final answer to id " + id + ", which is not in flight on its connection: "
                    + shortly(resp));
            return;
        }
        prompt.remove(id);
        if (n == 1) {
            inFlight.remove(id);
            Error.Code want = expected.remove(id);
            if (want != null) {
                Error.Code got = resp.getBodyCase() == Response.BodyCase.ERROR ? resp.getError().getCode() : null;
                if (got != want && got != Error.Code.RESOURCE_EXHAUSTED) {
                    findings.add("wrong answer to " + what.get(id) + ": expected " + want + ", got " + shortly(resp));
                }
                findings.answer("(one right answer, checked)");
            }
            what.remove(id);
        } else {
            inFlight.put(id, n - 1);
        }
        due--;
    }

    static String shortly(Response r) {
        if (r.getBodyCase() == Response.BodyCase.ERROR) {
            return "Error " + r.getError().getCode() + " \"" + r.getError().getMessage() + "\"";
        }
        return r.getBodyCase().name();
    }

    @Override
    public void close() {
        socket.close();
    }
}
