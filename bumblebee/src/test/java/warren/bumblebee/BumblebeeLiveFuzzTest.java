package warren.bumblebee;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Upgrade;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.DaemonProcess;
import warren.daemon.testing.livefuzz.LiveFuzzer;
import warren.daemon.testing.livefuzz.Messages;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.netns.testing.Packets;

/**
 * The live-daemon fuzzer against a real Bumblebee process (docs/testing.md, "Live fuzzing"), which
 * makes its own namespace and TUN as in its other tests (root; skipped otherwise): 5,000 mutated
 * control messages with fds of every kind (100,000 with {@code ./warren fuzz live}), some flows
 * with random first packets queued, Status answered throughout, every request answered, the fd
 * count back to its baseline, and a real UDP flow upgraded and answered before and after. Short
 * timeouts so that flows on datagram sockets (whose peer's close Bumblebee cannot see) end within
 * the run's end.
 */
@Timeout(value = 1800, unit = TimeUnit.SECONDS)
class BumblebeeLiveFuzzTest {
    @TempDir
    Path dir;

    @Test
    void mutatedControlMessagesWithFdsOfEveryKindLeaveBumblebeeServingAndItsFdsAtBaseline() throws Exception {
        Assumptions.assumeTrue(Native.getuid() == 0, "Bumblebee makes a network namespace and a TUN: root only");
        Path conf = Files.writeString(dir.resolve("bb.conf"), "audit.path = " + dir.resolve("audit.jsonl")
                + "\nbumblebee.handshake_timeout = 2s\nbumblebee.idle_timeout = 3s\nbumblebee.close_linger = 100ms"
                + "\nbumblebee.quarantine = 1s\n");
        try (DaemonProcess d = new DaemonProcess("bumblebee", Main.class, dir.resolve("bb.sock"), conf, dir.resolve("bb.log"))) {
            upgradeARealUdpFlow(d.control, 40001);
            LiveFuzzer.Result r = new LiveFuzzer(new LiveFuzzer.Daemon("bumblebee", d.control, d.pid(), Messages.Target.NONE),
                    LiveFuzzer.Settings.fromEnvironment(5_000)).run();
            assertTrue(r.findings().isEmpty(), () -> r + "\nlog:\n" + tail(dir.resolve("bb.log")));
            assertEquals(r.fdsBaseline(), r.fdsAfter(), r::toString);
            upgradeARealUdpFlow(d.control, 40002);
            assertTrue(d.process().isAlive(), "the first process still serves");
        }
    }

    /**
     * A UDP packet to 198.18.99.9:5353 on a new flow socket: Upgraded with a socket that reads its
     * payload, and whose answer comes back on the flow as a packet.
     */
    static void upgradeARealUdpFlow(Path control, int port) throws Exception {
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
        try (Fd mine = Fd.adopt(sv[0]); Fd theirs = Fd.adopt(sv[1]); ControlClient c = ControlClient.connect(control)) {
            CompletableFuture<Reply> answer = c.call(Request.newBuilder().setUpgrade(Upgrade.newBuilder().setFdFlow(0)),
                    List.of(theirs));
            theirs.close();
            byte[] src = {(byte) 198, 18, 50, 1};
            byte[] dst = {(byte) 198, 18, 99, 9};
            Packets.send(mine, Packets.udp4(src, port, dst, 5353, "live-fuzz"));
            try (Reply r = answer.get(30, TimeUnit.SECONDS)) {
                assertEquals(Response.BodyCase.UPGRADED, r.response().getBodyCase(), r.response()::toString);
                try (Fd s = r.takeFd(r.response().getUpgraded().getFdSocket())) {
                    Pointer p = Native.allocate(2048);
                    long n = recvWithin(s, p);
                    byte[] got = new byte[(int) Math.max(0, n)];
                    p.get(0, got, 0, got.length);
                    assertEquals("live-fuzz", new String(got, StandardCharsets.US_ASCII));
                    byte[] pong = "pong".getBytes(StandardCharsets.US_ASCII);
                    p.put(0, pong, 0, pong.length);
                    assertEquals(pong.length, Native.send(s.get(), p, pong.length, Native.MSG_NOSIGNAL));
                    long m = recvWithin(mine, p);
                    byte[] packet = new byte[(int) Math.max(0, m)];
                    p.get(0, packet, 0, packet.length);
                    assertEquals("pong", Packets.udp4Payload(packet, packet.length), "the answer came back on the flow");
                }
            }
        }
    }

    /** One message or datagram, waited for up to 10 s (poll(2)); -1 if none came. */
    private static long recvWithin(Fd s, Pointer p) throws Exception {
        if ((Native.pollOne(s.get(), Native.POLLIN, 10_000) & Native.POLLIN) == 0) {
            return -1;
        }
        return Native.recv(s.get(), p, 2048, Native.MSG_DONTWAIT);
    }

    static String tail(Path log) {
        try {
            String s = Files.readString(log);
            return s.length() > 8000 ? s.substring(s.length() - 8000) : s;
        } catch (java.io.IOException e) {
            return "(no log: " + e + ")";
        }
    }
}
