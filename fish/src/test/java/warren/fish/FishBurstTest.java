package warren.fish;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import java.util.stream.IntStream;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.linux.net.Netns;
import warren.netns.testing.NetnsExtension;
import warren.netns.testing.TestNetwork;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.Ip;
import warren.packet.PacketView;

/**
 * Bursts of new flows (issue 15): the new flows of a read batch are reserved in one conntrack
 * batch, each create-exclusive checked on its own (a collision in the middle moves that flow alone
 * to the next free port), their packets go out in order, and conntrack holds exactly the entries of
 * the flows Fish has; a client's end deletes its entries in batches too.
 */
@ExtendWith(NetnsExtension.class)
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class FishBurstTest {
    private static final String CLIENT = "198.18.60.1";

    @TempDir
    Path dir;

    private static Map<String, Long> counters(Topology t) throws Exception {
        return t.status().getStatus().getCountersMap();
    }

    private static long delta(Map<String, Long> after, Map<String, Long> before, String name) {
        return after.getOrDefault(name, 0L) - before.getOrDefault(name, 0L);
    }

    /** The source ports of the egress namespace's TCP entries from the soft-unicast IP to the server's :80 with a mark (Fish's). */
    private static Set<Integer> fishPorts(Topology t) throws Exception {
        Set<Integer> out = new TreeSet<>();
        for (String l : t.egress.exec("sh", "-c", "conntrack -L -p tcp 2>/dev/null").output().lines().toList()) {
            if (l.contains("src=" + Topology.SOFT + " dst=" + t.server.getHostAddress()) && l.contains("dport=80 ")
                    && l.matches(".*mark=[1-9]\\d*.*")) {
                String sport = l.substring(l.indexOf("sport=") + 6);
                out.add(Integer.parseInt(sport.substring(0, sport.indexOf(' '))));
            }
        }
        return out;
    }

    /** A TCP SYN from {@link #CLIENT}:{@code sport} to the server's :80, sequence number {@code seq}, in {@code b} at 0; its length. */
    private static int syn(ByteBuffer b, Topology t, int sport, int seq) {
        int total = Ip.V4_HEADER + Ip.TCP_HEADER;
        for (int i = 0; i < total; i++) {
            b.put(i, (byte) 0);
        }
        b.put(0, (byte) 0x45).putShort(Ip.V4_TOTAL_LENGTH, (short) total).put(Ip.V4_TTL, (byte) 64)
                .put(Ip.V4_PROTOCOL, (byte) Ip.TCP);
        b.put(Ip.V4_SRC, new byte[] {(byte) 198, 18, 60, 1}).put(Ip.V4_DST, t.server.getAddress());
        int h = Ip.V4_HEADER;
        b.putShort(h, (short) sport).putShort(h + 2, (short) 80).putInt(h + 4, seq).put(h + 12, (byte) 0x50)
                .put(h + 13, (byte) Ip.TCP_SYN).putShort(h + 14, (short) 64240);
        b.putShort(Ip.V4_CHECKSUM, (short) warren.packet.Checksum.finish(warren.packet.Checksum.sum(b, 0, Ip.V4_HEADER)));
        PacketView v = new PacketView();
        if (v.parse(b, 0, total, new FlowKey()) != DropReason.NONE) {
            throw new IllegalStateException("test packet");
        }
        v.fixChecksums();
        return total;
    }

    /**
     * 40 SYNs of 40 new flows wait in the client's socket when Fish gets it, so its reads find 16,
     * 16 and 8: three conntrack batches, plus one for the flow whose port someone else holds
     * (24005: EEXIST, counted; that flow alone goes on to the next free port, 24016, the others keep
     * theirs). Every SYN reaches the server (its SYN-ACK comes back to its client port), and conntrack
     * holds exactly Fish's 40 entries and the other one.
     */
    @Test
    void queuedSynsAreReservedABatchAtATimeAndACollisionInTheMiddleMovesOnlyItsFlow(TestNetwork net) throws Exception {
        int n = 40;
        try (Topology t = new Topology(net, dir, "threads = 1\nfish.tcp_close_timeout = 120s\n")) {
            assertEquals(0, t.egress.exec("conntrack", "-I", "-p", "tcp", "-s", Topology.SOFT, "-d", t.link.v4b(),
                    "--sport", "24005", "--dport", "80", "--state", "ESTABLISHED", "-t", "120", "-u", "SEEN_REPLY").status());
            Map<String, Long> before = counters(t);
            ByteBuffer b = ByteBuffer.allocateDirect(2048);
            Pointer p = Pointer.wrap(Native.RUNTIME, b);
            Fd raw = t.rawClientWithQueued("a", 24000, 24063, fd -> {
                for (int i = 0; i < n; i++) {
                    int len = syn(b, t, 40000 + i, 1000 * i);
                    assertEquals(len, Native.send(fd, p, len, Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL));
                }
            });
            // every SYN went through: its SYN-ACK comes back to its client port, acknowledging its sequence number
            Set<Integer> answered = new TreeSet<>();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            PacketView v = new PacketView();
            FlowKey k = new FlowKey();
            while (answered.size() < n && System.nanoTime() < deadline) {
                long got = Native.recv(raw.get(), p, b.capacity(), Native.MSG_DONTWAIT);
                if (got <= 0) {
                    Thread.sleep(5);
                    continue;
                }
                assertEquals(DropReason.NONE, v.parse(b, 0, (int) got, k));
                assertEquals(Ip.TCP_SYN | Ip.TCP_ACK, v.tcpFlags() & (Ip.TCP_SYN | Ip.TCP_ACK | Ip.TCP_RST));
                assertEquals(CLIENT, java.net.InetAddress.getByAddress(java.util.Arrays.copyOf(k.dst, 4)).getHostAddress());
                assertEquals(1000 * (k.dstPort - 40000) + 1, b.getInt(v.l4Offset() + 8), "acknowledges the SYN");
                answered.add(k.dstPort);
            }
            assertEquals(n, answered.size(), "SYN-ACKs for " + answered);
            Map<String, Long> after = counters(t);
            assertEquals(n, delta(after, before, "reservations.made"));
            assertEquals(1, delta(after, before, "reservations.collisions"));
            assertEquals(0, delta(after, before, "reservations.errors"));
            assertEquals(4, delta(after, before, "conntrack.batches"), "reads of 16, 16, 8 and a second round for 24005: "
                    + after);
            assertEquals(n + 1, delta(after, before, "conntrack.batched"));
            Set<Integer> want = IntStream.rangeClosed(24000, 24040).filter(x -> x != 24005).boxed()
                    .collect(Collectors.toCollection(TreeSet::new));
            assertEquals(want, fishPorts(t), "exactly Fish's entries");
            assertTrue(t.egress.exec("conntrack", "-L", "-p", "tcp").output().contains("sport=24005"), "the other one's too");
        }
    }

    /**
     * 200 real connections opened at once from the client namespace (non-blocking connects: the
     * SYNs leave in a burst) all get through, each from its own port of the range, and conntrack
     * holds exactly the entries of those ports. Their client's end then deletes them in batches of
     * 64 (4 writes for 200).
     */
    @Test
    void aBurstOfConnectionsAllGetThroughAndTheirEntriesGoInBatchesWithTheirClient(TestNetwork net) throws Exception {
        int n = 200;
        try (Topology t = new Topology(net, dir, "")) {
            TestNetwork.Namespace client = t.client("a", 30000, 30999, null);
            Map<String, Long> before = counters(t);
            SocketChannel[] ch = new SocketChannel[n];
            try {
                aBurst(t, client, n, ch, before);
            } finally {
                for (SocketChannel c : ch) {
                    if (c != null) {
                        c.close();
                    }
                }
            }
        }
    }

    private static void aBurst(Topology t, TestNetwork.Namespace client, int n, SocketChannel[] ch, Map<String, Long> before)
            throws Exception {
        Set<Integer> ports = burst(client, t, ch);
        assertEquals(n, ports.size(), "each from its own port: " + ports);
        assertTrue(ports.stream().allMatch(x -> x >= 30000 && x <= 30999), ports.toString());
        Map<String, Long> after = counters(t);
        assertEquals(n, delta(after, before, "reservations.made"));
        assertEquals(0, delta(after, before, "reservations.errors"));
        assertEquals(n, delta(after, before, "conntrack.batched"), "a request per new flow, no more");
        long batches = delta(after, before, "conntrack.batches");
        System.out.printf("%d connections at once: %d reservations in %d conntrack writes (%.1f per write)%n", n, n,
                batches, (double) n / batches);
        assertEquals(ports, fishPorts(t), "exactly the entries of the ports in use");

        t.endClients();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (!fishPorts(t).isEmpty() && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        assertEquals(Set.of(), fishPorts(t), "its entries went with the client");
        Map<String, Long> ended = counters(t);
        assertEquals(n, delta(ended, after, "conntrack.batched"), "a delete per flow");
        assertEquals((n + 63) / 64, delta(ended, after, "conntrack.batches"), "deleted 64 at a time");
    }

    /**
     * {@code ch.length} connections to the server's :80 opened at once from {@code client} (left
     * open, in {@code ch}); the egress port each was seen from.
     */
    private static Set<Integer> burst(TestNetwork.Namespace client, Topology t, SocketChannel[] ch) throws Exception {
        int n = ch.length;
        ByteBuffer[] in = new ByteBuffer[n];
        Set<Integer> ports = new TreeSet<>();
        try (Selector sel = Selector.open()) {
            for (int i = 0; i < n; i++) {
                ch[i] = Netns.call("/run/netns/" + client.name, SocketChannel::open);
                ch[i].configureBlocking(false);
                in[i] = ByteBuffer.allocate(512);
            }
            for (int i = 0; i < n; i++) {
                if (ch[i].connect(new InetSocketAddress(t.server, 80))) {
                    ch[i].register(sel, SelectionKey.OP_WRITE, i);
                } else {
                    ch[i].register(sel, SelectionKey.OP_CONNECT, i);
                }
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            int done = 0;
            while (done < n) {
                assertTrue(System.nanoTime() < deadline, done + " of " + n + " answered");
                sel.select(1000);
                for (SelectionKey key : sel.selectedKeys()) {
                    int i = (Integer) key.attachment();
                    SocketChannel c = ch[i];
                    if (key.isConnectable() && c.finishConnect()) {
                        key.interestOps(SelectionKey.OP_WRITE);
                    } else if (key.isValid() && key.isWritable()) {
                        c.write(ByteBuffer.wrap("GET / HTTP/1.0\r\n\r\n".getBytes(StandardCharsets.US_ASCII)));
                        key.interestOps(SelectionKey.OP_READ);
                    } else if (key.isValid() && key.isReadable()) {
                        c.read(in[i]);
                        String text = new String(in[i].array(), 0, in[i].position(), StandardCharsets.US_ASCII);
                        int at = text.indexOf("you are ");
                        if (at >= 0 && text.indexOf('\n', at) > 0) {
                            String who = text.substring(at + 8, text.indexOf('\n', at)).strip();
                            assertTrue(who.startsWith(Topology.SOFT + ":"), who);
                            ports.add(Integer.parseInt(who.substring(who.lastIndexOf(':') + 1)));
                            key.cancel();
                            done++;
                        }
                    }
                }
                sel.selectedKeys().clear();
            }
        }
        return ports;
    }
}
