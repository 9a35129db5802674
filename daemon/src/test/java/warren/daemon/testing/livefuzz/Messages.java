package warren.daemon.testing.livefuzz;

import com.google.protobuf.ByteString;
import com.google.protobuf.InvalidProtocolBufferException;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import warren.control.v1.Cancel;
import warren.control.v1.Downgrade;
import warren.control.v1.Egress;
import warren.control.v1.Error;
import warren.control.v1.FiveTuple;
import warren.control.v1.Limits;
import warren.control.v1.Request;
import warren.control.v1.Restart;
import warren.control.v1.Splice;
import warren.control.v1.Spilled;
import warren.control.v1.Trace;
import warren.control.v1.Upgrade;
import warren.fdpass.Fd;
import warren.fdpass.Memfd;
import warren.fdpass.libc.Native;

/**
 * The messages of the live fuzzer: a valid request of a random kind with fds attached, then one
 * mutation. Message {@code i} of a run is a function of (seed, i) alone ({@link #random}), so a
 * failing message is made again from its seed and number.
 *
 * <p>Some mutations have one right answer, which {@link Message#expected} records and the fuzzer
 * checks (the codec's order of checks: parse, size, metadata, spill, fd references, body):
 * <pre>
 * FD_PAST_END, FD_MISSING, SPILL_BAD_INDEX   BAD_FD_INDEX
 * FD_DUPLICATE                               DUPLICATE_FD
 * FD_EXTRA                                   UNREFERENCED_FD
 * SPILL_UNSEALED, SPILL_PARTLY_SEALED,
 *   SPILL_NOT_MEMFD                          UNSEALED_MEMFD
 * SPILL_TOO_LARGE, METADATA_TOO_LARGE        INVALID_ARGUMENT
 * SPILL_GARBAGE, SPILL_TWICE                 MALFORMED
 * </pre>
 * The others (bit flips, truncations, wrong lengths, garbage, oversized inline, empty) are held
 * only to the rules every answer must keep (one final answer per request id in flight, fds
 * closed, the daemon serving).
 *
 * <p>A message that would parse as a Restart without a command is changed into a List: from root
 * (always an admin) it is a real upgrade in place, which the upgrade tests cover; a Restart with a
 * command is sent (upgrade.allow_command is off: refused).
 */
public final class Messages {
    public enum Mutation {
        NONE, SPILL_SEALED, SPILL_UNSEALED, SPILL_PARTLY_SEALED, SPILL_NOT_MEMFD, SPILL_TOO_LARGE, SPILL_GARBAGE,
        SPILL_TWICE, SPILL_BAD_INDEX, SPILL_LENGTH_WRONG, BIT_FLIPS, TRUNCATE, WRONG_LENGTH, FD_PAST_END,
        FD_DUPLICATE, FD_MISSING, FD_EXTRA, METADATA_TOO_LARGE, INLINE_TOO_LARGE, GARBAGE, EMPTY, MANY_FDS
    }

    /** What a daemon's requests need to be accepted sometimes (Fish: its soft-unicast addresses). */
    public record Target(List<byte[]> softIps) {
        public static final Target NONE = new Target(List.of());
    }

    /**
     * One message: its bytes, the fds to attach (in order; sent then closed by the sender), the peers
     * of pairs (kept or closed by the caller), the id the daemon will read (-1: none, the answer
     * has id 0), the one right answer if there is one, and the mutation.
     */
    public static final class Message {
        public final long number;
        public byte[] bytes;
        public final List<Fd> fds = new ArrayList<>();
        public final List<Fd> peers = new ArrayList<>();
        public final List<FdZoo.Kind> kinds = new ArrayList<>();
        /** The request id the daemon reads, when {@link #idKind} is READ. */
        public long id;
        public IdKind idKind = IdKind.NONE;
        /** The daemon answers it at once: a body that is no task (or the codec refuses it first). */
        public boolean prompt = true;
        public Error.Code expected;
        public Mutation mutation = Mutation.NONE;
        public Request.BodyCase body = Request.BodyCase.BODY_NOT_SET;
        /** Drop the connection right after this message (its answer never read). */
        public boolean dropAfter;
        /** Keep the peers of its pairs open until the end of the run (else closed once sent): long tasks. */
        public boolean keepPeers;

