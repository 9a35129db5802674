package warren.daemon.testing;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;

/** Reads a pcap file with the real tcpdump (a skip when it is not installed). */
public final class Tcpdump {
    private Tcpdump() {}

    /** The file's header line ("reading from file ..., link-type ...") and then one entry per packet. */
    public record Read(String header, List<String> packets, String raw) {}

    /**
     * {@code tcpdump -r FILE -nn -vv -tt --time-stamp-precision=nano}: each packet's lines joined
     * into one entry (tcpdump's -vv checks IP and TCP/UDP checksums: "bad cksum", "incorrect").
     */
    public static Read read(Path pcap) throws Exception {
        Assumptions.assumeTrue(Files.isExecutable(Path.of("/usr/bin/tcpdump"))
                || Files.isExecutable(Path.of("/usr/sbin/tcpdump")), "tcpdump is not installed");
        Process p = new ProcessBuilder("tcpdump", "-r", pcap.toString(), "-nn", "-vv", "-tt",
                "--time-stamp-precision=nano").redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        if (!p.waitFor(30, TimeUnit.SECONDS) || p.exitValue() != 0) {
            throw new AssertionError("tcpdump failed on " + pcap + ":\n" + out);
        }
        String header = "";
        List<String> packets = new ArrayList<>();
        for (String line : out.split("\n")) {
            if (line.startsWith("reading from file")) {
                header = line;
            } else if (line.isEmpty()) {
                continue;
            } else if (Character.isWhitespace(line.charAt(0)) && !packets.isEmpty()) {
                packets.set(packets.size() - 1, packets.get(packets.size() - 1) + " " + line.strip());
            } else {
                packets.add(line.strip());
            }
        }
        return new Read(header, packets, out);
    }
}
