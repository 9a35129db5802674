package warren.fdpass.codec;

import com.google.protobuf.Message;
import warren.fdpass.Fd;
import warren.fdpass.Received;

/**
 * A validated envelope and the fds it refers to. Every attached fd is referenced by exactly one
 * fd field; the handler {@link #take takes} each by the index in that field. Closing closes the
 * fds not taken (e.g. when the handler rejects the request).
 */
public final class Decoded<T extends Message> implements AutoCloseable {
    private final T message;
    private final Received received;

    Decoded(T message, Received received) {
        this.message = message;
        this.received = received;
    }

    public T message() {
        return message;
    }

    /** Takes ownership of the fd that an fd field's value names. */
    public Fd take(int fdIndex) {
        return received.take(fdIndex);
    }

    /** Borrows the fd that an fd field names, to inspect it before taking it. */
    public Fd peek(int fdIndex) {
        Fd f = received.fds().get(fdIndex);
        if (f == null) {
            throw new IllegalStateException("fd index " + fdIndex + " already taken");
        }
        return f;
    }

    public int fdCount() {
        return received.fdCount();
    }

    @Override
    public void close() {
        received.close();
    }
}
