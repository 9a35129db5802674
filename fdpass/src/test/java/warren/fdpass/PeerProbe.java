package warren.fdpass;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;

/** Child process for the peer-credentials test: connects, says its pid, waits for EOF. */
public final class PeerProbe {
    private PeerProbe() {}

    public static void main(String[] args) throws Exception {
        try (SeqpacketSocket s = SeqpacketSocket.connect(Path.of(args[0]))) {
            s.sendBlocking(("pid " + ProcessHandle.current().pid()).getBytes(StandardCharsets.UTF_8), List.of(), 10_000);
            s.receiveBlocking(60_000);
        }
    }
}
