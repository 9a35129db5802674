package warren.bumblebee.nat;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import warren.daemon.loop.EventLoop;
import warren.daemon.loop.HandoverRing;
import warren.daemon.metrics.Counters;
import warren.fdpass.EventFd;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.Ip;
import warren.packet.PacketView;
import warren.packet.VnetHdr;

/**
 * TunPath with a bb0 that gives super-packets (IFF_VNET_HDR), without a kernel: a SOCK_SEQPACKET
 * socket stands in for the TUN queue (a read gives one message, as a TUN read gives one packet).
 * A TCP super-packet with a partial checksum reaches a plain flow as the segments the kernel's
 * GSO would send (rewritten to the flow's tuple, sequence numbers in order, every checksum
 * complete and right, one sendmmsg), a vnet_hdr flow whole behind its header with the partial
 * checksum still the pseudo-header sum, and the ring to another loop as plain segments (the path
 * the namespace tests reach only when the kernel picks another loop's queue for a super-packet).
 * A SYN with a partial checksum keeps it partial through the MSS clamp. Nothing allocated per
 * packet is asserted elsewhere (BumblebeeOffloadTest).
 */
class TunPathOffloadTest {
    private static final int H = VnetHdr.SIZE;
    private static final int MSS = 1448;
    private static final byte[] CLIENT = {(byte) 198, 18, 50, 1};
    private static final byte[] SERVER = {(byte) 198, 18, 99, 9};

    private EventLoop loop;
    private final List<Fd> fds = new ArrayList<>();
    private Fd tunWriter;
    private TunPath path;
    private NatCounters counters;
    private HandoverRing toLoop1;
    private Flow[] table;

    @BeforeEach
    void setUp() throws Exception {
        loop = new EventLoop(16, t -> { throw new AssertionError(t); });
        EventLoop.Group group = loop.group("test");
        table = SlotTable.table(4);
        // loop 0 of 2: slot 1 is ours ((1 + 1) % 2 == 0), slot 0 loop 1's
        SlotTable slots = new SlotTable(loop, group, table, 0, 2, 1500, 1_000);
        counters = new NatCounters(new Counters());
        Lifecycle life = new Lifecycle(loop, group, new Nat.Settings(1_000, 60_000, 5_000, 200), slots, counters,
                new FlowStore(null));
        int[] tun = pair();
        tunWriter = Fd.adopt(tun[0]);
        EventFd wakeup = new EventFd();
        fds.add(Fd.adopt(wakeup.fd()));
        toLoop1 = new HandoverRing(64, 1500 + HandoverRing.SLOT_HEADER, wakeup);
        path = new TunPath(Fd.adopt(tun[1]), true, 1500, slots, counters, life, new HandoverRing[] {null, toLoop1});
    }

    @AfterEach
    void tearDown() {
        loop.close();
        Fd.closeAll(fds);
    }

