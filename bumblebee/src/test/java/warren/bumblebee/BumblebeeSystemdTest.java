package warren.bumblebee;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import warren.control.v1.Request;
import warren.control.v1.Status;
import warren.control.v1.Upgrade;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.SystemdBoot;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.netns.testing.Packets;

/**
 * Bumblebee under a real systemd with the shipped units (hardening, capabilities, device ACL,
 * system call filter as shipped; only paths changed): socket activation, a UDP flow upgraded,
 * {@code systemctl reload} = upgrade in place with the flow still carrying both ways, stop.
 */
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class BumblebeeSystemdTest {
    private static final byte[] CLIENT = {(byte) 198, 18, 50, 1};
    private static final byte[] SERVER = {(byte) 198, 18, 99, 9};

    @Test
    void aFlowSurvivesReloadUnderTheShippedUnit() throws Exception {
        assumeTrue(SystemdBoot.available(), "needs root and systemd");
        Path stage = Files.createDirectories(Path.of("target", "systemd-it-" + ProcessHandle.current().pid())).toAbsolutePath();
        Path sock = SystemdBoot.stageUnits(stage, "bumblebee", "warren.bumblebee.Main",
                "audit.path = /var/log/warren/audit.jsonl\n");
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
        try (SystemdBoot sd = new SystemdBoot(stage); Fd flow = Fd.adopt(sv[0])) {
            sd.systemctl("start", "warren-bumblebee.socket");
            try (ControlClient c = ControlClient.connect(sock)) {
                try (Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                        .get(60, TimeUnit.SECONDS)) {
                    assertEquals("bumblebee", r.response().getStatus().getDaemon(), sd.report("bumblebee"));
                }
                Fd upgraded;
                try (Fd theirs = Fd.adopt(sv[1])) {
                    var answer = c.call(Request.newBuilder().setUpgrade(Upgrade.newBuilder().setFdFlow(0)), List.of(theirs));
                    send(flow, Packets.udp4(CLIENT, 4000, SERVER, 53, "one"));
                    try (Reply r = answer.get(30, TimeUnit.SECONDS)) {
                        assertEquals(true, r.response().hasUpgraded(), r.response() + sd.report("bumblebee"));
                        upgraded = r.takeFd(r.response().getUpgraded().getFdSocket());
                    }
                }
                try (Fd app = upgraded) {
                    assertEquals("one", recv(app), "the payload reached the upgraded socket");
                    String pid0 = sd.show("warren-bumblebee.service", "MainPID");
                    String reload = sd.systemctl("reload", "warren-bumblebee.service");
                    String pid1 = sd.show("warren-bumblebee.service", "MainPID");
                    assertNotEquals(pid0, pid1, "reload upgraded Bumblebee: " + reload + sd.report("bumblebee"));
                    assertEquals("active", sd.show("warren-bumblebee.service", "ActiveState"));
                    send(flow, Packets.udp4(CLIENT, 4000, SERVER, 53, "two"));
                    assertEquals("two", recv(app), "the flow carries on in the new process" + sd.report("bumblebee"));
                    Pointer p = Native.allocate(64);
                    p.put(0, "back".getBytes(java.nio.charset.StandardCharsets.US_ASCII), 0, 4);
                    Native.LIBC.send(app.get(), p, 4, Native.MSG_NOSIGNAL);
                    byte[] pkt = new byte[2048];
                    int n = recvRaw(flow, pkt);
                    assertEquals("back", Packets.udp4Payload(pkt, n), "and back, as a UDP packet on the flow");

                    // kill -9: systemd restarts Bumblebee with its namespace, TUN, listeners and the
                    // flow's sockets from the fd store; the flow carries on both ways
                    sd.exec("kill", "-KILL", pid1);
                    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
                    String pid2 = pid1;
                    while ((pid2.equals(pid1) || pid2.equals("0")
                            || !sd.show("warren-bumblebee.service", "ActiveState").equals("active")) && System.nanoTime() < deadline) {
                        Thread.sleep(100);
                        pid2 = sd.show("warren-bumblebee.service", "MainPID");
                    }
                    assertNotEquals(pid1, pid2, "restarted after kill -9" + sd.report("bumblebee"));
                    assertEquals("1", sd.show("warren-bumblebee.service", "NRestarts"));
                    try (Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of())
                            .get(30, TimeUnit.SECONDS)) {
                        assertEquals(1, r.response().getStatus().getTasksActive(), "the flow's task is back: "
                                + r.response().getStatus() + sd.report("bumblebee"));
                    }
                    send(flow, Packets.udp4(CLIENT, 4000, SERVER, 53, "three"));
                    assertEquals("three", recv(app), "the flow carries on after the crash" + sd.report("bumblebee"));
                    Native.LIBC.send(app.get(), p, 4, Native.MSG_NOSIGNAL);
                    n = recvRaw(flow, pkt);
                    assertEquals("back", Packets.udp4Payload(pkt, n), "and back after the crash");
                }
            }
            String before = sd.systemctl("show", "-p", "MainPID,SubState,Result,ControlPID,StatusText,NotifyAccess", "warren-bumblebee.service");
            long t0 = System.nanoTime();
            String stop = sd.systemctl("stop", "warren-bumblebee.service");
            assertEquals("inactive", sd.show("warren-bumblebee.service", "ActiveState"), "before stop: " + before + "\nstop ("
                    + (System.nanoTime() - t0) / 1_000_000 + " ms): " + stop + sd.report("bumblebee"));
            assertEquals("0", sd.show("warren-bumblebee.service", "ExecMainStatus"), "a clean exit on stop");
        } finally {
            SystemdBoot.deleteTree(stage);
        }
    }

    static void send(Fd fd, byte[] packet) {
        Pointer p = Native.allocate(packet.length);
        p.put(0, packet, 0, packet.length);
        if (Native.LIBC.send(fd.get(), p, packet.length, Native.MSG_NOSIGNAL) != packet.length) {
            throw new IllegalStateException("send: errno " + Native.errno());
        }
    }

    static String recv(Fd fd) throws Exception {
        byte[] b = new byte[2048];
        int n = recvRaw(fd, b);
        return new String(b, 0, n, java.nio.charset.StandardCharsets.US_ASCII);
    }

    static int recvRaw(Fd fd, byte[] into) throws Exception {
        if (Native.pollOne(fd.get(), Native.POLLIN, 10_000) == 0) {
            throw new IllegalStateException("nothing arrived in 10 s");
        }
        Pointer p = Native.allocate(into.length);
        long n = Native.LIBC.recv(fd.get(), p, into.length, Native.MSG_DONTWAIT);
        if (n < 0) {
            throw new IllegalStateException("recv: errno " + Native.errno());
        }
        p.get(0, into, 0, (int) n);
        return (int) n;
    }
}
