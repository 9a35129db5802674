package warren.daemon.testing;

import java.nio.file.Path;
import java.util.List;
import warren.daemon.handoff.HandoffReceiver;
import warren.fdpass.SeqpacketSocket;

/**
 * A "new version" for upgrade tests that speaks the handoff protocol but accepts only state
 * version 99: {@code RefusingSuccessor DAEMON ... --handoff PATH}. The old process must refuse it
 * and carry on. Exits 3.
 */
public final class RefusingSuccessor {
    private RefusingSuccessor() {}

    public static void main(String[] args) throws Exception {
        Path handoff = null;
        for (int i = 0; i < args.length - 1; i++) {
            if (args[i].equals("--handoff")) {
                handoff = Path.of(args[i + 1]);
            }
        }
        try (SeqpacketSocket s = SeqpacketSocket.connect(handoff)) {
            HandoffReceiver.receive(s, args[0], List.of(99), (v, items) -> {}, 10_000);
        } catch (Exception e) {
            System.err.println("refusing successor: " + e.getMessage());
        }
        System.exit(3);
    }
}
