package warren.fdpass;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * One message received over a SOCK_SEQPACKET socket: its bytes and the fds that arrived with it.
 * The receiver owns the fds: it takes the ones it keeps ({@link #take(int)}) and closes this
 * message, which closes the rest.
 */
public final class Received implements AutoCloseable {
    private static final Received EOF = new Received(new byte[0], Collections.emptyList(), true);

    private final byte[] data;
    private final List<Fd> fds;
    private final boolean eof;

    private Received(byte[] data, List<Fd> fds, boolean eof) {
        this.data = data;
        this.fds = fds;
        this.eof = eof;
    }

    static Received of(byte[] data, List<Fd> fds) {
        return new Received(data, fds, false);
    }

    /** The marker for "the peer closed the connection". */
    public static Received eof() {
        return EOF;
    }

    public boolean isEof() {
        return eof;
    }

    public byte[] data() {
        return data;
    }

    public int fdCount() {
        return fds.size();
    }

    /** The fds still owned by this message (not yet taken), in arrival order; null where taken. */
    public List<Fd> fds() {
        return Collections.unmodifiableList(fds);
    }

    /** Takes ownership of the fd at {@code index}; the message no longer closes it. */
    public Fd take(int index) {
        Fd f = fds.get(index);
        if (f == null) {
            throw new IllegalStateException("fd index " + index + " already taken");
        }
        fds.set(index, null);
        return f.transfer();
    }

    /** Takes every remaining fd, in order. */
    public List<Fd> takeAll() {
        List<Fd> out = new ArrayList<>(fds.size());
        for (int i = 0; i < fds.size(); i++) {
            if (fds.get(i) != null) {
                out.add(take(i));
            }
        }
        return out;
    }

    /** Closes every fd not taken. */
    @Override
    public void close() {
        if (!eof) {
            Fd.closeAll(fds);
        }
    }
}
