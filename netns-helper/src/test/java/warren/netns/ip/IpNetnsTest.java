package warren.netns.ip;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import warren.netns.testing.TestNetwork;

/** The programs' namespace helper: unique names, a working veth, and nothing left after cleanup. */
class IpNetnsTest {
    private static List<String> listed() throws Exception {
        Process p = new ProcessBuilder("ip", "netns", "list").redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        p.waitFor(10, TimeUnit.SECONDS);
        return out.lines().map(l -> l.split(" ")[0]).toList();
    }

    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void namespacesAreUniquelyNamedConnectedAndAllRemoved() throws Exception {
        Assumptions.assumeTrue(TestNetwork.available(), "needs root and iproute2 to create network namespaces");
        IpNetns netns = new IpNetns("wtest-ipn-");
        try {
            String a = netns.add("a");
            String b = netns.add("b");
            assertTrue(a.startsWith("wtest-ipn-" + ProcessHandle.current().pid() + "-"), a);
            assertTrue(listed().containsAll(List.of(a, b)), listed().toString());
            IpNetns.veth(a, "va", "198.18.77.1/30", b, "vb", "198.18.77.2/30");
            IpNetns.Result ping = IpNetns.run(a, "ping", "-c", "1", "-W", "2", "198.18.77.2");
            assertEquals(0, ping.status(), ping.output());
            assertEquals(7, IpNetns.run(b, "sh", "-c", "exit 7").status(), "a command's exit status comes back");
            assertEquals(List.of(a, b), netns.names());
        } finally {
            netns.cleanup();
        }
        assertTrue(listed().stream().noneMatch(n -> n.startsWith("wtest-ipn-" + ProcessHandle.current().pid() + "-")),
                listed().toString());
        netns.cleanup(); // idempotent
    }
}
