package warren.fish.conntrack;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import warren.fish.conntrack.Ctnetlink.Entry;
import warren.fish.conntrack.Ctnetlink.Tuple;
import warren.linux.net.Netns;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;

/**
 * ctnetlink against the real conntrack table of a private namespace, checked with conntrack-tools:
 * create-exclusive holds exactly the tuple or fails, a reply tuple already used (by an entry or by
 * a real connection) is refused, entries read back and delete.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class CtnetlinkTest {

    private static InetAddress ip(String s) throws Exception {
        return InetAddress.getByName(s);
    }

    @Test
    void createExclusiveReadBackDeleteAndCollisions(TestNetwork net) throws Exception {
        assumeTrue(Files.isExecutable(Path.of("/usr/sbin/conntrack")), "conntrack-tools not installed");
        TestNetwork.Namespace ns = net.namespace("egress");
        String path = "/run/netns/" + ns.name;
        try (Ctnetlink ct = Netns.call(path, Ctnetlink::new)) {
            // client flow 198.18.10.1:40001 -> 198.18.20.2:80 egressing as 198.18.30.3:50000
            Tuple orig = new Tuple(6, ip("198.18.10.1"), ip("198.18.20.2"), 40001, 80);
            Tuple reply = new Tuple(6, ip("198.18.20.2"), ip("198.18.30.3"), 80, 50000);
            assertTrue(ct.createExclusive(orig, reply, 120, Ctnetlink.TCP_CONNTRACK_ESTABLISHED));
            assertFalse(ct.createExclusive(orig, reply, 120, Ctnetlink.TCP_CONNTRACK_ESTABLISHED), "EEXIST");
            // another client flow wanting the same egress 5-tuple (reply tuple) is refused too
            Tuple other = new Tuple(6, ip("198.18.10.9"), ip("198.18.20.2"), 40001, 80);
            assertFalse(ct.createExclusive(other, reply, 120, Ctnetlink.TCP_CONNTRACK_ESTABLISHED),
                    "an egress 5-tuple already in use is never handed out twice");
            Entry e = ct.get(orig);
            assertNotNull(e);
            assertEquals(orig, e.original());
            assertEquals(reply, e.reply(), "exactly the requested tuple, no silent rewrite");
            assertEquals(Ctnetlink.TCP_CONNTRACK_ESTABLISHED, e.tcpState());
            assertTrue(e.timeout() > 100 && e.timeout() <= 120, "timeout " + e.timeout());
            String listed = ns.exec("conntrack", "-L").output();
            assertTrue(listed.contains("src=198.18.10.1 dst=198.18.20.2 sport=40001 dport=80")
                    && listed.contains("src=198.18.20.2 dst=198.18.30.3 sport=80 dport=50000"), listed);
            assertTrue(ct.delete(orig));
            assertNull(ct.get(orig));
            assertFalse(ct.delete(orig));
            assertFalse(ns.exec("conntrack", "-L").output().contains("sport=40001"));

            // IPv6 and UDP
            Tuple o6 = new Tuple(17, ip("fd00:10::1"), ip("fd00:20::2"), 5353, 53);
            Tuple r6 = new Tuple(17, ip("fd00:20::2"), ip("fd00:30::3"), 53, 50001);
            assertTrue(ct.createExclusive(o6, r6, 30, 0));
            assertEquals(r6, ct.get(o6).reply());
            assertTrue(ct.delete(o6));
        }
    }

    @Test
    void aPortUsedByARealConnectionInTheNamespaceIsRefused(TestNetwork net) throws Exception {
        assumeTrue(Files.isExecutable(Path.of("/usr/sbin/nft")), "nftables not installed");
        TestNetwork.Namespace ns = net.namespace("egress");
        String path = "/run/netns/" + ns.name;
        ns.exec("ip", "addr", "add", "198.18.20.2/32", "dev", "lo");
        ns.exec("ip", "addr", "add", "198.18.30.3/32", "dev", "lo");
        // conntrack only tracks a namespace whose rules use it
        assertEquals(0, ns.exec("nft", "add table inet t; add chain inet t out { type filter hook output priority 0; };"
                + " add rule inet t out ct state established,new accept").status());
        try (ServerSocket server = Netns.call(path, () -> new ServerSocket(80, 4, ip("198.18.20.2")));
                Socket client = Netns.call(path, () -> {
                    Socket s = new Socket();
                    s.bind(new InetSocketAddress(ip("198.18.30.3"), 50002));
                    s.connect(new InetSocketAddress(ip("198.18.20.2"), 80), 5000);
                    return s;
                });
                Socket accepted = server.accept();
                Ctnetlink ct = Netns.call(path, Ctnetlink::new)) {
            assertTrue(ns.exec("conntrack", "-L").output().contains("sport=50002"), "the real connection is tracked");
            // Fish wanting 198.18.30.3:50002 -> 198.18.20.2:80 as an egress tuple collides with it
            Tuple orig = new Tuple(6, ip("198.18.10.1"), ip("198.18.20.2"), 40002, 80);
            Tuple reply = new Tuple(6, ip("198.18.20.2"), ip("198.18.30.3"), 80, 50002);
            assertFalse(ct.createExclusive(orig, reply, 120, Ctnetlink.TCP_CONNTRACK_ESTABLISHED));
            Tuple free = new Tuple(6, ip("198.18.20.2"), ip("198.18.30.3"), 80, 50003);
            assertTrue(ct.createExclusive(orig, free, 120, Ctnetlink.TCP_CONNTRACK_ESTABLISHED), "the next port is free");
            assertEquals(free, ct.get(orig).reply());
        }
    }
}
