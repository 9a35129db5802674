package warren.fish;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.daemon.testing.RunningDaemon;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;

/**
 * Fish changes only the namespace it is given ({@code fish.netns}), and there only what is its
 * own (fish0, its routes, its nftables table, its conntrack entries), all gone when it stops.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class FishNamespaceTest {
    @TempDir
    Path dir;

    static String forwarding(TestNetwork.Namespace ns) throws Exception {
        return ns.exec("sysctl", "-n", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding").output().strip()
                .replace('\n', ' ');
    }

    static boolean hasFish0(TestNetwork.Namespace ns) throws Exception {
        return ns.exec("ip", "link", "show", "fish0").status() == 0;
    }

    /**
     * Fish started plainly (as root, no fish.netns) in a namespace standing for the host's: it must
     * not create fish0 there nor turn forwarding on; it refuses to start and says which key is missing.
     */
    @Test
    void withoutFishNetnsFishRefusesToStartAndLeavesItsOwnNamespaceAlone(TestNetwork net) throws Exception {
        TestNetwork.Namespace host = net.namespace("host");
        assertEquals(0, host.exec("sysctl", "-w", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0").status());
        Path ctl = dir.resolve("fish.sock");
        Path log = dir.resolve("fish.log");
        Path conf = Files.writeString(dir.resolve("fish.conf"), "audit.path = /dev/null\n");
        Process p = host.start(new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-cp", System.getProperty("java.class.path"), Main.class.getName(), "--control", ctl.toString(),
                "--config", conf.toString()).redirectErrorStream(true).redirectOutput(log.toFile()));
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (p.isAlive() && !Files.exists(ctl) && System.nanoTime() < deadline) {
                Thread.sleep(20); // exits, or serves (the defect): whichever is observed first
            }
            assertTrue(p.waitFor(30, TimeUnit.SECONDS), "Fish must not start without fish.netns: " + Files.readString(log));
            assertEquals(2, p.exitValue(), Files.readString(log));
            assertTrue(Files.readString(log).contains("fish.netns"), "names the missing key: " + Files.readString(log));
        } finally {
            p.destroyForcibly().waitFor(30, TimeUnit.SECONDS); // our own child, by its handle
        }
        assertTrue(!hasFish0(host), "no fish0 where Fish ran");
        assertEquals("0 0", forwarding(host), "forwarding untouched where Fish ran");
    }

    /** In the egress namespace Fish checks forwarding and says how to turn it on; it never sets it. */
    @Test
    void fishChecksForwardingInTheEgressNamespaceAndNeverTurnsItOn(TestNetwork net) throws Exception {
        TestNetwork.Namespace egress = net.namespace("egress");
        assertEquals(0, egress.exec("sysctl", "-w", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0").status());
        String conf = "audit.path = /dev/null\nfish.netns = /run/netns/" + egress.name + "\n"
                + "fish.soft_unicast_prefixes = 198.18.202.0/24, fd00:202::/64\n";
        Exception e = assertThrows(Exception.class, () -> new RunningDaemon(Main.spec(), dir.resolve("fish.sock"), conf)
                .close());
        assertTrue(String.valueOf(e.getMessage()).contains("net.ipv4.ip_forward"), "says what to turn on: " + e);
        assertEquals("0 0", forwarding(egress), "Fish did not turn forwarding on");
        assertTrue(!hasFish0(egress), "nothing left behind after a refused start");

        // IPv4 on, IPv6 off, and only IPv4 prefixes: that is enough
        assertEquals(0, egress.exec("sysctl", "-w", "net.ipv4.ip_forward=1").status());
        try (RunningDaemon d = new RunningDaemon(Main.spec(), dir.resolve("fish.sock"), "audit.path = /dev/null\n"
                + "fish.netns = /run/netns/" + egress.name + "\nfish.soft_unicast_prefixes = 198.18.202.0/24\n")) {
            assertTrue(hasFish0(egress));
            assertEquals("1 0", forwarding(egress));
            assertTrue(egress.exec("nft", "list", "tables").output().contains("warren_fish_"), "its own table there");
        }
        assertNotEquals(true, hasFish0(egress), "fish0 goes with Fish");
        assertEquals("", egress.exec("nft", "list", "tables").output().strip(), "and its table");
    }
}
