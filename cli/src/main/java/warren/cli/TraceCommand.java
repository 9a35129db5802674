package warren.cli;

import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.time.ZoneId;
import java.time.format.DateTimeFormatter;
import java.util.Locale;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;
import warren.control.v1.Response;
import warren.control.v1.StatusReport;
import warren.control.v1.Trace;
import warren.control.v1.TraceChunk;
import warren.control.v1.TraceEnded;
import warren.daemon.client.PcapWriter;
import warren.daemon.client.TraceRecorder;

/**
 * {@code ./warren trace --control PATH --task N [--pcap FILE] [--packets N] [--seconds N]}: a
 * Bumblebee flow's or a Fish client's packets, as the client sent and got them and as translated,
 * into a pcap file (LINKTYPE_RAW, nanosecond stamps: {@code tcpdump -r FILE}); a Splicer pair's
 * byte counts as lines, every 500 ms. Ends when the daemon says (packets, seconds, the task
 * ended) or on Ctrl-C (Cancel, then the file is complete).
 */
@Command(name = "trace", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = {"Capture one task's traffic for a while.",
            "Bumblebee and Fish: the task's packets on both sides (as the client sent and got them, and as"
                    + " translated) into a pcap file for tcpdump/tshark/Wireshark; without --pcap one line per packet.",
            "Splicer: the pair's byte counts, one line every 500 ms.",
            "Ends after --packets or --seconds, when the task ends, or on Ctrl-C."})
public final class TraceCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Mixin
    ControlOption control;

    @Option(names = "--task", required = true, paramLabel = "N", description = "the task to trace (list shows numbers)")
    long task;

    @Option(names = "--pcap", paramLabel = "FILE", description = "write the packets to FILE as pcap ('-': stdout)")
    String pcap;

    @Option(names = "--packets", paramLabel = "N", defaultValue = "1000",
            description = "end after N packets (default ${DEFAULT-VALUE})")
    long packets;

    @Option(names = "--seconds", paramLabel = "N", defaultValue = "10",
            description = "end after N seconds (default ${DEFAULT-VALUE})")
    long seconds;

    @Option(names = "--snaplen", paramLabel = "BYTES", defaultValue = "65535",
            description = "bytes kept of each packet (default ${DEFAULT-VALUE})")
    int snaplen;

    private static final DateTimeFormatter TIME =
            DateTimeFormatter.ofPattern("HH:mm:ss.SSSSSSSSS", Locale.ROOT).withZone(ZoneId.systemDefault());

    @Override
    public Integer call() throws CliException {
        if (task <= 0 || packets <= 0 || packets > 0xFFFF_FFFFL || seconds <= 0 || seconds > 0xFFFF_FFFFL
                || snaplen <= 0 || snaplen > 65_535) {
            throw new CliException(2, "--task, --packets and --seconds must be positive (at most 4294967295),"
                    + " --snaplen 1-65535");
        }
        boolean toStdout = "-".equals(pcap);
        PrintWriter out = spec.commandLine().getOut();
        PrintWriter say = toStdout ? spec.commandLine().getErr() : out; // stdout carries the pcap then
        // Ctrl-C: the hook cancels the trace and waits (a few seconds at most) until this thread has
        // received the last packets, closed the file and printed the summary
        CountDownLatch finished = new CountDownLatch(1);
        Thread onCtrlC = null;
        try (Control c = Control.connect(control.path())) {
            StatusReport s = c.status();
            OutputStream file = pcap == null ? null : toStdout ? System.out : Files.newOutputStream(Path.of(pcap));
            try (PcapWriter w = file == null ? null : new PcapWriter(file, snaplen)) {
                TraceRecorder rec = new TraceRecorder(c.client(), w, chunk -> countsLine(say, chunk),
                        w == null ? p -> packetLine(say, p) : null);
                say.println(Text.header(s) + ": tracing task " + task + " for up to " + seconds + " s / " + packets
                        + " packets" + (pcap == null || toStdout ? "" : " into " + pcap) + "; Ctrl-C ends it");
                say.flush();
                rec.start(Trace.newBuilder().setTask(task).setMaxPackets((int) packets).setSeconds((int) seconds)
                        .setSnaplen(snaplen).build());
                onCtrlC = new Thread(() -> {
                    try {
                        rec.cancel();
                        finished.await(5, TimeUnit.SECONDS);
                    } catch (Exception e) {
                        // exiting anyway
                    }
                }, "trace-ctrl-c");
                Runtime.getRuntime().addShutdownHook(onCtrlC);
                Response end = rec.await(seconds * 1000 + Control.TIMEOUT_MS);
                TraceEnded e = Control.expect(end, Response.BodyCase.TRACE_ENDED).getTraceEnded();
                if (w != null) {
                    w.flush();
                }
                say.println(summary(e, pcap));
                say.flush();
            }
        } catch (IOException e) {
            throw new CliException(pcap + ": " + e.getMessage());
        } catch (ExecutionException e) {
            throw new CliException(control.path() + ": " + e.getCause().getMessage());
        } catch (TimeoutException e) {
            throw new CliException(control.path() + ": the trace did not end within " + seconds + " s");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new CliException("interrupted");
        } catch (CliException e) {
            throw e;
        } catch (Exception e) {
            throw new CliException(e.getMessage());
        } finally {
            if (onCtrlC != null) {
                try {
                    Runtime.getRuntime().removeShutdownHook(onCtrlC);
                } catch (IllegalStateException e) {
                    // Ctrl-C: the JVM is exiting; the hook is waiting for the latch
                }
            }
            finished.countDown();
        }
        return 0;
    }

    private volatile boolean byteCounts;

    private String summary(TraceEnded e, String file) {
        String head = "trace of task " + task + " ended (" + e.getReason() + ")";
        if (byteCounts) {
            return head;
        }
        return head + ": " + e.getPackets() + " packets" + (e.getDropped() == 0 ? "" : ", " + e.getDropped()
                + " dropped (the daemon's trace ring was full: a larger trace.ring_bytes or a smaller --snaplen)")
                + (file == null || file.equals("-") ? "" : ", written to " + file);
    }

    private void countsLine(PrintWriter say, TraceChunk c) {
        byteCounts = true;
        say.println(TIME.format(instant(c.getUnixNanos())) + "  a->b " + count(c.getBytesAToB()) + "  b->a "
                + count(c.getBytesBToA()));
        say.flush();
    }

    /** "300 B", "8388608 B (8.0 MiB)". */
    private static String count(long bytes) {
        return bytes + " B" + (bytes < 1024 ? "" : " (" + Text.bytes(bytes) + ")");
    }

    private static void packetLine(PrintWriter say, warren.control.v1.TracedPacket p) {
        say.println(TIME.format(instant(p.getUnixNanos())) + "  "
                + (p.getSide() == warren.control.v1.TracedPacket.Side.CLIENT ? "client    " : "translated")
                + (p.getInbound() ? "  to client  " : "  from client") + "  " + p.getOriginalLength() + " B");
        say.flush();
    }

    private static Instant instant(long unixNanos) {
        return Instant.ofEpochSecond(Math.floorDiv(unixNanos, 1_000_000_000L), Math.floorMod(unixNanos, 1_000_000_000L));
    }
}
