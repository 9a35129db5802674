package warren.splicer.client;

import com.google.protobuf.ByteString;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.function.LongConsumer;
import warren.control.v1.Limits;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.control.v1.Spliced;
import warren.daemon.client.ControlClient;
import warren.fdpass.Fd;

/**
 * The Java client of Splicer: hand a pair of sockets over, get them back with what happened.
 * Sent fds are borrowed (close your copies when you like: Splicer holds its own).
 */
public final class SplicerClient implements AutoCloseable {
    private final ControlClient control;

    private SplicerClient(ControlClient control) {
        this.control = control;
    }

    public static SplicerClient connect(Path controlSocket) throws IOException {
        return new SplicerClient(ControlClient.connect(controlSocket));
    }

    /** What came back: the original two sockets (owned by the caller now) and the counts. */
    public record Result(Spliced spliced, ByteString metadata, Fd a, Fd b) implements AutoCloseable {
        @Override
        public void close() {
            if (a != null) {
                a.close();
            }
            if (b != null) {
                b.close();
            }
        }
    }

    /** Thrown through the future when Splicer answers with an Error. */
    public static final class SpliceRefused extends IOException {
        private final warren.control.v1.Error error;

        SpliceRefused(warren.control.v1.Error error) {
            super(error.getCode() + ": " + error.getMessage());
            this.error = error;
        }

        public warren.control.v1.Error error() {
            return error;
        }
    }

    /**
     * Hands a and b over. {@code onAccepted} (may be null) gets the task number once relaying has
     * started; the future completes when the pair has ended.
     */
    public CompletableFuture<Result> splice(Fd a, Fd b, Limits limits, ByteString metadata, LongConsumer onAccepted)
            throws IOException {
        Request.Builder req = Request.newBuilder().setMetadata(metadata == null ? ByteString.EMPTY : metadata)
                .setSplice(Splice.newBuilder().setFdA(0).setFdB(1).setLimits(limits == null ? Limits.getDefaultInstance() : limits));
        return control.call(req, List.of(a, b), onAccepted == null ? null
                : (Response r) -> onAccepted.accept(r.getAccepted().getTask()))
                .thenCompose(reply -> {
                    CompletableFuture<Result> f = new CompletableFuture<>();
                    try (reply) {
                        Response r = reply.response();
                        if (r.getBodyCase() == Response.BodyCase.SPLICED) {
                            Spliced s = r.getSpliced();
                            f.complete(new Result(s, r.getMetadata(), reply.takeFd(s.getFdA()), reply.takeFd(s.getFdB())));
                        } else if (r.getBodyCase() == Response.BodyCase.ERROR) {
                            f.completeExceptionally(new SpliceRefused(r.getError()));
                        } else {
                            f.completeExceptionally(new IOException("unexpected answer: " + r.getBodyCase()));
                        }
                    }
                    return f;
                });
    }

    public ControlClient control() {
        return control;
    }

    @Override
    public void close() {
        control.close();
    }
}
