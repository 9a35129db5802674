package warren.netns.testing;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;

@ExtendWith(NetnsExtension.class)
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class TestNetworkTest {

    @Test
    void twoNamespacesTalkOverAVethAndNothingRemainsAfterwards(TestNetwork net) throws Exception {
        String rootLinksBefore = TestNetwork.exec("ip", "-br", "link").output();
        TestNetwork.Namespace a = net.namespace("client");
        TestNetwork.Namespace b = net.namespace("server");
        TestNetwork.Link link = net.link(a, b);
        assertTrue(link.v4a().startsWith("198.18.") || link.v4a().startsWith("198.19."), link.v4a());

        // a TCP round trip over IPv4 and IPv6 from Java sockets opened inside each namespace
        for (String[] addrs : new String[][] {{link.v4b(), link.v4a()}, {link.v6b(), link.v6a()}}) {
            InetAddress server = InetAddress.getByName(addrs[0]);
            ServerSocket listener = b.call(() -> new ServerSocket(0, 1, server));
            try (listener) {
                CompletableFuture<Void> echo = CompletableFuture.runAsync(() -> {
                    try (Socket s = listener.accept(); InputStream in = s.getInputStream();
                            OutputStream out = s.getOutputStream()) {
                        out.write(in.readNBytes(5));
                    } catch (Exception e) {
                        throw new RuntimeException(e);
                    }
                });
                try (Socket c = a.call(() -> {
                    Socket s = new Socket();
                    s.connect(new InetSocketAddress(server, listener.getLocalPort()), 5000);
                    return s;
                })) {
                    c.getOutputStream().write("hello".getBytes());
                    assertEquals("hello", new String(c.getInputStream().readNBytes(5)));
                    assertEquals(InetAddress.getByName(addrs[1]), c.getLocalAddress(), "came from the veth peer");
                }
                echo.get(10, TimeUnit.SECONDS);
            }
        }
        // a program started inside sees only its namespace's interfaces, and no default route
        TestNetwork.Result routes = a.exec("ip", "route", "show", "default");
        assertEquals(0, routes.status());
        assertEquals("", routes.output().strip(), "no route out of the machine");
        assertTrue(a.exec("ip", "-br", "link").output().contains(link.ifA()));
        Process sleeper = a.start("sleep", "600");
        assertTrue(sleeper.isAlive());

        List<String> names = net.namespaceNames();
        assertEquals(rootLinksBefore, TestNetwork.exec("ip", "-br", "link").output(), "root namespace untouched");
        net.close();
        assertTrue(sleeper.waitFor(10, TimeUnit.SECONDS), "processes started inside are killed");
        String left = TestNetwork.exec("ip", "netns", "list").output();
        for (String n : names) {
            assertFalse(left.contains(n), n + " removed");
        }
        assertFalse(TestNetwork.exec("ip", "-br", "link").output().contains(link.ifA()));
    }

    @Test
    void theSweepRemovesOnlyDeadRunsNamespaces(TestNetwork net) throws Exception {
        // a namespace named as if by a run whose pid is dead (pid 0x3FFFFF+1 cannot exist)
        String dead = TestNetwork.PREFIX + "4194305-1-leftover";
        String foreign = "warren-not-ours-" + ProcessHandle.current().pid();
        TestNetwork.run("ip", "netns", "add", dead);
        TestNetwork.run("ip", "netns", "add", foreign);
        try {
            TestNetwork.Namespace mine = net.namespace("live");
            List<String> removed = TestNetwork.sweep();
            assertEquals(List.of(dead), removed);
            String left = TestNetwork.exec("ip", "netns", "list").output();
            assertTrue(left.contains(foreign), "a name it does not own is never touched");
            assertTrue(left.contains(mine.name), "a live run's namespace stays");
        } finally {
            TestNetwork.exec("ip", "netns", "del", foreign);
            TestNetwork.exec("ip", "netns", "del", dead);
        }
    }
}
