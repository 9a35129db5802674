package warren.fish;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import java.net.InetAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Egress;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.daemon.client.Reply;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.netns.testing.Packets;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;

/** Which soft-unicast IPs Fish takes, and how long their routes and tables live. */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class FishSoftIpTest {
    @TempDir
    Path dir;

    /** Routes to fish0 other than the kernel's own for the link (fe80::/64, multicast). */
    static String fish0Routes(TestNetwork.Namespace egress) throws Exception {
        return (egress.exec("ip", "route", "show", "table", "all", "dev", "fish0").output()
                + egress.exec("ip", "-6", "route", "show", "table", "all", "dev", "fish0").output()).lines()
                .filter(l -> !l.matches("(multicast |local |anycast )?(fe80|ff00)::.*")).reduce("", (a, b) -> a + b + "\n");
    }

    /**
     * An Egress must not hijack the egress namespace's routing: the upstream server's address (on
     * a link, the default gateway), an address of the namespace, a local route's, a gateway's, an
     * address on a directly connected route, and anything outside fish.soft_unicast_prefixes are
     * refused with INVALID_ARGUMENT and an audit line, no route to fish0 is added, and the other
     * tenant's traffic to the server goes on.
     */
    @Test
    void softUnicastIpsTheNamespaceUsesOrThatAreNotAllowedAreRefused(TestNetwork net) throws Exception {
        try (Topology t = new Topology(net, dir, "fish.soft_unicast_prefixes = 198.18.202.0/24, fd00:202::/64, "
                + Topology.SERVER + "/32\n")) {
            String ifA = t.link.ifA();
            check(t.egress, "ip", "addr", "add", "198.18.202.10/32", "dev", "lo");
            check(t.egress, "ip", "route", "add", "local", "198.18.202.128/28", "dev", "lo");
            check(t.egress, "ip", "route", "add", "198.18.202.64/26", "dev", ifA);
            check(t.egress, "ip", "route", "add", "198.19.250.0/24", "via", "198.18.202.200", "dev", ifA, "onlink");
            check(t.egress, "ip", "-6", "addr", "add", "fd00:202::10/128", "dev", "lo");
            String[][] refused = {
                {t.link.v4b(), "on a link"},            // the upstream server (and the default gateway)
                {"198.18.202.10", "an address"},
                {"198.18.202.130", "local"},
                {"198.18.202.70", "on a link"},
                {"198.18.202.200", "a gateway"},
                {"fd00:202::10", "an address"},
                {"198.18.203.5", "outside fish.soft_unicast_prefixes"},
                {"fd00:203::5", "outside fish.soft_unicast_prefixes"},
            };
            int port = 30000;
            for (String[] r : refused) {
                try (Reply reply = t.egress("hijack", r[0], port, port + 9, null, null)) {
                    assertNotNull(reply, r[0] + " must be refused");
                    assertEquals(Error.Code.INVALID_ARGUMENT, reply.response().getError().getCode(), reply.toString());
                    assertTrue(reply.response().getError().getMessage().contains(r[1]), r[0] + ": "
                            + reply.response().getError().getMessage());
                }
                port += 10;
            }
            assertEquals("", fish0Routes(t.egress).strip(), "no route to fish0 for any of them");
            String audit = Files.readString(dir.resolve("audit.jsonl"));
            assertEquals(refused.length, audit.lines().filter(l -> l.contains("\"rejected\"") && l.contains("soft_unicast_ip"))
                    .count(), audit);

            // the other tenant reaches the server as before; its own IP is taken
            TestNetwork.Namespace client = t.client("a", 20000, 20009, null);
            TestNetwork.Result res = client.exec("curl", "-sS", "--max-time", "10", "http://" + t.link.v4b() + "/");
            assertEquals(0, res.status(), res.output());
            assertTrue(res.output().startsWith("you are " + Topology.SOFT + ":200"), res.output());
            assertTrue(fish0Routes(t.egress).contains(Topology.SOFT), fish0Routes(t.egress));
        }
    }

    /** Refuse-all until configured: with no prefixes, every Egress is refused and says which key to set. */
    @Test
    void withNoPrefixesEveryEgressIsRefused(TestNetwork net) throws Exception {
        try (Topology t = new Topology(net, dir, "fish.soft_unicast_prefixes =\n")) {
            try (Reply reply = t.egress("a", Topology.SOFT, 20000, 20009, null, null)) {
                assertNotNull(reply);
                assertEquals(Error.Code.INVALID_ARGUMENT, reply.response().getError().getCode(), reply.toString());
                assertTrue(reply.response().getError().getMessage().contains("fish.soft_unicast_prefixes"), reply.toString());
            }
            assertEquals("", fish0Routes(t.egress).strip());
        }
    }

    /**
     * Issue 12 item 3: many Egress requests, each on its own soft-unicast IP with one UDP flow,
     * then all closed: every route to fish0 goes (the egress namespace's routes are as before),
     * the soft-IP table is empty (Status counters added = removed, the metrics gauge 0), the
     * conntrack entries are gone, and the heap held while they lived is a few KiB per IP, not
     * 3 x 65,536 references.
     */
    @Test
    void routesAndTablesOfSoftIpsLiveExactlyAsLongAsTheirLastClient(TestNetwork net) throws Exception {
        int n = 300;
        List<Fd> mine = new ArrayList<>();
        List<CompletableFuture<Reply>> ended = new ArrayList<>();
        try (Topology t = new Topology(net, dir, "fish.soft_unicast_prefixes = 198.18.200.0/22\n")) {
            check(t.internet, "ip", "route", "add", "198.18.200.0/22", "via", t.link.v4a());
            String baseline = routes(t.egress);
            long heap0 = heapUsed();
            byte[] server = InetAddress.getByName(t.link.v4b()).getAddress();
            for (int i = 0; i < n; i++) {
                byte[] soft = {(byte) 198, 18, (byte) (200 + (i + 1) / 256), (byte) ((i + 1) % 256)};
                int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
                mine.add(Fd.adopt(sv[0]));
                CompletableFuture<Response> accepted = new CompletableFuture<>();
                try (Fd theirs = Fd.adopt(sv[1])) {
                    ended.add(t.control.call(Request.newBuilder().setEgress(Egress.newBuilder().setFdPackets(0)
                            .setSoftUnicastIp(ByteString.copyFrom(soft)).setPortFirst(20000).setPortLast(20009)
                            .setTenant("t" + i)), List.of(theirs), accepted::complete));
                }
                accepted.get(10, TimeUnit.SECONDS);
                Packets.send(mine.get(i), Packets.udp4(new byte[] {(byte) 198, 18, 60, 1}, 5000, server, 7, "hi " + i));
            }
            waitFor(t, "reservations.made", n);
            assertEquals(n, fish0Routes(t.egress).lines().count(), "one route each while they live");
            long perIp = (heapUsed() - heap0) / n;
            System.out.println("heap held per live soft-unicast IP with one flow: " + perIp + " bytes");
            assertTrue(perIp < 64 * 1024, "heap held per live soft-unicast IP with one flow: " + perIp + " bytes");
            assertEquals(n, t.status().getStatus().getCountersOrDefault("soft_ips.added", 0));
            assertEquals(n + ".0", metric(t, "warren_soft_ips"));

            Fd.closeAll(mine);
            mine.clear();
            for (CompletableFuture<Reply> e : ended) {
                try (Reply r = e.get(20, TimeUnit.SECONDS)) {
                    assertEquals(Response.BodyCase.EGRESS_ENDED, r.response().getBodyCase(), r.toString());
                }
            }
            waitFor(t, "soft_ips.removed", n);
            assertEquals(baseline, routes(t.egress), "the egress namespace's routes are back to what they were");
            assertEquals("0.0", metric(t, "warren_soft_ips"));
            String ct = t.egress.exec("conntrack", "-L").output();
            assertTrue(!ct.contains("src=198.18.20"), ct);

            // and they can be taken again
            TestNetwork.Namespace client = t.client("again", "198.18.200.1", 20000, 20009, null);
            TestNetwork.Result res = client.exec("curl", "-sS", "--max-time", "10", "http://" + t.link.v4b() + "/");
            assertTrue(res.output().startsWith("you are 198.18.200.1:200"), res.output());
        } finally {
            Fd.closeAll(mine);
        }
    }

    /** Every route of the namespace but the links' own link-local ones (the veth's appear once its DAD is done). */
    private static String routes(TestNetwork.Namespace ns) throws Exception {
        return (ns.exec("ip", "-4", "route", "show", "table", "all").output() + ns.exec("ip", "-6", "route", "show", "table",
                "all").output()).lines().filter(l -> !l.contains("fe80::")).reduce("", (a, b) -> a + b + "\n");
    }

    private static long heapUsed() throws InterruptedException {
        for (int i = 0; i < 3; i++) {
            System.gc();
            Thread.sleep(50); // no observable for "the collector is done"; a coarse figure is all that is asked
        }
        java.lang.management.MemoryUsage u = java.lang.management.ManagementFactory.getMemoryMXBean().getHeapMemoryUsage();
        return u.getUsed();
    }

    private static String metric(Topology t, String name) throws Exception {
        try (Reply r = t.control.call(Request.newBuilder().setMetrics(warren.control.v1.Metrics.getDefaultInstance()),
                List.of()).get(10, TimeUnit.SECONDS)) {
            return r.response().getMetrics().getText().lines().filter(l -> l.startsWith(name + "{"))
                    .map(l -> l.substring(l.lastIndexOf(' ') + 1)).findFirst().orElse("absent");
        }
    }

    static java.util.Map<String, Long> waitFor(Topology t, String counter, long want) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        java.util.Map<String, Long> m = java.util.Map.of();
        while (System.nanoTime() < deadline) {
            m = t.status().getStatus().getCountersMap();
            if (m.getOrDefault(counter, 0L) >= want) {
                return m;
            }
            Thread.sleep(50);
        }
        throw new AssertionError(counter + " did not reach " + want + ": " + m);
    }

    private static void check(TestNetwork.Namespace ns, String... cmd) throws Exception {
        TestNetwork.Result r = ns.exec(cmd);
        assertEquals(0, r.status(), String.join(" ", cmd) + ": " + r.output());
    }
}