        Message(long number) {
            this.number = number;
        }

        /** Closes the sender's copies of the attached fds (the peers are the caller's). */
        public void closeSent() {
            Fd.closeAll(fds);
        }

        @Override
        public String toString() {
            return "message " + number + " (" + body + ", " + mutation + ", id " + id + ", fds " + kinds + ")";
        }
    }

    /** What this side knows of the id the daemon will answer with. */
    public enum IdKind {
        /** {@link Message#id} (any uint64, so also a negative long). */
        READ,
        /** None: the daemon cannot read the message (answered with id 0). */
        NONE,
        /** Unknown here: a mutation made it a spill of some other fd, whose content decides. */
        WILD
    }

    private static final int INLINE_LIMIT = 64 << 10;
    private static final int MAX_REQUEST_BYTES = 1 << 20;   // control.max_request_bytes default
    private static final int MAX_METADATA_BYTES = 64 << 10; // control.max_metadata_bytes default

    /** Fds per MANY_FDS message: SCM_MAX_FD when this process may open plenty, else fewer. */
    private static final int MANY = manyFds();

    private final FdZoo zoo;
    private final Target target;
    private final TaskNumbers tasks;
    /** Connections to the daemon's own control socket sent in a request's fd field (each may hold one task). */
    private final java.util.concurrent.atomic.AtomicLong selfConnections = new java.util.concurrent.atomic.AtomicLong();

    public Messages(FdZoo zoo, Target target, TaskNumbers tasks) {
        this.zoo = zoo;
        this.target = target;
        this.tasks = tasks;
    }

    /** The random source of message {@code number} of the run with {@code seed}. */
    public static SplittableRandom random(long seed, long number) {
        return new SplittableRandom(seed * 0x9E3779B97F4A7C15L + number * 0xBF58476D1CE4E5B9L + 0x94D049BB133111EBL);
    }

    /** Message {@code number}; {@code id} is the request id it carries before any mutation. */
    public Message make(long seed, long number, long id) throws Exception {
        SplittableRandom rnd = random(seed, number);
        Message m = new Message(number);
        try {
            build(rnd, m, id);
            return m;
        } catch (Exception e) {
            m.closeSent();
            Fd.closeAll(m.peers);
            throw e;
        }
    }

