package warren.daemon.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The pcap layout byte for byte, and tcpdump reading it (when installed). */
class PcapWriterTest {
    @TempDir
    Path dir;

    /** A UDP packet 198.18.0.1:1000 -> 198.18.0.2:2000 with "hi", checksums right. */
    static byte[] udp() {
        ByteBuffer b = ByteBuffer.allocate(30);
        b.put(0, (byte) 0x45).putShort(2, (short) 30).put(8, (byte) 64).put(9, (byte) 17);
        b.put(12, new byte[] {(byte) 198, 18, 0, 1}).put(16, new byte[] {(byte) 198, 18, 0, 2});
        b.putShort(20, (short) 1000).putShort(22, (short) 2000).putShort(24, (short) 10);
        b.put(28, (byte) 'h').put(29, (byte) 'i');
        b.putShort(10, (short) ~sum(b, 0, 20, 0));
        long pseudo = 0xC612 + 0x0001 + 0xC612 + 0x0002 + 17 + 10;
        b.putShort(26, (short) ~sum(b, 20, 10, pseudo));
        return b.array();
    }

    private static int sum(ByteBuffer b, int off, int len, long start) {
        long s = start;
        for (int i = 0; i < len; i += 2) {
            s += ((b.get(off + i) & 0xFF) << 8) | (i + 1 < len ? b.get(off + i + 1) & 0xFF : 0);
        }
        while ((s >>> 16) != 0) {
            s = (s & 0xFFFF) + (s >>> 16);
        }
        return (int) s;
    }

    @Test
    void headersAreTheClassicNanosecondFormat() throws Exception {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        byte[] p = udp();
        try (PcapWriter w = new PcapWriter(bytes, 65_535)) {
            w.write(1_700_000_000_123_456_789L, p, 0, p.length, p.length);
            w.write(1_700_000_001_000_000_001L, p, 0, 20, p.length); // cut by a snaplen upstream
        }
        ByteBuffer b = ByteBuffer.wrap(bytes.toByteArray());
        assertEquals(24 + 16 + 30 + 16 + 20, b.capacity());
        assertEquals(0xa1b23c4d, b.getInt(0));
        assertEquals(2, b.getShort(4));
        assertEquals(4, b.getShort(6));
        assertEquals(65_535, b.getInt(16));
        assertEquals(101, b.getInt(20));
        assertEquals(1_700_000_000, b.getInt(24));
        assertEquals(123_456_789, b.getInt(28));
        assertEquals(30, b.getInt(32));
        assertEquals(30, b.getInt(36));
        assertEquals(0x45, b.get(40));
        int second = 24 + 16 + 30;
        assertEquals(1, b.getInt(second + 4));
        assertEquals(20, b.getInt(second + 8));
        assertEquals(30, b.getInt(second + 12));
    }

    @Test
    void tcpdumpReadsIt() throws Exception {
        Path tcpdump = Path.of("/usr/bin/tcpdump");
        Assumptions.assumeTrue(Files.isExecutable(tcpdump) || Files.isExecutable(Path.of("/usr/sbin/tcpdump")),
                "tcpdump is not installed");
        Path file = dir.resolve("t.pcap");
        byte[] p = udp();
        try (OutputStream out = Files.newOutputStream(file); PcapWriter w = new PcapWriter(out, 65_535)) {
            w.write(1_700_000_000_123_456_789L, p, 0, p.length, p.length);
        }
        Process proc = new ProcessBuilder("tcpdump", "-r", file.toString(), "-nn", "-vv",
                "--time-stamp-precision=nano", "-tt").redirectErrorStream(true).start();
        String out = new String(proc.getInputStream().readAllBytes());
        assertTrue(proc.waitFor(10, TimeUnit.SECONDS));
        assertEquals(0, proc.exitValue(), out);
        assertTrue(out.contains("link-type RAW"), out);
        assertTrue(out.contains("1700000000.123456789"), out);
        assertTrue(out.contains("198.18.0.1.1000 > 198.18.0.2.2000"), out);
        assertTrue(out.contains("[udp sum ok]"), out);
    }
}
