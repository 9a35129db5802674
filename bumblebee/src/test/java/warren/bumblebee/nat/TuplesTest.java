package warren.bumblebee.nat;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.net.InetAddress;
import java.util.Random;
import org.junit.jupiter.api.Test;
import warren.control.v1.FiveTuple;

/** The audit text of a translated tuple, built by hand, is what the message and InetAddress gave. */
class TuplesTest {
    /** The text as it was built before: from {@link Tuples#translated} through InetAddress. */
    private static String viaMessage(Flow f) throws Exception {
        FiveTuple t = Tuples.translated(f);
        String src = InetAddress.getByAddress(t.getSrcIp().toByteArray()).getHostAddress();
        String dst = InetAddress.getByAddress(t.getDstIp().toByteArray()).getHostAddress();
        return "tcp " + src + ":" + t.getSrcPort() + " -> " + dst + ":" + (f.downgrade ? f.innerPort : t.getDstPort());
    }

    @Test
    void translatedTextAsBefore() throws Exception {
        for (int version : new int[] {4, 6}) {
            for (int slot : new int[] {0, 1, 254, 255, 256, 4095, 29999, 32766}) {
                Flow f = new Flow(slot);
                f.original.version = version;
                assertEquals(viaMessage(f), Tuples.translatedText(f));
                f.downgrade = true;
                f.innerPort = 43210;
                assertEquals(viaMessage(f), Tuples.translatedText(f));
            }
        }
    }

    @Test
    void textAsFlowKeyToString() {
        Random r = new Random(16);
        for (int i = 0; i < 5_000; i++) {
            warren.packet.FlowKey k = new warren.packet.FlowKey();
            k.version = i % 2 == 0 ? 4 : 6;
            k.protocol = new int[] {6, 17, 1, 58, 132}[i % 5];
            r.nextBytes(k.src);
            r.nextBytes(k.dst);
            if (i % 7 == 0) { // IPv4-mapped
                java.util.Arrays.fill(k.src, 0, 10, (byte) 0);
                k.src[10] = (byte) 0xFF;
                k.src[11] = (byte) 0xFF;
            }
            k.srcPort = r.nextInt(65536);
            k.dstPort = r.nextInt(65536);
            assertEquals(k.toString(), Tuples.text(k));
        }
    }

    @Test
    void hostAddressAsInetAddress() throws Exception {
        Random r = new Random(15);
        for (int i = 0; i < 20_000; i++) {
            byte[] a = new byte[i % 3 == 0 ? 4 : 16];
            r.nextBytes(a);
            if (a.length == 16 && i % 5 == 0) { // zeros and IPv4-mapped ones
                java.util.Arrays.fill(a, 0, 2 + r.nextInt(10), (byte) 0);
                if (i % 10 == 0) {
                    java.util.Arrays.fill(a, 0, 10, (byte) 0);
                    a[10] = (byte) 0xFF;
                    a[11] = (byte) 0xFF;
                }
            }
            StringBuilder sb = new StringBuilder();
            Tuples.hostAddress(sb, a);
            assertEquals(InetAddress.getByAddress(a).getHostAddress(), sb.toString());
        }
    }
}