    private void build(SplittableRandom rnd, Message m, long id) throws Exception {
        Request.Builder req = Request.newBuilder().setId(id);
        if (rnd.nextInt(4) == 0) {
            byte[] meta = new byte[rnd.nextInt(64)];
            rnd.nextBytes(meta);
            req.setMetadata(ByteString.copyFrom(meta));
        }
        int fdFields = body(rnd, req, m);
        Mutation mu = pickMutation(rnd, fdFields);
        m.mutation = mu;
        m.dropAfter = rnd.nextInt(50) == 0;
        m.keepPeers = rnd.nextInt(8) == 0;
        if (mu == Mutation.MANY_FDS) {
            int n = MANY / 2 + rnd.nextInt(MANY - MANY / 2 + 1);
            while (m.fds.size() < n) {
                attach(m, rnd.nextBoolean() ? FdZoo.Kind.EVENTFD : FdZoo.Kind.DEV_NULL);
            }
        }
        if (mu == Mutation.METADATA_TOO_LARGE) {
            req.setMetadata(ByteString.copyFrom(new byte[MAX_METADATA_BYTES + 1 + rnd.nextInt(1024)]));
        }
        Request valid = noUpgradeInPlace(req.build());
        m.body = valid.getBodyCase();
        byte[] bytes = valid.toByteArray();
        switch (mu) {
            case NONE:
                break;
            case MANY_FDS:
                m.expected = Error.Code.UNREFERENCED_FD;
                break;
            case FD_PAST_END: {
                Request.Builder b = valid.toBuilder();
                setFdField(b, rnd.nextInt(fdFields), m.fds.size() + rnd.nextInt(3));
                bytes = b.build().toByteArray();
                m.expected = Error.Code.BAD_FD_INDEX;
                break;
            }
            case FD_DUPLICATE: {
                Request.Builder b = valid.toBuilder();
                setFdField(b, 1, 0); // the second field names the first's fd (the attached fd 1 is then unnamed: dup is found first)
                bytes = b.build().toByteArray();
                m.expected = Error.Code.DUPLICATE_FD;
                break;
            }
            case FD_MISSING: {
                m.fds.remove(m.fds.size() - 1).close();
                m.expected = Error.Code.BAD_FD_INDEX;
                break;
            }
            case FD_EXTRA:
                attach(m, FdZoo.any(rnd));
                m.expected = Error.Code.UNREFERENCED_FD;
                break;
            case METADATA_TOO_LARGE:
                spill(rnd, m, valid, bytes, Mutation.SPILL_SEALED, Error.Code.INVALID_ARGUMENT);
                return;
            case BIT_FLIPS:
                for (int k = 1 + rnd.nextInt(8); k > 0; k--) {
                    int p = rnd.nextInt(bytes.length);
                    bytes[p] ^= (byte) (1 << rnd.nextInt(8));
                }
                break;
            case TRUNCATE:
                bytes = java.util.Arrays.copyOf(bytes, rnd.nextInt(bytes.length) + (bytes.length > 1 ? 0 : 1));
                break;
            case WRONG_LENGTH:
                bytes = wrongLength(rnd, bytes);
                break;
            case INLINE_TOO_LARGE: {
                Request big = valid.toBuilder().setMetadata(ByteString.copyFrom(new byte[INLINE_LIMIT + rnd.nextInt(32 << 10)]))
                        .build();
                bytes = big.toByteArray();
                m.idKind = IdKind.NONE; // cut by MSG_TRUNC: answered TRUNCATED with id 0
                m.bytes = bytes;
                return;
            }
            case GARBAGE:
                bytes = new byte[1 + rnd.nextInt(rnd.nextBoolean() ? 32 : 4096)];
                rnd.nextBytes(bytes);
                break;
            case EMPTY:
                bytes = new byte[0];
                break;
            default:
                spill(rnd, m, valid, bytes, mu, null);
                return;
        }
        finish(m, bytes);
    }

    /** Records what the daemon will read: the id (or none), and Restart turned into List. */
    private static void finish(Message m, byte[] bytes) {
        m.bytes = bytes;
        if (bytes.length == 0) {
            m.idKind = IdKind.NONE;
            return;
        }
        try {
            Request r = Request.parseFrom(bytes);
            if (isUpgradeInPlace(r)) {
                r = r.toBuilder().setList(warren.control.v1.List.getDefaultInstance()).build();
                m.bytes = r.toByteArray();
            }
            m.id = r.getId();
            m.idKind = r.getBodyCase() == Request.BodyCase.SPILLED ? IdKind.WILD : IdKind.READ;
            m.prompt = m.expected != null || !isTask(r.getBodyCase());
        } catch (InvalidProtocolBufferException e) {
            m.idKind = IdKind.NONE;
        }
    }

    private Request noUpgradeInPlace(Request r) {
        return isUpgradeInPlace(r) ? r.toBuilder().setList(warren.control.v1.List.getDefaultInstance()).build() : r;
    }

    private static boolean isUpgradeInPlace(Request r) {
        return r.getBodyCase() == Request.BodyCase.RESTART && r.getRestart().getCommandCount() == 0;
    }

