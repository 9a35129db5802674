package warren.daemon.trace;

import java.nio.ByteBuffer;
import warren.packet.DropReason;
import warren.packet.FlowKey;
import warren.packet.PacketView;

/**
 * A traced packet as a capture should show it: a packet whose transport checksum is partial
 * (NEEDS_CSUM: the pseudo-header sum, completed by whoever segments or sends it) is traced as a
 * copy with the checksum completed, so tshark/tcpdump do not report it incorrect; the packet
 * itself is not touched. Only traced flows' packets come here (Fish's and Bumblebee's paths). One
 * per path, loop thread only.
 */
public final class TraceCopy {
    private final ByteBuffer scratch = ByteBuffer.allocateDirect(65536 + 64);
    private final PacketView view = new PacketView();
    private final FlowKey key = new FlowKey();

    public void copy(TraceRing ring, ByteBuffer b, int off, int len, int point, boolean partial) {
        if (!partial || len > scratch.capacity()) {
            ring.copy(b, off, len, point);
            return;
        }
        scratch.put(0, b, off, len);
        if (view.parse(scratch, 0, len, key) == DropReason.NONE) {
            view.completeChecksum();
        }
        ring.copy(scratch, 0, len, point);
    }
}
