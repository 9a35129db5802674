package warren.daemon;

import com.google.protobuf.ByteString;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import warren.fdpass.Fd;
import warren.fdpass.Memfd;
import warren.fdpass.SeqpacketListener;
import warren.fdpass.libc.Native;
import warren.fdpass.net.Linger;
import warren.handoff.v1.PendingCall;
import warren.handoff.v1.RelayDirection;
import warren.handoff.v1.RelayPair;
import warren.handoff.v1.StoredPair;
import warren.systemd.ListenFds;

/**
 * One cold recovery of Splicer from an fd store of N pairs, in this fresh JVM, without systemd:
 * what {@code ./warren bench recovery} runs once per size and run ({@link
 * warren.splicer.ColdRecoveryBench}). It makes what systemd would hand back after a crash (the
 * control listener, one control connection, and per pair: a connected socket pair and two pipes'
 * read ends in a scrambled order under a slot's name, its StoredPair in the pair book, as Splicer's
 * journal writes them; or with {@code p} as the third argument under {@code p<TASK>} with a sealed
 * description each, as before; the recovery reopens the write ends), then times
 * {@link FdStoreRecovery#recover} from there: the same phases as the "recovered" line of a real
 * restart after main (grouping, daemon built, entries read, adopted, started). Here one process
 * holds the whole store and the reopened write ends, so the ceiling is RLIMIT_NOFILE / 6 pairs
 * (about 3,300 at 20,000)
 * instead of systemd's half of it.
 *
 * <p>Bias, said plainly: making the store runs some of the code the recovery runs (protobuf
 * builders, memfd sealing, fcntl) in this JVM first; inodes are read through /proc so that
 * fstat(2), the recovery's main call, stays cold. The JVM's own start and systemd's fork and
 * exec are not in it: {@code ./warren bench crash} measures those under a real systemd.
 */
public final class ColdRecovery {
    private ColdRecovery() {}

    public static void main(String[] args) throws Exception {
        int n = Integer.parseInt(args[0]); // args[1]: the control socket's path (a fresh directory's)
        // args[2]: "book" (as Splicer stores pairs now: 4 fds under a slot's name, the description in
        // the pair book) or "p" (p<TASK>: 4 fds and a sealed description each, as before)
        boolean book = args.length < 3 || args[2].equals("book");
        long madeFrom = System.nanoTime();
        PairBook pairBook = new PairBook();
        if (book) {
            pairBook.adopt(Fd.adopt(Native.memfd_create("book", Native.MFD_CLOEXEC | Native.MFD_ALLOW_SEALING)));
        }
        // the control listener on a path in the bench's own directory (args[1]), mode 0600
        SeqpacketListener listener = SeqpacketListener.bind(Path.of(args[1]));
        int[] c = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
        Fd frontProxy = Fd.adopt(c[1]);
        List<ListenFds.Named> named = new ArrayList<>();
        named.add(new ListenFds.Named(Fd.adopt(c[0]), FdStoreNames.connection(3)));
        long now = System.currentTimeMillis() * 1_000_000L;
        for (int i = 0; i < n; i++) {
            long task = 100 + i;
            int[] s = Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC);
            int[] ab = Native.pipe2(Native.O_CLOEXEC);
            int[] ba = Native.pipe2(Native.O_CLOEXEC);
            RelayDirection.Builder d = RelayDirection.newBuilder().setHasPipe(true).setPipePinned(true).setPipeSize(65536);
            RelayPair pair = RelayPair.newBuilder().setFdA(0).setFdB(1).setFlags(0)
                    .setOriginalFlagsA(2).setOriginalFlagsB(2).setStartUnixNanos(now - 1_000_000_000L)
                    .setAgeNanos(1_000_000_000L).setARemote("198.18.0.1:" + (10000 + i % 50000))
                    .setBRemote("198.19.0.1:443").setOriginalLingerA(Linger.RESET.toProto())
                    .setOriginalLingerB(Linger.RESET.toProto())
                    .addDirections(d.clone().setPipeR(2).setPipeW(3).setRead(4096).setWritten(4096))
                    .addDirections(d.clone().setPipeR(4).setPipeW(5).setRead(512).setWritten(512)).build();
            StoredPair sp = StoredPair.newBuilder().setPair(pair)
                    .setCall(PendingCall.newBuilder().setId(1 + i).setTask(task).setKind("splice")
                            .setMetadata(ByteString.copyFromUtf8("c" + i)).setAcceptedSent(true)
                            .setStartUnixNanos(now - 1_000_000_000L).setPeerPid(4242).setPeerUid(0).setPeerGid(0))
                    .setConnection(3).setItem("splicer.relay").setInoA(ino(s[0])).setInoB(ino(s[1]))
                    .setInoPipeAToB(ino(ab[0])).setInoPipeBToA(ino(ba[0])).setPipeWriteEndsReopened(true).build();
            String name;
            Fd desc = null;
            if (book) {
                int slot = pairBook.claim();
                name = FdStoreNames.slot(slot);
                pairBook.write(slot, sp.toByteArray(), null);
            } else {
                name = FdStoreNames.pair(task);
                desc = Memfd.createSealed(name, sp.toByteArray());
            }
            // systemd hands a set's fds back in any order
            Native.close(ab[1]); // as systemd holds them: the read ends only
            Native.close(ba[1]);
            for (int fd : new int[] {s[1], ab[0], s[0], ba[0]}) {
                named.add(new ListenFds.Named(Fd.adopt(fd), name));
            }
            if (desc != null) {
                named.add(named.size() - 2, new ListenFds.Named(desc, name));
            }
        }
        if (book) { // systemd hands the store back in the order it was stored: the book before the first pair
            named.add(1, new ListenFds.Named(pairBook.storedFd(), FdStoreNames.BOOK));
        }
        long made = System.nanoTime();
        DaemonSpec spec = warren.splicer.Main.spec();
        warren.daemon.config.Config config = warren.daemon.config.Config.defaults(Daemon.configKeys(spec));
        long t0 = System.nanoTime();
        Daemon daemon = FdStoreRecovery.recover(spec, config, listener, named, new FdStoreRecovery.Started(t0, t0));
        long t1 = System.nanoTime();
        System.out.printf(java.util.Locale.ROOT, "cold recovery: %d pairs, store made in %.1f ms, recovered in %.1f ms, pid %d%n",
                n, (made - madeFrom) / 1e6, (t1 - t0) / 1e6, ProcessHandle.current().pid());
        System.out.flush();
        frontProxy.close();
        Runtime.getRuntime().halt(0); // the daemon's loops and its fds go with the process
    }

    /** The inode by stat(2) of /proc/self/fd/N (not Native.fstat: the recovery's own call stays cold). */
    private static long ino(int fd) throws Exception {
        return (Long) Files.getAttribute(Path.of("/proc/self/fd/" + fd), "unix:ino");
    }
}