    /** The envelope in a memfd, sealed or not as the mutation says; returns nothing (fills {@code m}). */
    private void spill(SplittableRandom rnd, Message m, Request valid, byte[] inner, Mutation mu, Error.Code expected)
            throws Exception {
        byte[] content = inner;
        Error.Code want = expected;
        switch (mu) {
            case SPILL_TOO_LARGE:
                content = valid.toBuilder().setMetadata(ByteString.EMPTY).build().toByteArray();
                content = java.util.Arrays.copyOf(content, MAX_REQUEST_BYTES + 1 + rnd.nextInt(4096)); // zeros: the size decides first
                want = Error.Code.INVALID_ARGUMENT;
                break;
            case SPILL_GARBAGE:
                content = new byte[1 + rnd.nextInt(512)];
                rnd.nextBytes(content);
                content[0] = 0x07; // field 0, wire type 7: never parses
                want = Error.Code.MALFORMED;
                break;
            case SPILL_TWICE:
                content = Request.newBuilder().setId(valid.getId()).setSpilled(Spilled.newBuilder().setFdMemfd(0)
                        .setLength(8)).build().toByteArray();
                want = Error.Code.MALFORMED;
                break;
            case SPILL_UNSEALED:
            case SPILL_PARTLY_SEALED:
            case SPILL_NOT_MEMFD:
                want = Error.Code.UNSEALED_MEMFD;
                break;
            case SPILL_BAD_INDEX:
                want = Error.Code.BAD_FD_INDEX;
                break;
            default:
                break;
        }
        Fd memfd;
        if (mu == Mutation.SPILL_NOT_MEMFD) {
            FdZoo.Made made = zoo.make(rnd.nextBoolean() ? FdZoo.Kind.PIPE_READ : FdZoo.Kind.DEV_NULL);
            memfd = made.fd();
            if (made.peer() != null) {
                made.peer().close();
            }
        } else if (mu == Mutation.SPILL_UNSEALED) {
            memfd = Memfd.createUnsealed("fuzz-envelope", content);
        } else if (mu == Mutation.SPILL_PARTLY_SEALED) {
            memfd = Memfd.createUnsealed("fuzz-envelope", content);
            int[] partial = {Native.F_SEAL_WRITE | Native.F_SEAL_GROW | Native.F_SEAL_SHRINK,
                Native.F_SEAL_SEAL | Native.F_SEAL_WRITE, Native.F_SEAL_GROW};
            Native.fcntl(memfd.get(), Native.F_ADD_SEALS, partial[rnd.nextInt(partial.length)]);
        } else {
            memfd = Memfd.createSealed("fuzz-envelope", content);
        }
        int index = m.fds.size();
        m.fds.add(memfd);
        m.kinds.add(FdZoo.Kind.MEMFD_SEALED);
        long length = mu == Mutation.SPILL_LENGTH_WRONG ? rnd.nextLong() : content.length;
        int named = mu == Mutation.SPILL_BAD_INDEX ? index + 1 + rnd.nextInt(4) : index;
        Request outer = Request.newBuilder().setId(valid.getId()).setMetadata(ByteString.copyFrom(new byte[rnd.nextInt(3)]))
                .setSpilled(Spilled.newBuilder().setFdMemfd(named).setLength(length)).build();
        m.bytes = outer.toByteArray();
        m.expected = want;
        // the id the daemon answers with: the inner's once it has read a good spill, else the outer's (the same here)
        m.id = valid.getId();
        m.idKind = IdKind.READ;
        m.prompt = want != null || !isTask(valid.getBodyCase());
    }

    private static boolean isTask(Request.BodyCase body) {
        switch (body) {
            case SPLICE:
            case UPGRADE:
            case DOWNGRADE:
            case EGRESS:
            case TRACE:
                return true;
            default:
                return false;
        }
    }

    private static Mutation pickMutation(SplittableRandom rnd, int fdFields) {
        Mutation[] all = Mutation.values();
        while (true) {
            Mutation mu = rnd.nextInt(4) == 0 ? Mutation.NONE : all[rnd.nextInt(all.length)];
            if (mu == Mutation.MANY_FDS && rnd.nextInt(4) != 0) {
                continue; // 253 fds per message: now and then
            }
            if ((mu == Mutation.FD_PAST_END || mu == Mutation.FD_MISSING) && fdFields == 0) {
                continue;
            }
            if (mu == Mutation.FD_DUPLICATE && fdFields < 2) {
                continue;
            }
            return mu;
        }
    }

