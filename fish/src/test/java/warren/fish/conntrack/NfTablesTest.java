package warren.fish.conntrack;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
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
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.NativeIoException;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;

/**
 * In a namespace with no rules the kernel tracks nothing; Fish's owned table turns tracking on
 * while its socket is open, and its close takes table and tracking away.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class NfTablesTest {
    /** A loopback TCP connection made inside {@code ns}; true if conntrack shows it. */
    private static boolean tracked(TestNetwork.Namespace ns, int port) throws Exception {
        try (ServerSocket server = ns.call(() -> new ServerSocket(port, 1, InetAddress.getLoopbackAddress()));
                Socket c = ns.call(() -> {
                    Socket s = new Socket();
                    s.connect(new InetSocketAddress(InetAddress.getLoopbackAddress(), port), 5000);
                    return s;
                });
                Socket accepted = server.accept()) {
            return ns.exec("conntrack", "-L", "-p", "tcp").output().contains("dport=" + port);
        }
    }

    @Test
    void theOwnedTableKeepsTrackingOnWhileItsSocketIsOpen(TestNetwork net) throws Exception {
        assumeTrue(Files.isExecutable(Path.of("/usr/sbin/conntrack")), "conntrack-tools not installed");
        assumeTrue(Files.isExecutable(Path.of("/usr/sbin/nft")), "nft not installed");
        TestNetwork.Namespace ns = net.namespace("norules");
        assertFalse(tracked(ns, 7001), "no rules, no tracking (the defect Fish must not rely on)");
        try (NfTables t = ns.call(() -> NfTables.keepConntrackActive("warren_fish_test", "a test's"))) {
            String rules = ns.exec("nft", "list", "ruleset").output();
            assertTrue(rules.contains("table inet warren_fish_test") && rules.contains("comment \"a test's\"")
                    && rules.contains("chain conntrack") && rules.contains("ct state established,related,new,untracked"),
                    rules);
            assertTrue(tracked(ns, 7002), "tracked while the table exists");
            NativeIoException taken = assertThrows(NativeIoException.class,
                    () -> ns.call(() -> NfTables.keepConntrackActive("warren_fish_test", "again")));
            assertTrue(taken.errno() == Errno.EEXIST || taken.errno() == Errno.EPERM, taken.toString());
        }
        assertEquals("", ns.exec("nft", "list", "tables").output().strip(), "the table went with its socket");
        assertFalse(tracked(ns, 7003), "and tracking with it");
    }
}
