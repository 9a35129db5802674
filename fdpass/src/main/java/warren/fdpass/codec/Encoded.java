package warren.fdpass.codec;

import java.util.List;
import warren.fdpass.Fd;

/**
 * A message ready for one sendmsg: its bytes and the fds to attach (borrowed from their owners,
 * plus a spill memfd owned by this object when the envelope was too large to go inline).
 * {@link #close()} after sending (or giving up) closes only the spill memfd.
 */
public record Encoded(byte[] bytes, List<Fd> fds, Fd spill) implements AutoCloseable {
    @Override
    public void close() {
        if (spill != null) {
            spill.close();
        }
    }
}