    /**
     * A valid body of a random kind, its fds attached in field order; returns its number of fd
     * fields. Half the time the fds are of the kind the request wants (so some become real tasks),
     * else of any kind.
     */
    private int body(SplittableRandom rnd, Request.Builder req, Message m) throws Exception {
        boolean fitting = rnd.nextBoolean();
        switch (rnd.nextInt(11)) {
            case 0:
            case 1: {
                FdZoo.Kind a = fitting ? FdZoo.streamKind(rnd) : FdZoo.any(rnd);
                FdZoo.Kind b = fitting ? FdZoo.streamKind(rnd) : FdZoo.any(rnd);
                Splice.Builder s = Splice.newBuilder().setFdA(0).setFdB(1);
                if (rnd.nextInt(3) == 0) {
                    s.setLimits(Limits.newBuilder().setIdleTimeoutMs(rnd.nextInt(3) == 0 ? rnd.nextLong() : rnd.nextInt(5000))
                            .setLifetimeMs(rnd.nextInt(3) == 0 ? rnd.nextLong() : rnd.nextInt(5000))
                            .setByteLimit(rnd.nextInt(3) == 0 ? rnd.nextLong() : rnd.nextInt(100_000)));
                }
                req.setSplice(s);
                if (rnd.nextInt(20) == 0) {
                    bothEnds(m, rnd.nextBoolean() ? FdZoo.Kind.UNIX_STREAM : FdZoo.Kind.TCP4_CONNECTED); // each other's peer
                } else {
                    attach(m, a);
                    attach(m, b);
                }
                return 2;
            }
            case 2: {
                req.setUpgrade(Upgrade.newBuilder().setFdFlow(0).setMtu(rnd.nextInt(3) == 0 ? rnd.nextInt() : 0)
                        .setVnetHdr(rnd.nextInt(4) == 0));
                attachWithPackets(rnd, m, fitting ? FdZoo.packetKind(rnd) : FdZoo.any(rnd));
                return 1;
            }
            case 3: {
                req.setDowngrade(Downgrade.newBuilder().setFdSocket(0).setFdFlow(1).setTuple(tuple(rnd)));
                attach(m, fitting ? FdZoo.Kind.TCP4_CONNECTED : FdZoo.any(rnd));
                attachWithPackets(rnd, m, fitting ? FdZoo.packetKind(rnd) : FdZoo.any(rnd));
                return 2;
            }
            case 4: {
                Egress.Builder e = Egress.newBuilder().setFdPackets(0).setTenant("t" + rnd.nextInt(1000))
                        .setVnetHdr(rnd.nextInt(4) == 0);
                if (!target.softIps().isEmpty() && rnd.nextInt(4) != 0) {
                    e.setSoftUnicastIp(ByteString.copyFrom(target.softIps().get(rnd.nextInt(target.softIps().size()))));
                } else {
                    e.setSoftUnicastIp(ByteString.copyFrom(randomBytes(rnd, rnd.nextBoolean() ? 4 : rnd.nextInt(20))));
                }
                int first = 1024 + rnd.nextInt(60_000);
                e.setPortFirst(rnd.nextInt(10) == 0 ? rnd.nextInt() : first)
                        .setPortLast(rnd.nextInt(10) == 0 ? rnd.nextInt() : Math.min(65535, first + rnd.nextInt(200)));
                req.setEgress(e);
                attachWithPackets(rnd, m, fitting ? FdZoo.packetKind(rnd) : FdZoo.any(rnd));
                return 1;
            }
            case 5: {
                Cancel.Builder c = Cancel.newBuilder();
                if (rnd.nextBoolean()) {
                    c.setTask(rnd.nextInt(4) == 0 ? rnd.nextLong() : tasks.pick(rnd));
                } else {
                    c.setTargetId(rnd.nextInt(4) == 0 ? rnd.nextLong() : Math.max(0, req.getId() - 1 - rnd.nextInt(8)));
                }
                req.setCancel(c);
                return 0;
            }
            case 6:
                req.setList(warren.control.v1.List.getDefaultInstance());
                return 0;
            case 7:
                req.setStatus(warren.control.v1.Status.getDefaultInstance());
                return 0;
            case 8:
                req.setMetrics(warren.control.v1.Metrics.getDefaultInstance());
                return 0;
            case 9:
                req.setTrace(Trace.newBuilder().setTask(rnd.nextInt(4) == 0 ? rnd.nextLong() : tasks.pick(rnd))
                        .setMaxPackets(rnd.nextInt(3) == 0 ? rnd.nextInt() : rnd.nextInt(10))
                        .setSeconds(rnd.nextInt(3) == 0 ? rnd.nextInt() : rnd.nextInt(3))
                        .setSnaplen(rnd.nextInt(3) == 0 ? rnd.nextInt() : rnd.nextInt(200)));
                return 0;
            default:
                // with a command: refused (upgrade.allow_command is off), never run
                req.setRestart(Restart.newBuilder().addCommand(rnd.nextBoolean() ? "/bin/false" : "")
                        .setTimeoutMs(rnd.nextInt(3) == 0 ? rnd.nextInt() : 0));
                return 0;
        }
    }

