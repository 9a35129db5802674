package warren.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import warren.fdpass.Fd;
import warren.fdpass.FdCount;
import warren.fdpass.libc.Layout;
import warren.fdpass.libc.Native;
import warren.systemd.SdNotify;

/**
 * The fd-store side of sd_notify, against a notify socket of the test's own standing in for
 * systemd: FDSTORE=1 carries the fds themselves (the same open files arrive), FDSTOREREMOVE,
 * RELOADING and MAINPID are well formed, bad names are refused before anything is sent.
 */
class SdNotifyFdStoreTest {
    @TempDir
    Path dir;

    @Test
    void fdStoreSendsTheFdsWithTheirNameAndTheOtherStatesAreWellFormed() throws Exception {
        int before = FdCount.now();
        Path sock = dir.resolve("notify.sock");
        try (Fd systemd = Fd.adopt(Native.socket(Native.AF_UNIX, Native.SOCK_DGRAM | Native.SOCK_CLOEXEC, 0));
                SdNotify n = SdNotify.of(sock.toString())) {
            Native.bind(systemd.get(), Native.sockaddrUn(sock.toString()), sock.toString());
            List<Fd> fds = new ArrayList<>();
            for (int i = 0; i < 3; i++) {
                int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
                fds.add(Fd.adopt(sv[0]));
                fds.add(Fd.adopt(sv[1]));
            }
            assertTrue(n.fdStore("pair-17", fds));
            List<Fd> got = new ArrayList<>();
            assertEquals("FDSTORE=1\nFDPOLL=0\nFDNAME=pair-17", receive(systemd, got));
            assertEquals(6, got.size());
            for (int i = 0; i < 6; i++) {
                assertEquals(Native.fstat(fds.get(i).get())[2], Native.fstat(got.get(i).get())[2]);
                assertEquals(Native.fstat(fds.get(i).get())[3], Native.fstat(got.get(i).get())[3],
                        "fd " + i + " is the same socket (inode)");
            }
            Fd.closeAll(got);
            Fd.closeAll(fds);

            assertTrue(n.fdStoreRemove("pair-17"));
            assertEquals("FDSTOREREMOVE=1\nFDNAME=pair-17", receive(systemd, null));
            assertTrue(n.mainPid(4242, "upgraded"));
            assertEquals("MAINPID=4242\nREADY=1\nSTATUS=upgraded", receive(systemd, null));
            assertTrue(n.reloading("upgrading"));
            assertTrue(receive(systemd, null).matches("RELOADING=1\nMONOTONIC_USEC=\\d+\nSTATUS=upgrading"));

            assertThrows(IllegalArgumentException.class, () -> n.fdStore("a:b", List.of()));
            assertThrows(IllegalArgumentException.class, () -> n.fdStore("", List.of()));
            assertThrows(IllegalArgumentException.class, () -> n.fdStoreRemove("has space"));
        }
        assertEquals(before, FdCount.now());
    }

    @Test
    void withoutSystemdEverythingIsANoOp() {
        SdNotify n = SdNotify.of(null);
        assertFalse(n.enabled());
        assertFalse(n.fdStore("x", List.of()));
        assertFalse(n.mainPid(1, "x"));
    }

    private static String receive(Fd fd, List<Fd> fdsOut) throws Exception {
        assertTrue((Native.pollOne(fd.get(), Native.POLLIN, 10_000) & Native.POLLIN) != 0, "a notification");
        Pointer buf = Native.allocate(4096);
        Pointer iov = Native.allocate(Layout.IOVEC_SIZE);
        iov.putAddress(Layout.IOV_BASE, buf.address());
        iov.putLong(Layout.IOV_LEN, 4096);
        int space = Layout.cmsgSpace(253 * 4);
        Pointer control = Native.allocate(space);
        Pointer hdr = Native.allocate(Layout.MSGHDR_SIZE);
        hdr.putAddress(Layout.MSG_IOV, iov.address());
        hdr.putLong(Layout.MSG_IOVLEN, 1);
        hdr.putAddress(Layout.MSG_CONTROL, control.address());
        hdr.putLong(Layout.MSG_CONTROLLEN, space);
        long n = Native.recvmsg(fd.get(), hdr, Native.MSG_CMSG_CLOEXEC);
        assertTrue(n > 0);
        long clen = hdr.getLong(Layout.MSG_CONTROLLEN);
        if (clen >= Layout.CMSG_HDR_SIZE) {
            long len = control.getLong(Layout.CMSG_LEN_OFF);
            int count = (int) ((len - Layout.CMSG_HDR_SIZE) / 4);
            for (int i = 0; i < count; i++) {
                Fd f = Fd.adopt(control.getInt(Layout.CMSG_HDR_SIZE + 4L * i));
                if (fdsOut != null) {
                    fdsOut.add(f);
                } else {
                    f.close();
                }
            }
        }
        byte[] b = new byte[(int) n];
        buf.get(0, b, 0, b.length);
        return new String(b, StandardCharsets.UTF_8);
    }
}
