package warren.daemon.testing;

import java.nio.file.Path;
import java.util.List;
import warren.daemon.handoff.HandoffItem;
import warren.daemon.handoff.HandoffReceiver;
import warren.fdpass.SeqpacketSocket;

/**
 * A "new version" for upgrade tests that fails in the middle of the pre-copy:
 * {@code PreCopyDropout DAEMON exit|hang ... --handoff PATH} takes the first pre-copied chunk,
 * then exits (status 5, the chunk's fds in hand) or hangs. The old process must give the copy up
 * and serve on exactly as before, holding no fd more than before.
 */
public final class PreCopyDropout {
    private PreCopyDropout() {}

    public static void main(String[] args) throws Exception {
        Path handoff = null;
        for (int i = 0; i < args.length - 1; i++) {
            if (args[i].equals("--handoff")) {
                handoff = Path.of(args[i + 1]);
            }
        }
        boolean hang = args[1].equals("hang");
        try (SeqpacketSocket s = SeqpacketSocket.connect(handoff)) {
            HandoffReceiver.receive(s, args[0], List.of(1), new HandoffReceiver.Preparer() {
                @Override
                public void preCopy(int v, List<HandoffItem> items) throws Exception {
                    if (hang) {
                        Thread.sleep(600_000);
                    }
                    Runtime.getRuntime().halt(5);
                }

                @Override
                public void prepare(int v, List<HandoffItem> items) {}
            }, 600_000);
        } catch (Exception e) {
            System.err.println("pre-copy dropout: " + e.getMessage());
        }
        System.exit(3);
    }
}
