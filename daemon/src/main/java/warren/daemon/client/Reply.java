package warren.daemon.client;

import warren.control.v1.Response;
import warren.fdpass.Fd;
import warren.fdpass.codec.Decoded;

/**
 * A final answer and the fds it carries (owned by the reply until taken; closing the reply closes
 * the rest).
 */
public final class Reply implements AutoCloseable {
    private final Decoded<Response> decoded;

    Reply(Decoded<Response> decoded) {
        this.decoded = decoded;
    }

    public Response response() {
        return decoded.message();
    }

    public boolean isError() {
        return decoded.message().getBodyCase() == Response.BodyCase.ERROR;
    }

    /** Takes the fd an fd field of the response names. */
    public Fd takeFd(int index) {
        return decoded.take(index);
    }

    public int fdCount() {
        return decoded.fdCount();
    }

    @Override
    public void close() {
        decoded.close();
    }

    @Override
    public String toString() {
        return decoded.message().toString();
    }
}
