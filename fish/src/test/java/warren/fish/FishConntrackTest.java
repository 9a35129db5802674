package warren.fish;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.InputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.fdpass.Fd;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.netns.Netns;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;

/**
 * Fish's guarantee wherever it is installed (issue 13 part 4): in an egress namespace made as an
 * operator would make it (addresses, routes, forwarding, no nftables rule of its own), tracking is
 * active because Fish makes it so, and a real connection that existed before a tenant's first
 * flow is never reused.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class FishConntrackTest {
    @TempDir
    Path dir;

    /** A connection from soft-unicast:port to the server made by another process of the egress namespace. */
    static Fd otherProcessConnects(Topology t, int port) throws Exception {
        int fd = Netns.call("/run/netns/" + t.egress.name, () -> {
            int s = Native.socket(Native.AF_INET, Native.SOCK_STREAM | Native.SOCK_NONBLOCK | Native.SOCK_CLOEXEC, 0);
            Native.setsockoptInt(s, 0, 19, 1); // SOL_IP, IP_TRANSPARENT: the soft-unicast IP is not local there
            Native.bind(s, Native.sockaddr(new InetSocketAddress(InetAddress.getByName(Topology.SOFT), port)), "freebind");
            byte[] sa = Native.sockaddr(new InetSocketAddress(t.server, 80));
            int rc = Native.LIBC.connect(s, sa, sa.length);
            int e = Native.errno();
            assertTrue(rc == 0 || e == Errno.EINPROGRESS, "connect: " + Errno.describe(e));
            return s;
        });
        return Fd.adopt(fd);
    }

    @Test
    void aRealConnectionInANamespaceWithNoRulesOfItsOwnIsNeverReused(TestNetwork net) throws Exception {
        try (Topology t = new Topology(net, dir, "", false, false)) {
            assertTrue(t.egress.exec("nft", "list", "ruleset").output().contains("table inet warren_fish_"),
                    "Fish's own table keeps tracking active: " + t.egress.exec("nft", "list", "ruleset").output());
            try (Fd other = otherProcessConnects(t, 20020)) {
                String table = t.egress.exec("conntrack", "-L", "-p", "tcp").output();
                assertTrue(table.contains("sport=20020"), "the other process's connection is tracked:\n" + table);
                TestNetwork.Namespace client = t.client("a", 20020, 20029, null);
                Socket s = Netns.call("/run/netns/" + client.name, () -> {
                    Socket k = new Socket();
                    k.connect(new InetSocketAddress(t.server, 80), 5000);
                    return k;
                });
                try (s) {
                    s.setSoTimeout(5000);
                    s.getOutputStream().write("GET / HTTP/1.0\r\n\r\n".getBytes(StandardCharsets.US_ASCII));
                    InputStream in = s.getInputStream();
                    byte[] b = new byte[512];
                    String text = new String(b, 0, in.read(b), StandardCharsets.US_ASCII);
                    assertTrue(text.contains("you are " + Topology.SOFT + ":20021"), "20020 is in use: never handed out, "
                            + text);
                }
                assertEquals(1L, t.status().getStatus().getCountersOrDefault("reservations.collisions", 0));
            }
        }
    }
}
