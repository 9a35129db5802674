package warren.daemon.handoff;

import java.util.List;
import warren.fdpass.Fd;

/**
 * One named piece of state: a protobuf payload and the fds its fields index. On the sending side
 * the fds are borrowed from the paused tasks; on the receiving side they belong to whoever
 * {@link HandoffReceiver#receive} returned them to.
 */
public record HandoffItem(String name, byte[] payload, List<Fd> fds) {
    public HandoffItem {
        if (name == null || name.isEmpty()) {
            throw new IllegalArgumentException("a handoff item needs a name");
        }
        payload = payload == null ? new byte[0] : payload;
        fds = List.copyOf(fds);
    }
}
