package warren.splicer;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import jnr.ffi.Pointer;
import warren.fdpass.Fd;
import warren.fdpass.libc.Layout;
import warren.fdpass.libc.Native;

/**
 * A stand-in for systemd's notify socket (NOTIFY_SOCKET) for a daemon the test starts: it reads
 * every notification as it comes, as systemd does (a datagram socket queues only
 * net.unix.max_dgram_qlen before the sender blocks), closes the fds passed (which also completes
 * a BARRIER=1), and keeps a model of the fd store: how many fds are stored under each name
 * ({@code FDSTORE=1} adds, {@code FDSTOREREMOVE=1} removes the name), and every store and removal
 * in order ({@code +NAME n}, {@code -NAME}; {@code -NAME?} for a name that held nothing).
 */
final class FakeNotify implements AutoCloseable {
    final Path path;
    private final Fd socket;
    private final Thread reader;
    private final AtomicBoolean done = new AtomicBoolean();
    private final List<String> events = new ArrayList<>();
    private final Map<String, Integer> store = new LinkedHashMap<>();

    private FakeNotify(Path path) throws Exception {
        this.path = path;
        this.socket = Fd.adopt(Native.socket(Native.AF_UNIX, Native.SOCK_DGRAM | Native.SOCK_CLOEXEC, 0));
        Native.bind(socket.get(), Native.sockaddrUn(path.toString()), path.toString());
        this.reader = new Thread(() -> {
            try {
                while (!done.get()) {
                    if ((Native.pollOne(socket.get(), Native.POLLIN, 50) & Native.POLLIN) != 0) {
                        drain();
                    }
                }
            } catch (Exception e) {
                synchronized (this) {
                    events.add("reader failed: " + e);
                }
            }
        }, "fake-systemd");
        reader.start();
    }

    static FakeNotify bind(Path path) throws Exception {
        return new FakeNotify(path);
    }

    /**
     * Splicer started with this as its NOTIFY_SOCKET ({@code prefix}: a command to run it under,
     * e.g. prlimit), its output in {@code log}, which a failure's message carries.
     */
    warren.daemon.testing.DaemonProcess splicer(Path control, Path conf, List<String> prefix, Path log) throws Exception {
        return new warren.daemon.testing.DaemonProcess("splicer", Main.class, control, conf, prefix, List.of(), pb -> {
            pb.environment().put("NOTIFY_SOCKET", path.toString());
            pb.redirectErrorStream(true).redirectOutput(log.toFile());
        }, log);
    }

    /** Every store and removal so far, in order. */
    synchronized List<String> events() {
        return new ArrayList<>(events);
    }

    /** The names stored (FDSTORE=1), in order, repeats included. */
    synchronized List<String> stored() {
        return events.stream().filter(e -> e.startsWith("+")).map(e -> e.substring(1, e.indexOf(' '))).toList();
    }

    /** The store as the daemon left it so far: fds per name. */
    synchronized Map<String, Integer> store() {
        return new LinkedHashMap<>(store);
    }

    /** Waits (30 s at most) until the store's names are {@code names}, and returns the store. */
    Map<String, Integer> awaitNames(java.util.Set<String> names) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (!store().keySet().equals(names) && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        Map<String, Integer> s = store();
        if (!s.keySet().equals(names)) {
            throw new AssertionError("the fd store holds " + s + ", not " + names + "; events " + events());
        }
        return s;
    }

    private void drain() throws Exception {
        Pointer buf = Native.allocate(4096);
        Pointer iov = Native.allocate(Layout.IOVEC_SIZE);
        int space = Layout.cmsgSpace(253 * 4);
        Pointer control = Native.allocate(space);
        Pointer hdr = Native.allocate(Layout.MSGHDR_SIZE);
        while (true) {
            iov.putAddress(Layout.IOV_BASE, buf.address());
            iov.putLong(Layout.IOV_LEN, 4096);
            hdr.putAddress(Layout.MSG_NAME, 0);
            hdr.putInt(Layout.MSG_NAMELEN, 0);
            hdr.putAddress(Layout.MSG_IOV, iov.address());
            hdr.putLong(Layout.MSG_IOVLEN, 1);
            hdr.putAddress(Layout.MSG_CONTROL, control.address());
            hdr.putLong(Layout.MSG_CONTROLLEN, space);
            long n = Native.recvmsg(socket.get(), hdr, Native.MSG_CMSG_CLOEXEC | Native.MSG_DONTWAIT);
            if (n <= 0) { // WOULD_BLOCK: all read
                return;
            }
            int count = 0;
            if (hdr.getLong(Layout.MSG_CONTROLLEN) >= Layout.CMSG_HDR_SIZE) {
                count = (int) ((control.getLong(Layout.CMSG_LEN_OFF) - Layout.CMSG_HDR_SIZE) / 4);
                for (int i = 0; i < count; i++) {
                    Native.close(control.getInt(Layout.CMSG_HDR_SIZE + 4L * i));
                }
            }
            byte[] b = new byte[(int) n];
            buf.get(0, b, 0, b.length);
            String msg = new String(b, StandardCharsets.UTF_8);
            String name = msg.contains("FDNAME=") ? msg.substring(msg.indexOf("FDNAME=") + 7).strip() : "";
            synchronized (this) {
                if (msg.startsWith("FDSTORE=1")) {
                    events.add("+" + name + " " + count);
                    store.merge(name, count, Integer::sum);
                } else if (msg.startsWith("FDSTOREREMOVE=1")) {
                    events.add("-" + name + (store.remove(name) == null ? "?" : ""));
                }
            }
        }
    }

    @Override
    public void close() throws Exception {
        done.set(true);
        reader.join(10_000);
        drain();
        socket.close();
    }
}
