package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Splice;
import warren.control.v1.Status;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.fdpass.Fd;
import warren.fdpass.Received;
import warren.fdpass.SeqpacketSocket;

/**
 * Issue 12, item 2: a front proxy that sends Splices and does not read its answers. Each pair ends
 * at once (its far ends are closed), so each answer holds both sockets in Splicer until it is
 * read. Those fds count against {@code splice.fd_reserve}: new Splices are refused with
 * RESOURCE_EXHAUSTED before the daemon runs out of fds, and no request gets TRUNCATED with its
 * sockets lost (before the fix the queued answers were not counted, recvmsg hit EMFILE and the
 * Splices were answered TRUNCATED (MSG_CTRUNC)). Another client is served all along.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class SplicerQueuedAnswersTest {
    private static final int SPLICES = 600;

    @TempDir
    Path dir;

    @Test
    void answersNobodyReadsCountAgainstTheFdReserve() throws Exception {
        Path sock = dir.resolve("low.sock");
        Path log = dir.resolve("out.log");
        Path conf = Files.writeString(dir.resolve("low.conf"), "splice.fd_reserve = 16\naudit.path = /dev/null\n");
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process p = new ProcessBuilder("bash", "-c", "ulimit -n 256 && exec \"$0\" \"$@\"", java, "-cp",
                System.getProperty("java.class.path"), Main.class.getName(), "--control", sock.toString(),
                "--config", conf.toString()).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        Fd[] listeners = Relayed.listeners();
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (!Files.exists(sock)) {
                assertTrue(System.nanoTime() < deadline && p.isAlive(), "splicer came up");
                Thread.sleep(20);
            }
            Map<Error.Code, Integer> errors = new EnumMap<>(Error.Code.class);
            int spliced = 0;
            try (SeqpacketSocket proxy = SeqpacketSocket.connect(sock); ControlClient other = ControlClient.connect(sock)) {
                for (int i = 0; i < SPLICES; i++) {
                    try (Relayed r = Relayed.open(listeners)) {
                        Request req = Request.newBuilder().setId(i + 1)
                                .setSplice(Splice.newBuilder().setFdA(0).setFdB(1)).build();
                        proxy.sendBlocking(req.toByteArray(), List.of(r.a, r.b), 10_000);
                    } // c and u closed: the pair ends at once, its answer holds a and b until read
                }
                // the proxy reads nothing yet; another client is served meanwhile
                try (Reply st = other.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                        .get(20, TimeUnit.SECONDS)) {
                    System.out.println("Splicer with " + SPLICES + " Splices unread: "
                            + st.response().getStatus().getCountersMap());
                }
                int finals = 0;
                while (finals < SPLICES) {
                    try (Received got = proxy.receiveBlocking(30_000)) {
                        Response resp = Response.parseFrom(got.data());
                        if (resp.getBodyCase() == Response.BodyCase.ACCEPTED) {
                            continue;
                        }
                        finals++;
                        if (resp.getBodyCase() == Response.BodyCase.SPLICED) {
                            assertEquals(2, got.fdCount(), "both sockets back");
                            spliced++;
                        } else {
                            errors.merge(resp.getError().getCode(), 1, Integer::sum);
                        }
                    }
                }
            }
            System.out.printf("%d Splices unread: %d spliced, errors %s%n", SPLICES, spliced, errors);
            assertEquals(null, errors.get(Error.Code.TRUNCATED), "no request lost its sockets to EMFILE: " + errors);
            assertTrue(errors.getOrDefault(Error.Code.RESOURCE_EXHAUSTED, 0) > 0, "refused near the fd limit: " + errors);
            assertEquals(SPLICES, spliced + errors.getOrDefault(Error.Code.RESOURCE_EXHAUSTED, 0), errors.toString());
            try (var lines = Files.lines(log)) {
                long refusedLines = lines.filter(l -> l.contains("refusing a Splice") || l.contains("refused:")).count();
                // two kinds of line (the fd-limit refusal, the refused request), each at most
                // log.rate_limit_lines (10) per 10 s plus its summary line
                assertTrue(refusedLines <= 22, refusedLines + " log lines about refusals (rate-limited)");
            }
            p.destroy();
            assertTrue(p.waitFor(30, TimeUnit.SECONDS), "stopped on SIGTERM");
        } finally {
            Fd.closeAll(List.of(listeners));
            p.destroyForcibly();
            p.waitFor(10, TimeUnit.SECONDS);
        }
    }
}
