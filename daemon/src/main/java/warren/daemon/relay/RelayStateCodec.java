package warren.daemon.relay;

import java.util.BitSet;
import java.util.HashSet;
import java.util.Set;
import java.util.List;
import java.util.function.LongFunction;
import warren.daemon.control.Call;
import warren.fdpass.Fd;
import warren.fdpass.libc.NativeIoException;
import warren.fdpass.net.Linger;
import warren.handoff.v1.RelayDirection;
import warren.handoff.v1.RelayPair;
import warren.handoff.v1.RelayState;

/**
 * The relay's state in the handoff encoding (relay.proto), both ways, as FlowTableCodec is
 * Bumblebee's: a pair to a {@code RelayPair} whose fd_* index a list of fds ({@link #pair}), a
 * state checked before any fd is taken ({@link #check}), a {@code RelayPair} back to a pair
 * ({@link #read}). The relay decides when (paused, on its loop); this class only what the bytes
 * say. Control path: it may allocate.
 */
public final class RelayStateCodec {
    /** RelayState.format this build writes and reads. */
    public static final int FORMAT = 1;
    /**
     * A state whose pairs name their fd store slots ({@code store_slot}: their entries are named
     * by the pair book's slots). A build from before the pair book accepts only {@link #FORMAT}:
     * it must refuse such a state (the old process carries on), for it would remove the pairs'
     * entries under {@code p<TASK>} names that match nothing and leave their sockets open in
     * systemd's store. This build reads both.
     */
    public static final int FORMAT_STORE_SLOTS = 2;

    /** {@code state} with {@link #FORMAT_STORE_SLOTS} if any of its pairs names a slot: call before building it. */
    public static RelayState.Builder stamped(RelayState.Builder state) {
        for (RelayPair rp : state.getPairsList()) {
            if (rp.getStoreSlot() != 0) {
                return state.setFormat(FORMAT_STORE_SLOTS);
            }
        }
        return state;
    }

    private RelayStateCodec() {}

    /** What a stored pair and a pre-copied one both carry: its settings and times; its sockets at fds[fdA] and fds[fdA + 1]. */
    private static RelayPair.Builder settings(Pair p, int fdA, long nowNanos) {
        RelayPair.Builder b = RelayPair.newBuilder()
                .setFdA(fdA).setFdB(fdA + 1).setFlags(p.flags())
                .setOriginalFlagsA(p.originalFlags[0]).setOriginalFlagsB(p.originalFlags[1])
                .setIdleTimeoutMs(p.idleTimeoutNanos / 1_000_000).setLifetimeMs(p.lifetimeMillis)
                .setByteLimit(p.byteLimit).setStartUnixNanos(p.startUnixNanos).setAgeNanos(nowNanos - p.startNanos)
                .setARemote(p.aRemote).setBRemote(p.bRemote).setCountsPartial(p.countsPartial);
        if (p.storeSlot >= 0) {
            b.setStoreSlot(p.storeSlot + 1);
        }
        if (p.originalLinger[0] != null && p.originalLinger[1] != null) {
            b.setOriginalLingerA(p.originalLinger[0].toProto()).setOriginalLingerB(p.originalLinger[1].toProto());
        }
        return b;
    }

    /**
     * One pair; its fds (views: the pair still owns them) are appended to {@code fds}, which its
     * fd_* fields index. Pipes go along when they hold bytes, or always when {@code pinPipes}.
     */
    static RelayPair.Builder pair(Pair p, List<Fd> fds, long nowNanos, boolean pinPipes) {
        RelayPair.Builder b = settings(p, fds.size(), nowNanos);
        fds.add(Fd.adopt(p.fd[0]));
        fds.add(Fd.adopt(p.fd[1]));
        for (int d = 0; d < 2; d++) {
            b.addDirections(direction(p, d, fds, pinPipes));
        }
        return b;
    }

    /**
     * One pair for a pre-copy chunk, taken while the relay runs: its sockets as duplicates
     * (F_DUPFD_CLOEXEC, owned by {@code fds}: the pair keeps its own), its counts as now, and no
     * lent pipe (pipes are lent and taken back while the relay runs; those holding bytes go with
     * the delta). With {@code pinPipes} a pipe never changes owner while the pair lives: it is
     * duplicated too ({@code pipe_pinned}; marked in {@link Pair#pipesCopied}), bytes and all, so
     * the delta's update of the pair carries its counts only.
     */
    static RelayPair.Builder preCopy(Pair p, List<Fd> fds, long nowNanos, boolean pinPipes) throws NativeIoException {
        RelayPair.Builder b = settings(p, fds.size(), nowNanos);
        fds.add(dup(p.fd[0]));
        fds.add(dup(p.fd[1]));
        int copied = 0;
        for (int d = 0; d < 2; d++) {
            RelayDirection.Builder dir = RelayDirection.newBuilder().setRead(p.read[d]).setWritten(p.written[d]);
            PipePool.Pipe pipe = p.pipe[d];
            if (pinPipes && pipe != null) {
                dir.setHasPipe(true).setPipePinned(true).setPipeR(fds.size()).setPipeW(fds.size() + 1)
                        .setPipeSize(pipe.size);
                fds.add(dup(pipe.r));
                fds.add(dup(pipe.w));
                copied |= 1 << d;
            }
            b.addDirections(dir);
        }
        p.pipesCopied = copied;
        return b;
    }

