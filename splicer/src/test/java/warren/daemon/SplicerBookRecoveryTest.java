package warren.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import warren.fdpass.Fd;
import warren.fdpass.SeqpacketListener;
import warren.fdpass.libc.Native;
import warren.fdpass.net.Linger;
import warren.handoff.v1.PendingCall;
import warren.handoff.v1.RelayDirection;
import warren.handoff.v1.RelayPair;
import warren.handoff.v1.StoredPair;
import warren.systemd.ListenFds;

/**
 * A Splicer rebuilt from an fd store of slot pairs (as after a kill -9, without systemd): the
 * daemon takes the stored book and marks the slots its recovered pairs hold (the adopt path a
 * recovery takes, not the pre-copy's), so its next pairs fill the free slots and never a live
 * pair's: slots 0, 2, 4, ... 18 recovered, the next claims are 1, 3, 5 ... and then 20.
 */
class SplicerBookRecoveryTest {
    @TempDir
    Path dir;

    @Test
    void aRecoveredSplicerKeepsItsPairsSlotsTaken() throws Exception {
        int n = 10;
        SeqpacketListener listener = SeqpacketListener.bind(dir.resolve("s.sock"));
        int[] c = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
        Fd frontProxy = Fd.adopt(c[1]);
        List<Fd> far = new ArrayList<>();
        PairBook stored = new PairBook();
        stored.adopt(Fd.adopt(Native.memfd_create("book", Native.MFD_CLOEXEC)));
        List<ListenFds.Named> named = new ArrayList<>();
        named.add(new ListenFds.Named(Fd.adopt(c[0]), FdStoreNames.connection(3)));
        named.add(new ListenFds.Named(Fd.adopt(Native.fcntl(stored.storedFd().get(), Native.F_DUPFD_CLOEXEC, 3)),
                FdStoreNames.BOOK));
        long now = System.currentTimeMillis() * 1_000_000L;
        for (int i = 0; i < n; i++) {
            int slot = 2 * i;
            int[] s = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
            int[] ab = Native.pipe2(Native.O_CLOEXEC | Native.O_NONBLOCK);
            int[] ba = Native.pipe2(Native.O_CLOEXEC | Native.O_NONBLOCK);
            RelayDirection.Builder d = RelayDirection.newBuilder().setHasPipe(true).setPipePinned(true).setPipeSize(65536);
            RelayPair pair = RelayPair.newBuilder().setFdA(0).setFdB(1).setOriginalFlagsA(2).setOriginalFlagsB(2)
                    .setStartUnixNanos(now).setARemote("198.18.0.1:1").setBRemote("198.19.0.1:2")
                    .setOriginalLingerA(Linger.RESET.toProto()).setOriginalLingerB(Linger.RESET.toProto())
                    .addDirections(d.clone().setPipeR(2).setPipeW(3)).addDirections(d.clone().setPipeR(4).setPipeW(5))
                    .build();
            StoredPair sp = StoredPair.newBuilder().setPair(pair)
                    .setCall(PendingCall.newBuilder().setId(1 + i).setTask(100 + i).setKind("splice").setAcceptedSent(true)
                            .setStartUnixNanos(now))
                    .setConnection(3).setItem("splicer.relay").setInoA(Native.fstat(s[0])[3])
                    .setInoB(Native.fstat(s[1])[3]).setInoPipeAToB(Native.fstat(ab[0])[3])
                    .setInoPipeBToA(Native.fstat(ba[0])[3]).setPipeWriteEndsReopened(true).build();
            stored.write(slot, sp.toByteArray(), null);
            Native.close(ab[1]);
            Native.close(ba[1]);
            for (int fd : new int[] {s[1], ab[0], s[0], ba[0]}) {
                named.add(new ListenFds.Named(Fd.adopt(fd), FdStoreNames.slot(slot)));
            }
        }
        DaemonSpec spec = warren.splicer.Main.spec();
        warren.daemon.config.Config config = warren.daemon.config.Config.parse(
                "audit.path = /dev/null\nsystemd.fd_store = yes\n", Daemon.configKeys(spec), "test");
        long t = System.nanoTime();
        Daemon daemon = FdStoreRecovery.recover(spec, config, listener, named, new FdStoreRecovery.Started(t, t));
        try {
            PairBook book = daemon.pairBook();
            assertEquals(n, book.inUse(), "every recovered pair's slot is taken");
            assertNotNull(book.storedFd(), "the stored book is the daemon's");
            assertEquals(Native.fstat(stored.storedFd().get())[3], Native.fstat(book.storedFd().get())[3], "the same book");
            for (int i = 0; i < n; i++) {
                assertEquals(2 * i + 1, book.claim(), "the free slots first");
            }
            assertEquals(2 * n, book.claim(), "then past the live ones");
            assertTrue(daemon.server() != null);
        } finally {
            daemon.discard();
            stored.close();
            frontProxy.close();
            Fd.closeAll(far);
        }
    }
}
