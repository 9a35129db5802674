package warren.splicer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.daemon.client.ControlClient;
import warren.daemon.testing.DaemonProcess;
import warren.fdpass.Fd;
import warren.fdpass.libc.Layout;
import warren.fdpass.libc.Native;
import warren.fdpass.net.TcpSockets;

/**
 * A Splicer under a stand-in for systemd (a notify socket of the test's own) stores no more pairs
 * than systemd could hand back after a crash (FdStoreBudget): with RLIMIT_NOFILE's hard limit at
 * 1,100 that is 1,100 / 2 - 512 = 38 fds: the control connection, the pair book and 9 pairs of 4
 * (under the slot names A to I). The 10th pair and later still relay, unstored, and the log says
 * which limit and why.
 */
class SplicerFdStoreBudgetTest {
    @TempDir
    Path dir;

    @Test
    @Timeout(120)
    void pairsPastWhatSystemdCouldHandBackRunUnstoredAndTheLogSaysWhy() throws Exception {
        Path notify = dir.resolve("notify.sock");
        Path log = dir.resolve("out.log");
        Path conf = Files.writeString(dir.resolve("s.conf"), "");
        List<String> stored = java.util.Collections.synchronizedList(new ArrayList<>());
        java.util.concurrent.atomic.AtomicBoolean done = new java.util.concurrent.atomic.AtomicBoolean();
        try (Fd systemd = Fd.adopt(Native.socket(Native.AF_UNIX, Native.SOCK_DGRAM | Native.SOCK_CLOEXEC, 0))) {
            Native.bind(systemd.get(), Native.sockaddrUn(notify.toString()), notify.toString());
            // as systemd does, read the notifications as they come: a datagram socket queues only
            // net.unix.max_dgram_qlen (10 here) before the sender blocks
            Thread reader = new Thread(() -> {
                try {
                    while (!done.get()) {
                        if ((Native.pollOne(systemd.get(), Native.POLLIN, 50) & Native.POLLIN) != 0) {
                            drain(systemd, stored);
                        }
                    }
                } catch (Exception e) {
                    stored.add("reader failed: " + e);
                }
            }, "fake-systemd");
            reader.start();
            DaemonProcess d = new DaemonProcess("splicer", Main.class, dir.resolve("s.sock"), conf,
                    List.of("prlimit", "--nofile=1100:1100", "--"), List.of(), pb -> {
                        pb.environment().put("NOTIFY_SOCKET", notify.toString());
                        pb.redirectErrorStream(true).redirectOutput(log.toFile());
                    }, log);
            try (ControlClient proxy = ControlClient.connect(d.control);
                    Fd tcp = TcpSockets.listen(new InetSocketAddress("127.0.0.1", 0), 64);
                    IdlePairs pairs = IdlePairs.open(proxy, tcp, 12)) {
                String why = await(log, "pair of task 10 not stored");
                assertTrue(why.contains("the fd store would hold up to 42 fds with 10 tasks") && why.contains("about 38")
                        && why.contains("RLIMIT_NOFILE") && why.contains("it runs"), why);
                pairs.oneByteEachWay(); // all twelve relay, stored or not
                pairs.endAndCheck();
            } catch (Throwable t) {
                t.addSuppressed(new AssertionError("the daemon's log:\n" + Files.readString(log)));
                throw t;
            } finally {
                d.close();
                done.set(true);
                reader.join(10_000);
            }
            drain(systemd, stored);
            // a pair is stored before its Accepted: the 12 were all answered, so this is all there was
            List<String> pairsStored = stored.stream()
                    .filter(x -> warren.daemon.FdStoreNames.parse(x).kind() == warren.daemon.FdStoreNames.Kind.SLOT).toList();
            assertEquals(List.of("A", "B", "C", "D", "E", "F", "G", "H", "I"), pairsStored, "stored: " + stored);
            assertTrue(stored.contains("c1"), "the connection: " + stored);
            assertEquals(1, stored.stream().filter("book"::equals).count(), "the pair book, once: " + stored);
        }
    }

    /** The FDNAME of every FDSTORE=1 queued on {@code systemd} (their fds closed), into {@code names}. */
    private static void drain(Fd systemd, List<String> names) throws Exception {
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
            long n = Native.recvmsg(systemd.get(), hdr, Native.MSG_CMSG_CLOEXEC | Native.MSG_DONTWAIT);
            if (n <= 0) { // WOULD_BLOCK: all read
                return;
            }
            if (hdr.getLong(Layout.MSG_CONTROLLEN) >= Layout.CMSG_HDR_SIZE) {
                int count = (int) ((control.getLong(Layout.CMSG_LEN_OFF) - Layout.CMSG_HDR_SIZE) / 4);
                for (int i = 0; i < count; i++) {
                    Native.close(control.getInt(Layout.CMSG_HDR_SIZE + 4L * i));
                }
            }
            byte[] b = new byte[(int) n];
            buf.get(0, b, 0, b.length);
            String msg = new String(b, StandardCharsets.UTF_8);
            if (msg.startsWith("FDSTORE=1")) {
                names.add(msg.substring(msg.indexOf("FDNAME=") + 7).strip());
            }
        }
    }

    private static String await(Path log, String text) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (System.nanoTime() < deadline) {
            for (String l : Files.exists(log) ? Files.readAllLines(log) : List.<String>of()) {
                if (l.contains(text)) {
                    return l;
                }
            }
            Thread.sleep(20);
        }
        throw new AssertionError("no line with \"" + text + "\" in:\n" + Files.readString(log));
    }
}
