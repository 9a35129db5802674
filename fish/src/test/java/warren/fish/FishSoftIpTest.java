package warren.fish;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.control.v1.Error;
import warren.daemon.client.Reply;
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

    private static void check(TestNetwork.Namespace ns, String... cmd) throws Exception {
        TestNetwork.Result r = ns.exec(cmd);
        assertEquals(0, r.status(), String.join(" ", cmd) + ": " + r.output());
    }
}
