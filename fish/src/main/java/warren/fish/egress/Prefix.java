package warren.fish.egress;

import java.net.InetAddress;
import java.net.UnknownHostException;
import java.util.ArrayList;
import java.util.List;
import warren.packet.Ip;

/** An IPv4 or IPv6 prefix (address/length), as in {@code fish.soft_unicast_prefixes}. */
public record Prefix(byte[] address, int length) {
    public Prefix {
        if (address.length != 4 && address.length != 16) {
            throw new IllegalArgumentException("an address of 4 or 16 bytes");
        }
        if (length < 0 || length > address.length * 8) {
            throw new IllegalArgumentException("prefix length " + length + " outside 0-" + address.length * 8);
        }
        address = address.clone();
    }

    /** True if {@code ip} (4 or 16 bytes) is inside this prefix; {@code len} bytes of it are read. */
    public boolean contains(byte[] ip, int len) {
        if (len != address.length) {
            return false;
        }
        int full = length / 8;
        for (int i = 0; i < full; i++) {
            if (ip[i] != address[i]) {
                return false;
            }
        }
        int rest = length % 8;
        if (rest == 0) {
            return true;
        }
        int mask = (0xFF << (8 - rest)) & 0xFF;
        return (ip[full] & mask) == (address[full] & mask);
    }

    public boolean contains(byte[] ip) {
        return contains(ip, ip.length);
    }

    public boolean v4() {
        return address.length == 4;
    }

    /** "198.18.202.0/24"; the address part must have no bit set past the length. */
    public static Prefix parse(String text) {
        String t = text.strip();
        int slash = t.indexOf('/');
        if (slash < 0) {
            throw new IllegalArgumentException("'" + t + "' is not a prefix (ADDRESS/LENGTH)");
        }
        String host = t.substring(0, slash);
        if (!host.matches("[0-9a-fA-F:.]+")) { // no name lookups: literal addresses only
            throw new IllegalArgumentException("'" + host + "' is not an IP address");
        }
        byte[] a;
        try {
            a = InetAddress.getByName(host).getAddress();
        } catch (UnknownHostException e) {
            throw new IllegalArgumentException("'" + host + "' is not an IP address");
        }
        int len;
        try {
            len = Integer.parseInt(t.substring(slash + 1));
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("'" + t + "': the length is not a number");
        }
        Prefix p = new Prefix(a, len);
        if (!p.contains(a) || !new Prefix(p.network(), len).equals(p)) {
            throw new IllegalArgumentException("'" + t + "' has host bits set (did you mean " + new Prefix(p.network(), len)
                    + "?)");
        }
        return p;
    }

    private byte[] network() {
        byte[] n = new byte[address.length];
        for (int i = 0; i < n.length; i++) {
            int bits = Math.max(0, Math.min(8, length - i * 8));
            n[i] = (byte) (address[i] & ((0xFF << (8 - bits)) & 0xFF));
        }
        return n;
    }

    /** A list separated by commas and/or spaces; empty text = an empty list. */
    public static List<Prefix> parseList(String text) {
        List<Prefix> out = new ArrayList<>();
        for (String s : text.split("[,\\s]+")) {
            if (!s.isBlank()) {
                out.add(parse(s));
            }
        }
        return List.copyOf(out);
    }

    public static String formatList(List<Prefix> list) {
        return String.join(", ", list.stream().map(Prefix::toString).toList());
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Prefix p && p.length == length && java.util.Arrays.equals(p.address, address);
    }

    @Override
    public int hashCode() {
        return java.util.Arrays.hashCode(address) * 31 + length;
    }

    @Override
    public String toString() {
        return text(address) + "/" + length;
    }

    /** An IPv4 address dotted, an IPv6 one in RFC 5952's short form ("fd00:202::"): {@link Ip#text}. */
    static String text(byte[] a) {
        return Ip.text(a);
    }
}