    /** How many of the daemon's own control connections went out in fd fields. */
    public long selfConnections() {
        return selfConnections.get();
    }

    private static int manyFds() {
        try {
            return Native.getrlimit(Native.RLIMIT_NOFILE)[0] >= 8192 ? Native.SCM_MAX_FD : 64;
        } catch (warren.fdpass.libc.NativeIoException e) {
            return 64;
        }
    }

    private void attach(Message m, FdZoo.Kind kind) throws Exception {
        FdZoo.Made made = zoo.make(kind);
        if (made.kind() == FdZoo.Kind.DAEMON_CONTROL) {
            selfConnections.incrementAndGet();
        }
        m.fds.add(made.fd());
        m.kinds.add(kind);
        if (made.peer() != null) {
            m.peers.add(made.peer());
        }
    }

    /** A packet socket whose peer has, now and then, a few packets queued for the daemon to read. */
    private void attachWithPackets(SplittableRandom rnd, Message m, FdZoo.Kind kind) throws Exception {
        attach(m, kind);
        if ((kind == FdZoo.Kind.UNIX_SEQPACKET || kind == FdZoo.Kind.UNIX_DGRAM) && rnd.nextInt(3) == 0) {
            Fd peer = m.peers.get(m.peers.size() - 1);
            jnr.ffi.Pointer p = Native.allocate(1500);
            for (int k = 1 + rnd.nextInt(3); k > 0; k--) {
                byte[] pkt = Packets.random(rnd);
                p.put(0, pkt, 0, pkt.length);
                Native.send(peer.get(), p, pkt.length, Native.MSG_DONTWAIT | Native.MSG_NOSIGNAL);
            }
        }
    }

    /** Both ends of one pair, as a Splice's a and b. */
    private void bothEnds(Message m, FdZoo.Kind kind) throws Exception {
        FdZoo.Made made = zoo.make(kind);
        m.fds.add(made.fd());
        m.fds.add(made.peer());
        m.kinds.add(kind);
        m.kinds.add(kind);
    }

    private static void setFdField(Request.Builder b, int field, int value) {
        switch (b.getBodyCase()) {
            case SPLICE:
                if (field == 0) {
                    b.getSpliceBuilder().setFdA(value);
                } else {
                    b.getSpliceBuilder().setFdB(value);
                }
                break;
            case DOWNGRADE:
                if (field == 0) {
                    b.getDowngradeBuilder().setFdSocket(value);
                } else {
                    b.getDowngradeBuilder().setFdFlow(value);
                }
                break;
            case UPGRADE: b.getUpgradeBuilder().setFdFlow(value); break;
            case EGRESS: b.getEgressBuilder().setFdPackets(value); break;
            default: throw new IllegalStateException("no fd field in " + b.getBodyCase());
        }
    }