    private static Fd dup(int fd) throws NativeIoException {
        return Fd.adopt(warren.fdpass.libc.Native.fcntl(fd, warren.fdpass.libc.Native.F_DUPFD_CLOEXEC, 0));
    }

    /**
     * The delta's update of a pre-copied pair (at the pause): its key, counts and flags, and the
     * pipes that hold bytes (or are pinned) unless the pre-copy sent them (pinned pipes), appended
     * to {@code fds} as views (the pair owns them).
     */
    static RelayPair.Builder update(Pair p, List<Fd> fds, boolean pinPipes) {
        RelayPair.Builder b = RelayPair.newBuilder().setKey(p.copyKey).setUpdate(true).setFlags(p.flags());
        for (int d = 0; d < 2; d++) {
            b.addDirections((p.pipesCopied & (1 << d)) != 0
                    ? RelayDirection.newBuilder().setRead(p.read[d]).setWritten(p.written[d]) // the copy is this pipe
                    : direction(p, d, fds, pinPipes));
        }
        return b;
    }

    private static RelayDirection.Builder direction(Pair p, int d, List<Fd> fds, boolean pinPipes) {
        RelayDirection.Builder dir = RelayDirection.newBuilder().setRead(p.read[d]).setWritten(p.written[d]);
        PipePool.Pipe pipe = p.pipe[d];
        if (pipe != null && (pinPipes || p.read[d] > p.written[d])) {
            dir.setHasPipe(true).setPipeR(fds.size()).setPipeW(fds.size() + 1).setPipeSize(pipe.size);
            fds.add(Fd.adopt(pipe.r));
            fds.add(Fd.adopt(pipe.w));
        }
        return dir;
    }

    /** Applies an update ({@link #update}) to the pre-copied pair {@code p}: counts, flags, pipes taken from {@code fds}. */
    static void applyUpdate(Pair p, PipePool pipes, RelayPair rp, List<Fd> fds) {
        p.restoreFlags(rp.getFlags());
        for (int d = 0; d < 2; d++) {
            RelayDirection dir = rp.getDirections(d);
            p.read[d] = dir.getRead();
            p.written[d] = dir.getWritten();
            if (dir.getHasPipe() && p.pipe[d] == null) {
                p.pipe[d] = pipes.adopt(fds.get(dir.getPipeR()).detach(), fds.get(dir.getPipeW()).detach(),
                        dir.getPipeSize());
            }
        }
    }

    /**
     * The pair {@code rp} describes, of {@code relay}: its sockets and pipes taken from {@code fds}
     * (pipes into {@code pipes}), its request from {@code calls}, its counts, flags and age restored.
     * The sockets are held with SO_LINGER {0} (reset if the process dies) and their own linger kept
     * to restore. Not registered anywhere yet.
     */
    static Pair read(Relay relay, PipePool pipes, RelayPair rp, List<Fd> fds, LongFunction<Call> calls, long nowNanos)
            throws NativeIoException {
        Pair p = new Pair(relay, calls.apply(rp.getCallRef()), fds.get(rp.getFdA()).detach(),
                fds.get(rp.getFdB()).detach(), rp.getIdleTimeoutMs(), rp.getLifetimeMs(), rp.getByteLimit(),
                rp.getStartUnixNanos());
        p.startNanos = nowNanos - rp.getAgeNanos();
        p.originalFlags[0] = rp.getOriginalFlagsA();
        p.originalFlags[1] = rp.getOriginalFlagsB();
        p.aRemote = rp.getARemote();
        p.bRemote = rp.getBRemote();
        p.restoreFlags(rp.getFlags());
        p.countsPartial = rp.getCountsPartial();
        p.storeSlot = rp.getStoreSlot() > 0 ? rp.getStoreSlot() - 1 : -1; // past int (unsigned): none
        if (rp.hasOriginalLingerA() && rp.hasOriginalLingerB()) { // the sockets are held with RESET already
            p.originalLinger[0] = Linger.fromProto(rp.getOriginalLingerA());
            p.originalLinger[1] = Linger.fromProto(rp.getOriginalLingerB());
        } else { // from a sender that left the linger as it came
            for (int side = 0; side < 2; side++) {
                p.originalLinger[side] = Linger.of(p.fd[side]);
                Linger.RESET.applyTo(p.fd[side]);
            }
        }
        for (int d = 0; d < 2; d++) {
            RelayDirection dir = rp.getDirections(d);
            p.read[d] = dir.getRead();
            p.written[d] = dir.getWritten();
            if (dir.getHasPipe()) {
                p.pipe[d] = pipes.adopt(fds.get(dir.getPipeR()).detach(), fds.get(dir.getPipeW()).detach(),
                        dir.getPipeSize());
            }
        }
        return p;
    }