    private int[] pair() throws Exception {
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC | Native.SOCK_NONBLOCK);
        fds.add(Fd.adopt(sv[0]));
        fds.add(Fd.adopt(sv[1]));
        return sv;
    }

    /** Slot {@code slot} ACTIVE for the flow 198.18.50.1:40000 -> 198.18.99.9:443; our end of its flow socket. */
    private Fd flow(int slot, boolean vnet) throws Exception {
        int[] sv = pair();
        Flow f = table[slot];
        f.state = Flow.ACTIVE;
        f.haveKey = true;
        f.vnet = vnet;
        f.flowFd = sv[1];
        f.mss4 = 1460;
        f.mss6 = 1440;
        FlowKey o = f.original;
        o.version = 4;
        o.protocol = Ip.TCP;
        System.arraycopy(CLIENT, 0, o.src, 0, 4);
        System.arraycopy(SERVER, 0, o.dst, 0, 4);
        o.srcPort = 40000;
        o.dstPort = 443;
        return Fd.adopt(sv[0]);
    }

    /**
     * What the kernel sends slot {@code slot}'s flow: listener -> pool address:NAT port, TCP
     * ACK|PSH at {@code seq} with {@code payload} (a SYN-ACK with an MSS option when
     * {@code payload} is null), its checksum partial, behind a header with gso_size {@link #MSS}
     * if it is longer. Written to the stand-in TUN.
     */
    private void kernelSends(int slot, long seq, byte[] payload) {
        boolean syn = payload == null;
        byte[] data = syn ? new byte[0] : payload;
        int opt = syn ? 4 : 0;
        int total = 40 + opt + data.length;
        ByteBuffer b = ByteBuffer.allocateDirect(H + total);
        b.put(H, (byte) 0x45).putShort(H + 2, (short) total).put(H + 6, (byte) 0x40).put(H + 8, (byte) 64)
                .put(H + 9, (byte) Ip.TCP);
        b.put(H + 12, AddressPlan.LISTEN4);
        AddressPlan.poolAddress(4, slot, b, H + 16);
        int t = H + 20;
        b.putShort(t, (short) AddressPlan.LISTEN_PORT).putShort(t + 2, (short) table[slot].natPort).putInt(t + 4, (int) seq)
                .putInt(t + 8, 1001).put(t + 12, (byte) ((5 + opt / 4) << 4))
                .put(t + 13, (byte) (syn ? 0x12 : 0x18)).putShort(t + 14, (short) 64000);
        if (syn) {
            b.put(t + 20, (byte) 2).put(t + 21, (byte) 4).putShort(t + 22, (short) 65495); // loopback's MSS: clamped
        }
        b.put(t + 20 + opt, data);
        b.putShort(H + Ip.V4_CHECKSUM, (short) warren.packet.Checksum.finish(warren.packet.Checksum.sum(b, H, 20)));
        PacketView v = new PacketView();
        assertEquals(DropReason.NONE, v.parse(b, H, total, new FlowKey()));
        v.setPartialChecksum();
        VnetHdr.writeFor(b, 0, v, true, data.length > MSS ? MSS : 0);
        Pointer p = Pointer.wrap(Native.RUNTIME, b);
        assertEquals(H + total, Native.send(tunWriter.get(), p, H + total, 0));
    }

    private static byte[] payload(int n) {
        byte[] d = new byte[n];
        new Random(n).nextBytes(d);
        return d;
    }

    private static List<ByteBuffer> messages(Fd fd) {
        List<ByteBuffer> out = new ArrayList<>();
        ByteBuffer b = ByteBuffer.allocateDirect(VnetHdr.MAX_MESSAGE);
        Pointer p = Pointer.wrap(Native.RUNTIME, b);
        long n;
        while ((n = Native.recv(fd.get(), p, b.capacity(), Native.MSG_DONTWAIT)) > 0) {
            ByteBuffer m = ByteBuffer.allocate((int) n);
            m.put(0, b, 0, (int) n);
            out.add(m);
        }
        return out;
    }

    /** A segment to the client: from the original server to the client, checksums complete; its payload. */
    private static byte[] checkedSegment(ByteBuffer b, int off, long seq) {
        PacketView v = new PacketView();
        FlowKey k = new FlowKey();
        assertEquals(DropReason.NONE, v.parse(b, off, b.capacity() - off, k));
        assertEquals("tcp 198.18.99.9:443 -> 198.18.50.1:40000", k.toString());
        assertTrue(v.ipChecksumOk());
        assertEquals(v.computeL4Checksum(), v.storedL4Checksum(), "a complete, right TCP checksum");
        assertEquals(seq, b.getInt(v.l4Offset() + 4) & 0xFFFFFFFFL, "sequence numbers in order");
        byte[] d = new byte[v.payloadLength()];
        b.get(v.payloadOffset(), d);
        return d;
    }

    @Test
    void aSuperPacketReachesAPlainFlowAsTheKernelsSegments() throws Exception {
        Fd client = flow(1, false);
        byte[] data = payload(4000);
        kernelSends(1, 5000, data);
        path.fromTun();
        List<ByteBuffer> got = messages(client);
        assertEquals(3, got.size(), "4,000 bytes at MSS 1,448: three segments");
        ByteBuffer all = ByteBuffer.allocate(data.length);
        long seq = 5000;
        for (ByteBuffer m : got) {
            byte[] d = checkedSegment(m, 0, seq);
            all.put(d);
            seq += d.length;
            assertTrue(m.capacity() <= 1500);
        }
        assertArrayEquals(data, all.array());
        assertEquals(1, counters.offloadTunIn.sum());
        assertEquals(1, counters.offloadSegmented.sum());
        assertEquals(0, counters.socketFull.sum());
    }

    @Test
    void aSuperPacketReachesAVnetFlowWholeWithItsPartialChecksumRight() throws Exception {
        Fd client = flow(1, true);
        byte[] data = payload(4000);
        kernelSends(1, 5000, data);
        path.fromTun();
        List<ByteBuffer> got = messages(client);
        assertEquals(1, got.size(), "one message: header and super-packet");
        ByteBuffer m = got.get(0);
        ByteBuffer d = ByteBuffer.allocateDirect(m.capacity()).put(0, m, 0, m.capacity());
        PacketView v = new PacketView();
        assertEquals(DropReason.NONE, v.parse(d, H, d.capacity() - H, new FlowKey()));
        assertEquals(DropReason.NONE, VnetHdr.validate(d, 0, v, 1500), "a header that fits the rewritten packet");
        assertEquals(VnetHdr.GSO_TCPV4, VnetHdr.gsoType(d, 0));
        assertEquals(MSS, VnetHdr.gsoSize(d, 0));
        assertEquals(v.pseudoHeaderChecksum(), v.storedL4Checksum(), "still partial: the new pseudo-header's sum");
        v.completeChecksum();
        ByteBuffer h = ByteBuffer.allocate(d.capacity());
        h.put(0, d, 0, d.capacity());
        assertArrayEquals(data, checkedSegment(h, H, 5000));
        assertEquals(0, counters.offloadSegmented.sum());
    }

    @Test
    void aSuperPacketForAnotherLoopsSlotCrossesTheRingAsPlainSegments() throws Exception {
        flow(0, false); // loop 1's slot
        byte[] data = payload(4000);
        kernelSends(0, 7000, data);
        path.fromTun();
        List<byte[]> ring = new ArrayList<>();
        toLoop1.poll((b, off, len, tag) -> {
            byte[] c = new byte[len];
            b.get(off, c);
            ring.add(c);
        }, 64);
        assertEquals(3, ring.size(), "cut before the ring: a slot holds the MTU");
        assertEquals(3, counters.handedOver.sum());
        long seq = 7000;
        ByteBuffer all = ByteBuffer.allocate(data.length);
        for (byte[] c : ring) {
            PacketView v = new PacketView();
            ByteBuffer b = ByteBuffer.wrap(c);
            assertEquals(DropReason.NONE, v.parse(b, 0, c.length, new FlowKey()));
            assertEquals(v.computeL4Checksum(), v.storedL4Checksum(), "complete: the ring carries plain packets");
            assertEquals(seq, b.getInt(v.l4Offset() + 4) & 0xFFFFFFFFL);
            byte[] d = new byte[v.payloadLength()];
            b.get(v.payloadOffset(), d);
            all.put(d);
            seq += d.length;
        }
        assertArrayEquals(data, all.array());
    }

    @Test
    void aSynAcksPartialChecksumStaysPartialThroughTheMssClamp() throws Exception {
        Fd client = flow(1, true);
        kernelSends(1, 5000, null);
        path.fromTun();
        List<ByteBuffer> got = messages(client);
        assertEquals(1, got.size());
        ByteBuffer d = ByteBuffer.allocateDirect(got.get(0).capacity()).put(0, got.get(0), 0, got.get(0).capacity());
        PacketView v = new PacketView();
        assertEquals(DropReason.NONE, v.parse(d, H, d.capacity() - H, new FlowKey()));
        assertEquals(1460, d.getShort(v.l4Offset() + 22) & 0xFFFF, "the MSS clamped to the flow's");
        assertTrue(VnetHdr.needsCsum(d, 0));
        assertEquals(v.pseudoHeaderChecksum(), v.storedL4Checksum(), "partial: the pseudo-header sum");

        Fd plain = flow(3, false); // slot 3 is loop 0's too
        kernelSends(3, 5000, null);
        path.fromTun();
        got = messages(plain);
        assertEquals(1, got.size());
        checkedSegment(got.get(0), 0, 5000); // completed for the plain flow, after the clamp
    }
}
