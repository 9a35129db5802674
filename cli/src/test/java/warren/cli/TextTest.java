package warren.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.google.protobuf.ByteString;
import java.util.Map;
import java.util.TreeMap;
import org.junit.jupiter.api.Test;
import warren.control.v1.FiveTuple;

/** The formats the commands print: sizes, durations, tuples, tables and JSON. */
class TextTest {
    @Test
    void sizesAndDurations() {
        assertEquals("0 B", Text.bytes(0));
        assertEquals("1023 B", Text.bytes(1023));
        assertEquals("1.0 KiB", Text.bytes(1024));
        assertEquals("8.0 MiB", Text.bytes(8388715));
        assertEquals("450ms", Text.duration(450));
        assertEquals("12.3s", Text.duration(12_345));
        assertEquals("3m12s", Text.duration(192_000));
        assertEquals("2h05m", Text.duration(7_500_000));
        assertEquals("3d04h", Text.duration((3 * 24 + 4) * 3_600_000L));
    }

    @Test
    void tuplesOfBothFamilies() {
        FiveTuple v4 = FiveTuple.newBuilder().setProtocol(6).setSrcIp(ByteString.copyFrom(new byte[] {(byte) 198, 18, 0, 1}))
                .setSrcPort(40000).setDstIp(ByteString.copyFrom(new byte[] {(byte) 198, 18, 0, 2})).setDstPort(80).build();
        assertEquals("tcp 198.18.0.1:40000 -> 198.18.0.2:80", Text.tuple(v4));
        byte[] a = new byte[16];
        a[0] = (byte) 0xfd;
        a[15] = 1;
        FiveTuple v6 = FiveTuple.newBuilder().setProtocol(17).setSrcIp(ByteString.copyFrom(a)).setSrcPort(53)
                .setDstIp(ByteString.copyFrom(a)).setDstPort(5353).build();
        assertEquals("udp [fd00::1]:53 -> [fd00::1]:5353", Text.tuple(v6));
        assertEquals("::", Text.address(ByteString.copyFrom(new byte[16])));
        byte[] one = new byte[16];
        one[15] = 1;
        assertEquals("::1", Text.address(ByteString.copyFrom(one)));
        byte[] mid = {0x20, 0x01, 0x0d, (byte) 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1};
        assertEquals("2001:db8:0:1::1", Text.address(ByteString.copyFrom(mid)));
        byte[] single = {0x20, 0x01, 0x0d, (byte) 0xb8, 0, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1};
        assertEquals("2001:db8:0:1:1:1:1:1", Text.address(ByteString.copyFrom(single)));
        byte[] tail = {(byte) 0xfe, (byte) 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
        assertEquals("fe80::", Text.address(ByteString.copyFrom(tail)));
    }

    @Test
    void tablesPadAllButTheLastColumn() {
        Text.Table t = new Text.Table("A", "LONGER", "LAST");
        t.row("xyz", "1", "free text here");
        t.row("", "", "");
        assertEquals("A    LONGER  LAST\nxyz  1       free text here\n\n", t.render());
    }

    @Test
    void jsonEscapesAndNests() {
        Map<String, Long> counters = new TreeMap<>(Map.of("b", 2L, "a", -1L));
        String s = Json.object().put("s", "q\"\\\n\u0001").put("n", 5).putUnsigned("u", -1L).put("t", true)
                .put("c", counters).put("arr", Json.array().add(Json.object().put("x", 1)).add(Json.object()))
                .put("empty", Json.array()).toString();
        assertEquals("{\"s\":\"q\\\"\\\\\\n\\u0001\",\"n\":5,\"u\":18446744073709551615,\"t\":true,"
                + "\"c\":{\"a\":18446744073709551615,\"b\":2},\"arr\":[{\"x\":1},{}],\"empty\":[]}", s);
    }
}
