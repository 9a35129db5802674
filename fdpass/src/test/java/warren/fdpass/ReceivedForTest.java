package warren.fdpass;

import java.util.ArrayList;
import java.util.List;

/** A {@link Received} made without a socket (fuzz tests): the message owns {@code fds} as a receiver would. */
public final class ReceivedForTest {
    private ReceivedForTest() {}

    public static Received of(byte[] data, List<Fd> fds) {
        return Received.of(data, new ArrayList<>(fds));
    }
}
