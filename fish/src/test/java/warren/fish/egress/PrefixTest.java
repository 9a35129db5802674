package warren.fish.egress;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.InetAddress;
import java.util.List;
import org.junit.jupiter.api.Test;

class PrefixTest {
    private static byte[] ip(String s) throws Exception {
        return InetAddress.getByName(s).getAddress();
    }

    @Test
    void containsChecksTheLeadingBitsAndTheFamily() throws Exception {
        Prefix p = Prefix.parse("198.18.202.0/23");
        assertTrue(p.contains(ip("198.18.202.7")));
        assertTrue(p.contains(ip("198.18.203.255")));
        assertFalse(p.contains(ip("198.18.204.0")));
        assertFalse(p.contains(java.util.Arrays.copyOf(ip("198.18.202.7"), 16)), "an IPv6 address is never inside an IPv4 prefix");
        Prefix six = Prefix.parse("fd00:202::/64");
        assertTrue(six.contains(ip("fd00:202::5")));
        assertFalse(six.contains(ip("fd00:203::5")));
        assertTrue(Prefix.parse("0.0.0.0/0").contains(ip("1.2.3.4")));
        assertTrue(Prefix.parse("198.18.202.5/32").contains(ip("198.18.202.5")));
        assertFalse(Prefix.parse("198.18.202.5/32").contains(ip("198.18.202.4")));
    }

    @Test
    void aListRoundTripsThroughItsText() {
        List<Prefix> l = Prefix.parseList("198.18.202.0/24, fd00:202::/64  10.0.0.0/8");
        assertEquals(3, l.size());
        assertEquals("198.18.202.0/24, fd00:202::/64, 10.0.0.0/8", Prefix.formatList(l));
        assertEquals(l, Prefix.parseList(Prefix.formatList(l)));
        assertEquals(List.of(), Prefix.parseList(" "));
        assertEquals("fd00::1:0:0:0/80", Prefix.parse("fd00:0:0:0:1::/80").toString(), "RFC 5952: the first longest run");
        assertEquals("fd00:0:0:1::/64", Prefix.parse("fd00:0:0:1::/64").toString());
    }

    @Test
    void badTextIsRefusedWithTheReason() {
        assertTrue(assertThrows(IllegalArgumentException.class, () -> Prefix.parse("198.18.202.1/24")).getMessage()
                .contains("198.18.202.0/24"), "host bits set: says the prefix meant");
        assertThrows(IllegalArgumentException.class, () -> Prefix.parse("198.18.202.0"));
        assertThrows(IllegalArgumentException.class, () -> Prefix.parse("198.18.202.0/33"));
        assertThrows(IllegalArgumentException.class, () -> Prefix.parse("example.com/24"));
        assertThrows(IllegalArgumentException.class, () -> Prefix.parse("fd00::/x"));
    }
}
