package warren.cli;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import warren.control.v1.FiveTuple;
import warren.control.v1.StatusReport;

/** How the human-readable output writes things: sizes, durations, 5-tuples, headers, tables. */
public final class Text {
    private Text() {}

    /** "842 B", "8.0 MiB". */
    static String bytes(long n) {
        if (n < 1024) {
            return n + " B";
        }
        String[] units = {"KiB", "MiB", "GiB", "TiB", "PiB"};
        double v = n;
        int u = -1;
        while (v >= 1024 && u < units.length - 1) {
            v /= 1024;
            u++;
        }
        return String.format(Locale.ROOT, "%.1f %s", v, units[u]);
    }

    /** "450ms", "12.3s", "3m12s", "2h05m", "3d04h". */
    static String duration(long ms) {
        if (ms < 1000) {
            return ms + "ms";
        }
        if (ms < 60_000) {
            return String.format(Locale.ROOT, "%.1fs", ms / 1000.0);
        }
        long s = ms / 1000;
        if (s < 3600) {
            return String.format(Locale.ROOT, "%dm%02ds", s / 60, s % 60);
        }
        if (s < 86_400) {
            return String.format(Locale.ROOT, "%dh%02dm", s / 3600, s % 3600 / 60);
        }
        return String.format(Locale.ROOT, "%dd%02dh", s / 86_400, s % 86_400 / 3600);
    }

    static String protocol(int p) {
        switch (p) {
            case 6: return "tcp";
            case 17: return "udp";
            case 1: return "icmp";
            case 58: return "icmpv6";
            default: return "proto " + p;
        }
    }

    /** An IPv4 address in dotted form, an IPv6 one in RFC 5952's short form ("fd00::1"); "?" for anything else. */
    public static String address(com.google.protobuf.ByteString ip) {
        byte[] b = ip.toByteArray();
        return b.length == 4 || b.length == 16 ? warren.packet.Ip.text(b) : "?";
    }

    private static String endpoint(com.google.protobuf.ByteString ip, int port) {
        String a = address(ip);
        return (a.contains(":") ? "[" + a + "]" : a) + ":" + port;
    }

    /** "tcp 127.0.0.1:41000 -> 127.0.0.1:8080". */
    public static String tuple(FiveTuple t) {
        return protocol(t.getProtocol()) + " " + endpoint(t.getSrcIp(), t.getSrcPort()) + " -> "
                + endpoint(t.getDstIp(), t.getDstPort());
    }

    /** The first line of every human-readable output: which daemon, which version, which process. */
    static String header(StatusReport s) {
        return s.getDaemon() + " " + s.getVersion() + ", pid " + s.getPid() + ", up " + duration(s.getUptimeMs());
    }

    /** Left-aligned columns, two spaces apart; the last column is not padded. */
    static final class Table {
        private final List<String[]> rows = new ArrayList<>();

        Table(String... header) {
            rows.add(header);
        }

        void row(String... cells) {
            rows.add(cells);
        }

        String render() {
            int n = rows.get(0).length;
            int[] w = new int[n];
            for (String[] r : rows) {
                for (int i = 0; i < n; i++) {
                    w[i] = Math.max(w[i], r[i].length());
                }
            }
            StringBuilder sb = new StringBuilder();
            for (String[] r : rows) {
                StringBuilder line = new StringBuilder();
                for (int i = 0; i < n; i++) {
                    line.append(r[i]);
                    if (i < n - 1) {
                        line.append(" ".repeat(w[i] - r[i].length() + 2));
                    }
                }
                sb.append(line.toString().stripTrailing()).append('\n');
            }
            return sb.toString();
        }
    }
}
