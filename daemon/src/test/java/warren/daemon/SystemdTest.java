package warren.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Status;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.HoldingSpliceHandler;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.systemd.ListenFds;

/** systemd's side: LISTEN_FDS parsing, real socket activation, and sd_notify READY/STOPPING. */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class SystemdTest {
    @TempDir
    Path dir;

    @Test
    void listenFdsAreOnlyOursWhenListenPidIsOurs() throws Exception {
        long me = ProcessHandle.current().pid();
        List<ListenFds.Named> fds = ListenFds.parse(Map.of("LISTEN_PID", "" + me, "LISTEN_FDS", "2",
                "LISTEN_FDNAMES", "control:other"), me, false);
        assertEquals(2, fds.size());
        assertEquals("control", fds.get(0).name());
        assertEquals("other", fds.get(1).name());
        assertEquals(0, ListenFds.parse(Map.of("LISTEN_PID", "" + (me + 1), "LISTEN_FDS", "2"), me, false).size(),
                "another process's fds");
        assertEquals(0, ListenFds.parse(Map.of("LISTEN_FDS", "1"), me, false).size(), "no LISTEN_PID");
        assertEquals(0, ListenFds.parse(Map.of("LISTEN_PID", "x", "LISTEN_FDS", "1"), me, false).size(), "malformed");
    }

    @Test
    void aSocketActivatedDaemonServesAndTellsSystemdItIsReadyAndStopping() throws Exception {
        assumeTrue(Files.isExecutable(Path.of("/usr/bin/systemd-socket-activate")), "systemd-socket-activate missing");
        Path sock = dir.resolve("activated.sock");
        Path notify = dir.resolve("notify.sock");
        int n = Native.socket(Native.AF_UNIX, Native.SOCK_DGRAM | Native.SOCK_CLOEXEC, 0);
        try (Fd notifyFd = Fd.adopt(n)) {
            Native.bind(n, Native.sockaddrUn(notify.toString()), notify.toString());
            List<String> cmd = new ArrayList<>(List.of("systemd-socket-activate", "--seqpacket", "-l", sock.toString(),
                    "--fdname=control", "-E", "NOTIFY_SOCKET=" + notify,
                    Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-cp",
                    System.getProperty("java.class.path"), HoldingSpliceHandler.class.getName(),
                    "--config", Files.writeString(dir.resolve("c.conf"), "audit.path = /dev/null\n").toString()));
            Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(dir.resolve("out.log").toFile())
                    .start();
            try {
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
                while (!Files.exists(sock) && System.nanoTime() < deadline) {
                    Thread.sleep(20);
                }
                // systemd-socket-activate starts the daemon on the first connection; the path exists
                // from its bind(2), a connect before its listen(2) is refused: until then, again
                ControlClient first = null;
                while (first == null) {
                    try {
                        first = ControlClient.connect(sock);
                    } catch (warren.fdpass.libc.NativeIoException e) {
                        if (e.errno() != warren.fdpass.libc.Errno.ECONNREFUSED || System.nanoTime() > deadline) {
                            throw e;
                        }
                        Thread.sleep(20);
                    }
                }
                try (ControlClient c = first;
                        Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                                .get(30, TimeUnit.SECONDS)) {
                    assertEquals(Response.BodyCase.STATUS, r.response().getBodyCase());
                    assertEquals("testd", r.response().getStatus().getDaemon());
                }
                String ready = receive(notifyFd);
                assertTrue(ready.startsWith("READY=1\nSTATUS=serving on the socket-activated fd 3 (control)"), ready);
                new ProcessBuilder("kill", "-TERM", Long.toString(p.pid())).start().waitFor();
                assertTrue(receive(notifyFd).startsWith("STOPPING=1"));
                assertTrue(p.waitFor(20, TimeUnit.SECONDS));
                assertEquals(0, p.exitValue(), Files.readString(dir.resolve("out.log")));
            } finally {
                p.destroyForcibly();
            }
        }
    }

    private static String receive(Fd fd) throws Exception {
        assertTrue((Native.pollOne(fd.get(), Native.POLLIN, 20_000) & Native.POLLIN) != 0, "a notification");
        Pointer buf = Native.allocate(4096);
        long n = Native.recv(fd.get(), buf, 4096, 0);
        byte[] b = new byte[(int) n];
        buf.get(0, b, 0, b.length);
        return new String(b, StandardCharsets.UTF_8);
    }
}
