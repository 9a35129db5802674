package warren.daemon.client;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.fdpass.Fd;
import warren.fdpass.FdPassException;
import warren.fdpass.Received;
import warren.fdpass.SeqpacketSocket;
import warren.fdpass.codec.ControlCodec;
import warren.fdpass.codec.Decoded;
import warren.fdpass.codec.Encoded;
import warren.fdpass.codec.ProtocolException;
import warren.fdpass.libc.NativeIoException;

/**
 * The Java client of a warren control socket: many requests in flight on one connection, each
 * answered through a future; early {@code Accepted} answers go to a per-request listener, other
 * non-final answers ({@code UpgradeProgress}, {@code TraceChunk}) to another. A
 * reader thread decodes answers and matches them by id. Requests with id 0 get a fresh id.
 * Sent fds are borrowed (the caller still owns and closes its copies).
 */
public final class ControlClient implements AutoCloseable {
    private record Pending(CompletableFuture<Reply> done, Consumer<Response> onAccepted, Consumer<Response> onProgress) {}

    private final SeqpacketSocket socket;
    private final Map<Long, Pending> pending = new ConcurrentHashMap<>();
    private final AtomicLong nextId = new AtomicLong(1L << 32);
    private final Thread reader;
    private volatile boolean closed;
    private volatile Consumer<Response> unmatched = r -> { };

    private ControlClient(SeqpacketSocket socket) {
        this.socket = socket;
        this.reader = new Thread(this::readLoop, "warren-control-client");
        this.reader.setDaemon(true);
        this.reader.start();
    }

    public static ControlClient connect(Path control) throws IOException {
        return new ControlClient(SeqpacketSocket.connect(control));
    }

    public SeqpacketSocket socket() {
        return socket;
    }

    /** Where answers that match no request in flight go (e.g. errors with id 0). */
    public void onUnmatched(Consumer<Response> c) {
        unmatched = c;
    }

    public CompletableFuture<Reply> call(Request.Builder request, List<Fd> fds) throws IOException {
        return call(request, fds, null);
    }

    /** Sends a request; the future completes with its final answer. */
    public CompletableFuture<Reply> call(Request.Builder request, List<Fd> fds, Consumer<Response> onAccepted)
            throws IOException {
        return call(request, fds, onAccepted, null);
    }

    /**
     * As {@link #call(Request.Builder, List, Consumer)}, with {@code onProgress} told of every
     * other non-final answer (UpgradeProgress, TraceChunk) in order, on the reader thread.
     */
    public CompletableFuture<Reply> call(Request.Builder request, List<Fd> fds, Consumer<Response> onAccepted,
            Consumer<Response> onProgress) throws IOException {
        if (request.getId() == 0) {
            request.setId(nextId.getAndIncrement());
        }
        Request req = request.build();
        Pending p = new Pending(new CompletableFuture<>(), onAccepted, onProgress);
        if (pending.putIfAbsent(req.getId(), p) != null) {
            throw new IllegalArgumentException("request id " + req.getId() + " is already in flight");
        }
        try (Encoded enc = ControlCodec.encodeRequest(req, fds)) {
            synchronized (socket) {
                socket.sendBlocking(enc.bytes(), enc.fds(), 30_000);
            }
        } catch (IOException | RuntimeException e) {
            pending.remove(req.getId());
            throw e;
        }
        if (closed) {
            failAll(new IOException("connection closed"));
        }
        return p.done();
    }

    private void readLoop() {
        try {
            while (!closed) {
                Received r;
                try {
                    r = socket.receiveBlocking(250);
                } catch (FdPassException e) {
                    if (e.reason() == FdPassException.Reason.TIMEOUT) {
                        continue;
                    }
                    throw e;
                }
                if (r.isEof()) {
                    failAll(new IOException("the daemon closed the control connection"));
                    return;
                }
                Decoded<Response> d;
                try {
                    d = ControlCodec.decodeResponse(r);
                } catch (ProtocolException e) {
                    unmatched.accept(Response.newBuilder().setId(e.id()).setError(e.toError()).build());
                    continue;
                }
                Response resp = d.message();
                if (isNonFinal(resp.getBodyCase())) {
                    Pending p = pending.get(resp.getId());
                    d.close();
                    Consumer<Response> to = p == null ? null
                            : resp.getBodyCase() == Response.BodyCase.ACCEPTED ? p.onAccepted() : p.onProgress();
                    if (to != null) {
                        to.accept(resp);
                    }
                    continue;
                }
                Pending p = pending.remove(resp.getId());
                if (p == null) {
                    d.close();
                    unmatched.accept(resp);
                    continue;
                }
                p.done().complete(new Reply(d));
            }
        } catch (NativeIoException | FdPassException | RuntimeException e) {
            if (!closed) {
                failAll(e instanceof IOException ? (IOException) e : new IOException(e));
            }
        }
    }

    /** Answers that leave the request in flight (control.proto: accepted, upgrade_progress, trace_chunk). */
    public static boolean isNonFinal(Response.BodyCase body) {
        return body == Response.BodyCase.ACCEPTED || body == Response.BodyCase.UPGRADE_PROGRESS
                || body == Response.BodyCase.TRACE_CHUNK;
    }

    private void failAll(IOException e) {
        for (Long id : List.copyOf(pending.keySet())) {
            Pending p = pending.remove(id);
            if (p != null) {
                p.done().completeExceptionally(e);
            }
        }
    }

    public int inFlight() {
        return pending.size();
    }

    @Override
    public void close() {
        closed = true;
        try {
            reader.join(2000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        socket.close();
        failAll(new IOException("client closed"));
    }
}
