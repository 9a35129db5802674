package warren.fish;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.google.protobuf.ByteString;
import java.net.InetAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import warren.control.v1.Egress;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.Status;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.daemon.testing.SystemdBoot;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.Packets;
import warren.netns.testing.TestNetwork;

/**
 * Fish under a real systemd with the Debian package installed and its units started unmodified
 * (forwarding turned on in the egress namespace by the test, as an operator would, since the unit's /proc/sys is
 * read-only): socket activation, a client's UDP flow reserved in conntrack, {@code systemctl
 * reload} = upgrade in place keeping the reservation and the pending Egress, which the new
 * process answers when the client goes; stop. At threads = 1 and 2 (event loops: at 2, fish0 has
 * two queues, both kept in the fd store and found again after the kill -9).
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class FishSystemdTest {
    @ParameterizedTest(name = "threads = {0}")
    @ValueSource(ints = {1, 2})
    void aReservationAndItsClientSurviveReloadUnderTheShippedUnit(int threads, TestNetwork net) throws Exception {
        assumeTrue(SystemdBoot.available(), "needs root and systemd");
        TestNetwork.Namespace egress = net.namespace("egress");
        assertEquals(0, egress.exec("sysctl", "-w", "net.ipv4.ip_forward=1").status());
        assertEquals(0, egress.exec("sysctl", "-w", "net.ipv6.conf.all.forwarding=1").status());
        Path stage = Files.createDirectories(Path.of("target", "systemd-it-" + ProcessHandle.current().pid())).toAbsolutePath();
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
        SystemdBoot.stagePackage(stage, SystemdBoot.builtPackage());
        try (SystemdBoot sd = new SystemdBoot(stage); Fd client = Fd.adopt(sv[0])) {
            sd.configurePackage();
            sd.appendConfig("fish", "audit.path = /var/log/warren/audit.jsonl\n"
                    + "fish.netns = " + sd.netns(egress.name) + "\n"
                    + "fish.soft_unicast_prefixes = 198.18.202.0/24\n" + "threads = " + threads + "\n");
            Path sock = sd.path("/run/warren/fish.sock");
            sd.systemctl("start", "warren-fish.socket");
            try (ControlClient c = ControlClient.connect(sock)) {
                assertEquals("fish", status(c, sd).getDaemon());
                CompletableFuture<Response> accepted = new CompletableFuture<>();
                CompletableFuture<Reply> ended;
                try (Fd theirs = Fd.adopt(sv[1])) {
                    ended = c.call(Request.newBuilder().setEgress(Egress.newBuilder().setFdPackets(0)
                            .setSoftUnicastIp(ByteString.copyFrom(InetAddress.getByName("198.18.202.5").getAddress()))
                            .setPortFirst(20000).setPortLast(20009).setTenant("sd")), List.of(theirs), accepted::complete);
                }
                accepted.get(30, TimeUnit.SECONDS);
                byte[] pkt = Packets.udp4(new byte[] {(byte) 198, 18, 60, 1}, 5000, new byte[] {(byte) 198, 18, 0, 2}, 7, "hi");
                Packets.send(client, pkt);
                waitFor(c, sd, "reservations.made", 1);
                String entry = conntrack(egress);
                assertTrue(entry.contains("sport=20000"), "reserved in the egress namespace: " + entry);

                String pid0 = sd.show("warren-fish.service", "MainPID");
                String reload = sd.systemctl("reload", "warren-fish.service");
                String pid1 = sd.show("warren-fish.service", "MainPID");
                assertNotEquals(pid0, pid1, "reload upgraded Fish: " + reload + sd.report("fish"));
                assertEquals("active", sd.show("warren-fish.service", "ActiveState"));
                assertEquals(entry, conntrack(egress), "the same conntrack entry after the upgrade");
                Packets.send(client, pkt);
                Map<String, Long> counters = waitFor(c, sd, "requests.restart", 1);
                assertEquals(1, counters.get("reservations.made"), "the flow kept its reservation: " + counters);

                // kill -9: systemd restarts Fish with the TUN, the client and its call from the fd
                // store; the flow comes back from conntrack (its mark names the client)
                Thread.sleep(300);
                String pid2 = sd.killMainAndAwaitRestart("warren-fish.service");
                assertNotEquals(pid1, pid2, "restarted after kill -9" + sd.report("fish"));
                assertEquals("1", sd.show("warren-fish.service", "NRestarts"));
                Packets.send(client, pkt);
                status(c, sd); // the restarted process answers on the same control connection
                Thread.sleep(500);
                Map<String, Long> after = status(c, sd).getCountersMap();
                assertEquals(0, after.getOrDefault("reservations.made", 0L),
                        "the recovered flow needed no new reservation: " + after + sd.report("fish"));
                assertEquals(entry, conntrack(egress), "still the one conntrack entry");
                assertEquals(threads + "", egress.exec("sh", "-c", "ip -d link show fish0 | grep -o 'numqueues [0-9]*'"
                        + " | cut -d' ' -f2").output().strip(), "fish0's queues, one per loop, recovered" + sd.report("fish"));
                client.close(); // the client goes: the recovered process answers its Egress, once
                try (Reply r = ended.get(30, TimeUnit.SECONDS)) {
                    assertEquals(1, r.response().getEgressEnded().getPacketsOut(), "counted from the restart: "
                            + r.response() + sd.report("fish"));
                }
            }
            sd.systemctl("stop", "warren-fish.service");
            assertEquals("inactive", sd.show("warren-fish.service", "ActiveState"), sd.report("fish"));
            assertEquals("0", sd.show("warren-fish.service", "ExecMainStatus"), "a clean exit on stop");
        } finally {
            SystemdBoot.deleteTree(stage);
        }
    }

    private static String conntrack(TestNetwork.Namespace ns) throws Exception {
        String out = ns.exec("sh", "-c", "conntrack -L -p udp 2>/dev/null").output();
        return out.lines().filter(l -> l.contains("198.18.202.5")).map(l -> l.replaceAll("udp +17 +\\d+ ", "udp 17 "))
                .reduce("", (a, b) -> a + b + "\n");
    }


    private static warren.control.v1.StatusReport status(ControlClient c, SystemdBoot sd) throws Exception {
        try (Reply r = c.call(Request.newBuilder().setStatus(Status.getDefaultInstance()), List.of()).get(60, TimeUnit.SECONDS)) {
            return r.response().getStatus();
        }
    }

    private static Map<String, Long> waitFor(ControlClient c, SystemdBoot sd, String counter, long want) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        Map<String, Long> m = Map.of();
        while (System.nanoTime() < deadline) {
            m = status(c, sd).getCountersMap();
            if (m.getOrDefault(counter, 0L) >= want) {
                return m;
            }
            Thread.sleep(100);
        }
        throw new AssertionError(counter + " did not reach " + want + ": " + m + sd.report("fish"));
    }
}