    /**
     * A length of a length-delimited field changed (the outer body's or the metadata's, or one
     * inside the body): one less, one more, zero or huge, in place (the varint re-encoded).
     */
    static byte[] wrongLength(SplittableRandom rnd, byte[] bytes) {
        List<int[]> lengths = new ArrayList<>(); // {offset of the varint, its size, its value}
        collectLengths(bytes, 0, bytes.length, lengths, 0);
        if (lengths.isEmpty()) {
            return bytes;
        }
        int[] l = lengths.get(rnd.nextInt(lengths.size()));
        long[] choices = {l[2] - 1L, l[2] + 1L, 0, l[2] + 1 + rnd.nextInt(1 << 20), 0xFFFFFFFFL, Long.MAX_VALUE};
        long v = Math.max(0, choices[rnd.nextInt(choices.length)]);
        byte[] varint = varint(v);
        byte[] out = new byte[bytes.length - l[1] + varint.length];
        System.arraycopy(bytes, 0, out, 0, l[0]);
        System.arraycopy(varint, 0, out, l[0], varint.length);
        System.arraycopy(bytes, l[0] + l[1], out, l[0] + varint.length, bytes.length - l[0] - l[1]);
        return out;
    }

    /** Walks protobuf fields in [from, to): records every length-delimited field's length, recursing (depth 3). */
    private static void collectLengths(byte[] b, int from, int to, List<int[]> out, int depth) {
        int p = from;
        while (p < to) {
            long[] tag = readVarint(b, p, to);
            if (tag == null) {
                return;
            }
            p = (int) tag[1];
            int wire = (int) (tag[0] & 7);
            if (wire == 0) {
                long[] v = readVarint(b, p, to);
                if (v == null) {
                    return;
                }
                p = (int) v[1];
            } else if (wire == 1) {
                p += 8;
            } else if (wire == 5) {
                p += 4;
            } else if (wire == 2) {
                long[] len = readVarint(b, p, to);
                // a length is a varint of up to 10 bytes: inside random bytes (metadata) read as
                // fields it can be negative as a long, which the bound alone let through
                if (len == null || len[0] < 0 || len[0] > to - len[1]) {
                    return;
                }
                out.add(new int[] {p, (int) len[1] - p, (int) len[0]});
                int start = (int) len[1];
                if (depth < 3) {
                    collectLengths(b, start, start + (int) len[0], out, depth + 1);
                }
                p = start + (int) len[0];
            } else {
                return;
            }
        }
    }

    /** {value, next offset}, or null if the varint runs past {@code to} or is over 10 bytes. */
    private static long[] readVarint(byte[] b, int p, int to) {
        long v = 0;
        for (int shift = 0; shift < 70 && p < to; shift += 7) {
            int x = b[p++] & 0xFF;
            v |= (long) (x & 0x7F) << shift;
            if ((x & 0x80) == 0) {
                return new long[] {v, p};
            }
        }
        return null;
    }

    private static byte[] varint(long v) {
        byte[] out = new byte[10];
        int n = 0;
        while ((v & ~0x7FL) != 0) {
            out[n++] = (byte) ((v & 0x7F) | 0x80);
            v >>>= 7;
        }
        out[n++] = (byte) v;
        return java.util.Arrays.copyOf(out, n);
    }

    private static FiveTuple tuple(SplittableRandom rnd) {
        int len = rnd.nextBoolean() ? 4 : 16;
        return FiveTuple.newBuilder().setProtocol(rnd.nextBoolean() ? 6 : rnd.nextInt(256))
                .setSrcIp(ByteString.copyFrom(randomBytes(rnd, rnd.nextInt(8) == 0 ? rnd.nextInt(20) : len)))
                .setSrcPort(rnd.nextInt(70_000)).setDstIp(ByteString.copyFrom(randomBytes(rnd, len)))
                .setDstPort(rnd.nextInt(70_000)).build();
    }

    static byte[] randomBytes(SplittableRandom rnd, int n) {
        byte[] b = new byte[n];
        rnd.nextBytes(b);
        return b;
    }
}
