package warren.cli;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Status;
import warren.control.v1.StatusReport;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;

/**
 * One connection to a daemon's control socket for a command: each failure becomes a
 * {@link CliException} with one line (unreachable, no answer in time, an {@code Error} answer with
 * its code), so every subcommand reports them alike.
 */
public final class Control implements AutoCloseable {
    /** How long a command waits for an answer. */
    static final long TIMEOUT_MS = 10_000;

    private final Path path;
    private final ControlClient client;

    private Control(Path path, ControlClient client) {
        this.path = path;
        this.client = client;
    }

    public static Control connect(Path path) throws CliException {
        try {
            return new Control(path, ControlClient.connect(path));
        } catch (IOException | RuntimeException e) {
            throw new CliException("cannot reach a daemon at " + path + ": " + e.getMessage());
        }
    }

    public Path path() {
        return path;
    }

    public ControlClient client() {
        return client;
    }

    /** Sends {@code request} and returns its final answer, which must be {@code want}. */
    public Response ask(Request.Builder request, Response.BodyCase want) throws CliException {
        Response r;
        try (Reply reply = client.call(request, List.of()).get(TIMEOUT_MS, TimeUnit.MILLISECONDS)) {
            r = reply.response();
        } catch (IOException e) {
            throw new CliException(path + ": " + e.getMessage());
        } catch (ExecutionException e) {
            throw new CliException(path + ": " + e.getCause().getMessage());
        } catch (TimeoutException e) {
            throw new CliException(path + ": no answer within " + TIMEOUT_MS + " ms");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new CliException("interrupted");
        }
        return expect(r, want);
    }

    /** The answer if it is {@code want}; an Error answer or another body as a one-line CliException. */
    public static Response expect(Response r, Response.BodyCase want) throws CliException {
        if (r.getBodyCase() == Response.BodyCase.ERROR) {
            throw new CliException(1, r.getError().getCode() + ": " + r.getError().getMessage(), r.getError().getCode());
        }
        if (r.getBodyCase() != want) {
            throw new CliException("unexpected answer " + r.getBodyCase() + " (expected " + want + ")");
        }
        return r;
    }

    /** The daemon's Status: its name and version head every command's output. */
    public StatusReport status() throws CliException {
        return ask(Request.newBuilder().setStatus(Status.getDefaultInstance()), Response.BodyCase.STATUS).getStatus();
    }

    @Override
    public void close() {
        client.close();
    }
}