    /**
     * Refuses a malformed relay state before any fd is taken: format, fd indices in range, open
     * and used once, two directions, no bytes in flight without a pipe.
     */
    public static void check(RelayState state, List<Fd> fds) {
        check(state, fds, false);
    }

    /**
     * As {@link #check}; {@code preCopy}: a pre-copy chunk, whose pairs carry no pipe but a pinned
     * one ({@code pipe_pinned}; bytes in flight in a lent pipe come with the delta's update, checked
     * when the successor adopts it), each a key, no update and no ended key. An update may leave
     * out a pipe with bytes in it (the pre-copied pinned pipe holds them; checked at adoption).
     */
    public static void check(RelayState state, List<Fd> fds, boolean preCopy) {
        if (state.getFormat() != FORMAT && state.getFormat() != FORMAT_STORE_SLOTS) {
            throw new IllegalArgumentException("relay state format " + state.getFormat() + ", expected " + FORMAT
                    + " or " + FORMAT_STORE_SLOTS);
        }
        if (preCopy && state.getEndedCount() > 0) {
            throw new IllegalArgumentException("a pre-copy chunk names ended pairs");
        }
        BitSet used = new BitSet(fds.size());
        Set<Long> keys = new HashSet<>();
        for (RelayPair rp : state.getPairsList()) {
            if (preCopy && (rp.getKey() == 0 || rp.getUpdate())) {
                throw new IllegalArgumentException("a pre-copied pair needs a key and cannot be an update");
            }
            if (rp.getKey() != 0 && !keys.add(rp.getKey())) {
                throw new IllegalArgumentException("two pairs with key " + rp.getKey());
            }
            checkPair(rp, fds, used, preCopy);
        }
    }

    /**
     * One pair as {@link #check} checks it, alone with its own fds (a pair stored in systemd's fd
     * store: RelayStore checks each before it joins its relay's item, without a RelayState per pair).
     */
    public static void checkStoredPair(RelayPair rp, List<Fd> fds) {
        checkPair(rp, fds, new BitSet(fds.size()), false);
    }

    private static void checkPair(RelayPair rp, List<Fd> fds, BitSet used, boolean preCopy) {
        if (!rp.getUpdate()) { // an update's sockets are the pre-copied pair's
            checkIndex(rp.getFdA(), fds, used);
            checkIndex(rp.getFdB(), fds, used);
        }
        if (rp.getDirectionsCount() != 2) {
            throw new IllegalArgumentException("a relay pair needs 2 directions, has " + rp.getDirectionsCount());
        }
        for (int i = 0; i < 2; i++) {
            RelayDirection d = rp.getDirections(i);
            if (d.getRead() < 0 || d.getWritten() < 0) { // uint64 counts past 2^63: no relay moved that much
                throw new IllegalArgumentException("a direction counts " + Long.toUnsignedString(d.getRead())
                        + " bytes read, " + Long.toUnsignedString(d.getWritten()) + " written");
            }
            if (d.getRead() < d.getWritten()) {
                throw new IllegalArgumentException("a direction wrote " + d.getWritten() + " of " + d.getRead()
                        + " bytes read");
            }
            if (d.getHasPipe()) {
                if (preCopy && !d.getPipePinned()) {
                    throw new IllegalArgumentException("a pre-copied pair carries no pipe but a pinned one");
                }
                checkIndex(d.getPipeR(), fds, used);
                checkIndex(d.getPipeW(), fds, used);
            } else if (d.getRead() != d.getWritten() && !preCopy && !rp.getUpdate()) {
                throw new IllegalArgumentException((d.getRead() - d.getWritten())
                        + " bytes in flight but no pipe holds them");
            }
        }
    }

    /** {@code index} is a uint32 field: read unsigned (a Java int of 2^31 or more is negative). */
    private static void checkIndex(int index, List<Fd> fds, BitSet used) {
        long i = Integer.toUnsignedLong(index);
        if (i >= fds.size() || !fds.get((int) i).isOpen()) {
            throw new IllegalArgumentException("fd index " + i + " is out of range (" + fds.size() + " fds)");
        }
        if (used.get((int) i)) {
            throw new IllegalArgumentException("fd index " + i + " is used twice");
        }
        used.set((int) i);
    }
}
