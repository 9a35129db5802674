package warren.daemon.testing.livefuzz;

import java.util.SplittableRandom;

/**
 * Packets a flow or packet socket carries to Bumblebee or Fish before they are handed over: an
 * IPv4 or IPv6 header with a TCP, UDP or ICMP header behind it, every field random but the
 * version (and, half the time, the lengths made to fit), so a daemon's packet path sees both
 * plausible and hostile first packets.
 */
final class Packets {
    private Packets() {}

    static byte[] random(SplittableRandom rnd) {
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
}
