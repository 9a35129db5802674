package warren.demo;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** The demo's pieces that do not need the daemons, and its Splicer part as a person runs it. */
class DemoTest {
    private static final String END = "{\"ts\":\"2026-12-02T05:30:16.915123456Z\",\"daemon\":\"splicer\",\"event\":\"end\","
            + "\"task\":4,\"kind\":\"splice\",\"metadata\":\"ZGVtbw==\",\"a_remote\":\"127.0.0.1:42524\","
            + "\"reason\":\"BOTH_EOF\",\"bytes_a_to_b\":7946240,\"a_tcp_info\":{\"state\":\"CLOSE\",\"bytes_received\":85}}";

    @Test
    void auditLinesAreShortenedToTheFieldsAPersonReads() {
        assertEquals("05:30:16.915 event=end task=4 kind=splice a_remote=127.0.0.1:42524 reason=BOTH_EOF bytes_a_to_b=7946240",
                Audit.shorten(END));
        assertEquals("4", Audit.field(END, "task"));
        assertEquals(null, Audit.field(END, "bytes"), "a nested or longer key is not taken for another");
        assertEquals(List.of(END), Audit.ofTask(List.of(END, END.replace("\"task\":4", "\"task\":14")), "4"));
        assertEquals(1, Audit.count(List.of(END), "end"));
    }

    @Test
    void oneFailedCheckMakesTheExitStatusOne() {
        PrintStream out = new PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8);
        Checks good = new Checks(out);
        good.check(true, "fine");
        Checks bad = new Checks(out);
        bad.check(true, "fine");
        bad.check(false, "broken");
        assertEquals(0, Demo.exitStatus(List.of(good)));
        assertEquals(1, Demo.exitStatus(List.of(good, bad)));
        assertEquals(1, bad.failed());
    }

    private static Process demo(Path log, String... args) throws Exception {
        List<String> cmd = new java.util.ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-cp", System.getProperty("java.class.path"), Demo.class.getName()));
        cmd.addAll(List.of(args));
        return new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
    }

    @Test
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void theSplicerPartRunsEndToEndAndAnUnknownPartIsAUsageError(@org.junit.jupiter.api.io.TempDir Path dir)
            throws Exception {
        Process bad = demo(dir.resolve("bad.log"), "cheetah");
        assertTrue(bad.waitFor(60, TimeUnit.SECONDS));
        assertEquals(2, bad.exitValue(), Files.readString(dir.resolve("bad.log")));

        Process p = demo(dir.resolve("splicer.log"), "splicer");
        assertTrue(p.waitFor(100, TimeUnit.SECONDS), "the demo ends");
        String text = Files.readString(dir.resolve("splicer.log"));
        assertEquals(0, p.exitValue(), text);
        assertTrue(text.contains("splicer    8 of 8 checks passed") && text.contains("demo OK"), text);
        assertTrue(text.contains("SHA-256 sent ") && !text.contains("FAILED"), text);
    }
}
