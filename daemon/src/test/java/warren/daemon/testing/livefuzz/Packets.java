package warren.daemon.testing.livefuzz;

import java.util.SplittableRandom;

/**
 * Packets a flow or packet socket carries to Bumblebee or Fish before they are handed over: a
 * quarter well-formed IPv4 UDP datagrams (real flows), the rest an IPv4 or IPv6 header with a TCP,
 * UDP or ICMP header behind it, every field random but the version (and, half the time, the
 * lengths made to fit), so a daemon's packet path sees both plausible and hostile first packets.
 */
final class Packets {
    private Packets() {}

    static byte[] random(SplittableRandom rnd) {
        if (rnd.nextInt(4) == 0) {
            return validUdp4(rnd);
        }
        boolean v6 = rnd.nextBoolean();
        int header = v6 ? 40 : 20;
        int len = header + rnd.nextInt(rnd.nextBoolean() ? 60 : 1400);
        byte[] p = Messages.randomBytes(rnd, len);
        boolean fit = rnd.nextBoolean();
        int[] protocols = {6, 17, 1, 58};
        int proto = protocols[rnd.nextInt(protocols.length)];
        if (v6) {
            p[0] = (byte) (0x60 | (p[0] & 0x0F));
            if (fit) {
                int payload = len - 40;
                p[4] = (byte) (payload >>> 8);
                p[5] = (byte) payload;
                p[6] = (byte) proto;
            }
        } else {
            p[0] = (byte) (fit ? 0x45 : 0x40 | (p[0] & 0x0F));
            if (fit) {
                p[2] = (byte) (len >>> 8);
                p[3] = (byte) len;
                p[9] = (byte) proto;
                p[6] = 0x40; // DF, no fragment
                p[7] = 0;
            }
        }
        if (fit && proto == 6 && len >= header + 20) {
            p[header + 12] = 0x50;                       // data offset 5 words
            p[header + 13] = rnd.nextBoolean() ? 0x02 : p[header + 13]; // a SYN half the time
        }
        return p;
    }

    /**
     * A well-formed IPv4 UDP datagram from 198.18.50.1 to 198.18.99.9 (test addresses; a port at
     * random): header checksum right, UDP checksum 0 ("none", RFC 768), so Bumblebee upgrades it
     * into a real flow and Fish forwards it.
     */
    private static byte[] validUdp4(SplittableRandom rnd) {
        byte[] payload = Messages.randomBytes(rnd, rnd.nextInt(64));
        int len = 28 + payload.length;
        byte[] p = new byte[len];
        p[0] = 0x45;
        p[2] = (byte) (len >>> 8);
        p[3] = (byte) len;
        p[8] = 64;
        p[9] = 17;
        byte[] src = {(byte) 198, 18, 50, 1};
        byte[] dst = {(byte) 198, 18, 99, 9};
        System.arraycopy(src, 0, p, 12, 4);
        System.arraycopy(dst, 0, p, 16, 4);
        int sum = 0;
        for (int i = 0; i < 20; i += 2) {
            sum += ((p[i] & 0xFF) << 8) | (p[i + 1] & 0xFF);
        }
        while ((sum >>> 16) != 0) {
            sum = (sum & 0xFFFF) + (sum >>> 16);
        }
        int check = ~sum & 0xFFFF;
        p[10] = (byte) (check >>> 8);
        p[11] = (byte) check;
        int sport = 1024 + rnd.nextInt(60_000);
        int dport = 1 + rnd.nextInt(65_535);
        p[20] = (byte) (sport >>> 8);
        p[21] = (byte) sport;
        p[22] = (byte) (dport >>> 8);
        p[23] = (byte) dport;
        p[24] = (byte) ((8 + payload.length) >>> 8);
        p[25] = (byte) (8 + payload.length);
        System.arraycopy(payload, 0, p, 28, payload.length);
        return p;
    }
}
