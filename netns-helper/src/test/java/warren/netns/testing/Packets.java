package warren.netns.testing;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import warren.packet.Checksum;

/** Hand-made IPv4/UDP packets for tests that play a flow's far end. */
public final class Packets {
    private Packets() {}

    /** An IPv4 UDP packet with both checksums right. */
    public static byte[] udp4(byte[] src, int sport, byte[] dst, int dport, String payload) {
        byte[] p = payload.getBytes(StandardCharsets.US_ASCII);
        int total = 28 + p.length;
        ByteBuffer b = ByteBuffer.allocate(total);
        b.put(0, (byte) 0x45).putShort(2, (short) total).put(8, (byte) 64).put(9, (byte) 17);
        b.put(12, src).put(16, dst);
        b.putShort(10, (short) Checksum.finish(Checksum.sum(b, 0, 20)));
        b.putShort(20, (short) sport).putShort(22, (short) dport).putShort(24, (short) (8 + p.length));
        b.put(28, p);
        ByteBuffer pseudo = ByteBuffer.allocate(12 + 8 + p.length);
        pseudo.put(0, src).put(4, dst).put(9, (byte) 17).putShort(10, (short) (8 + p.length));
        pseudo.put(12, b.array(), 20, 8 + p.length);
        int c = Checksum.finish(Checksum.sum(pseudo, 0, pseudo.capacity()));
        b.putShort(26, (short) (c == 0 ? 0xFFFF : c));
        return b.array();
    }

    /** Sends one packet as one message on a packet socket (the far end of a flow). */
    public static void send(warren.fdpass.Fd fd, byte[] packet) {
        jnr.ffi.Pointer p = warren.fdpass.libc.Native.allocate(packet.length);
        p.put(0, packet, 0, packet.length);
        if (warren.fdpass.libc.Native.send(fd.get(), p, packet.length, warren.fdpass.libc.Native.MSG_NOSIGNAL)
                != packet.length) {
            throw new IllegalStateException("send: errno " + warren.fdpass.libc.Native.errno());
        }
    }

    /** The UDP payload of an IPv4 packet, as text. */
    public static String udp4Payload(byte[] packet, int length) {
        return new String(packet, 28, length - 28, StandardCharsets.US_ASCII);
    }
}
