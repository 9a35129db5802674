package warren.daemon.testing.livefuzz;

import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import warren.control.v1.Cancel;
import warren.control.v1.Request;
import warren.control.v1.Response;
import warren.control.v1.StatusReport;
import warren.control.v1.TaskInfo;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.fdpass.Fd;

/**
 * The live-daemon fuzzer (docs/testing.md, "Live fuzzing"): {@link Settings#messages} mutated
 * control messages ({@link Messages}) with fds of every kind ({@link FdZoo}) sent to one running
 * daemon from {@link Settings#connections} concurrent connections, while
 * <ul>
 *   <li>every {@link Settings#probeEvery} messages a Status on a connection of its own must be
 *       answered within {@link Settings#probeBoundMs};</li>
 *   <li>every answer keeps the rules {@link Connection} checks;</li>
 *   <li>at the end, with every peer the fuzzer kept closed: every request still due on an open
 *       connection is answered (tasks end when their peers go; what cannot end by itself is
 *       cancelled and counted), then with every connection closed the daemon's Status shows no
 *       task and no client but the probe, and its /proc/PID/fd count comes back to the baseline
 *       taken after a warm-up round (the same run on a smaller scale, so lazily opened fds are
 *       in the baseline).</li>
 * </ul>
 * Message {@code i} is made from (seed, i) alone; the seed is printed first. One connection per
 * thread; a message drops its connection now and then (its requests' answers then go nowhere, the
 * daemon must still finish and account them).
 */
public final class LiveFuzzer {
    /** How a run goes. */
    public record Settings(long messages, long seed, int connections, int probeEvery, long probeBoundMs, int heldMax) {
        /** From the environment (./warren fuzz live): WARREN_LIVE_FUZZ_MESSAGES and _SEED, else {@code messages} and a fresh seed. */
        public static Settings fromEnvironment(long messages) {
            String n = System.getenv("WARREN_LIVE_FUZZ_MESSAGES");
            String s = System.getenv("WARREN_LIVE_FUZZ_SEED");
            long seed = s == null || s.isBlank() ? new java.security.SecureRandom().nextLong() & Long.MAX_VALUE
                    : Long.parseLong(s.strip());
            return new Settings(n == null || n.isBlank() ? messages : Long.parseLong(n.strip()), seed, 4, 500, 5000, 256);
        }
    }

    /** One daemon under the fuzzer: its name, control socket, pid, and what its requests need. */
    public record Daemon(String name, Path control, long pid, Messages.Target target) {}

    /** What a run saw. */
    public record Result(String daemon, long seed, long messages, double seconds, int fdsBefore, int fdsBaseline,
            int fdsAfter, long answers, long tasksAccepted, long probes, long probeMaxMs, long cancelledAtEnd,
            List<String> cancelledKinds, Findings findings) {
        public double perSecond() {
            return messages / seconds;
        }

        @Override
        public String toString() {
            return String.format("live fuzz %s: seed %d, %,d messages in %.1f s (%,.0f/s), %,d answers, %,d tasks accepted,"
                    + " %,d Status probes (slowest %d ms), %d tasks cancelled at the end %s; /proc/PID/fd: %d at start,"
                    + " baseline %d, %d at the end%n%s", daemon, seed, messages, seconds, perSecond(), answers, tasksAccepted,
                    probes, probeMaxMs, cancelledAtEnd, cancelledKinds, fdsBefore, fdsBaseline, fdsAfter, findings);
        }
    }

    private static final long END_GRACE_MS = 20_000;
    private static final long WARMUP_MAX = 500;
    /** Requests a connection may have unanswered before it waits for the daemon (up to 2 s). */
    private static final int WINDOW = 16;

    private final Daemon daemon;
    private final Settings settings;
    private final Findings findings = new Findings();
    private final TaskNumbers tasks = new TaskNumbers();
    private final FdZoo zoo;
    private final Messages messages;
    private final ArrayDeque<Fd> held = new ArrayDeque<>();
    private final AtomicLong sent = new AtomicLong();
    private long probes;
    private long probeMaxMs;
    private final AtomicLong answers = new AtomicLong();
    private final List<String> cancelledKinds = new ArrayList<>();
    private int idleClients = 1;
    private long selfCancelled;

    public LiveFuzzer(Daemon daemon, Settings settings) throws Exception {
        this.daemon = daemon;
        this.settings = settings;
        this.zoo = new FdZoo(daemon.control());
        this.messages = new Messages(zoo, daemon.target(), tasks);
    }

    /** A warm-up round, the baseline, the round of {@code settings.messages}, the end checks. */
    public Result run() throws Exception {
        System.out.println("live fuzz " + daemon.name() + ": seed " + settings.seed() + " (WARREN_LIVE_FUZZ_SEED="
                + settings.seed() + " repeats it), " + settings.messages() + " messages, " + settings.connections()
                + " connections, pid " + daemon.pid());
        System.out.flush();
        int before = fdCount(daemon.pid());
        try (ControlClient probe = ControlClient.connect(daemon.control())) {
            long warm = Math.min(WARMUP_MAX, Math.max(1, settings.messages() / 10));
            idleClients = quiet(probe).getClients(); // the probe and whoever else the test keeps connected
            round(probe, settings.seed() ^ 0x5DEECE66DL, warm, false);
            Map<String, Integer> baseline = fdTargets(daemon.pid());
            int base = total(baseline);
            sent.set(0);
            answers.set(0);
            findings.resetAnswers();
            long t0 = System.nanoTime();
            round(probe, settings.seed(), settings.messages(), true);
            double seconds = (System.nanoTime() - t0) / 1e9;
            int after = awaitFds(base, baseline);
            try {
                status(probe); // still serving
            } catch (Exception e) {
                findings.add("no Status answer after the run: " + e);
            }
            Result r = new Result(daemon.name(), settings.seed(), settings.messages(), seconds, before, base, after,
                    answers.get(), tasks.accepted(), probes, probeMaxMs, cancelledKinds.size(), cancelledKinds, findings);
            System.out.println(r);
            System.out.flush();
            return r;
        } finally {
            synchronized (held) {
                Fd.closeAll(held);
                held.clear();
            }
            zoo.close();
        }
    }

    /** {@code count} messages from {@code seed} over the connections, probing; then everything ended and accounted. */
    private void round(ControlClient probe, long seed, long count, boolean checkProbes) throws Exception {
        int threads = settings.connections();
        List<Connection> open = java.util.Collections.synchronizedList(new ArrayList<>());
        List<Thread> workers = new ArrayList<>();
        List<Throwable> failed = java.util.Collections.synchronizedList(new ArrayList<>());
        for (int w = 0; w < threads; w++) {
            int worker = w;
            Thread t = new Thread(() -> {
                try {
                    Connection last = work(seed, worker, threads, count);
                    if (last != null) {
                        open.add(last);
                    }
                } catch (Throwable e) {
                    failed.add(e);
                }
            }, "live-fuzz-" + w);
            t.start();
            workers.add(t);
        }
        long nextProbe = settings.probeEvery();
        for (Thread t : workers) {
            while (t.isAlive()) {
                if (sent.get() >= nextProbe) {
                    probeOnce(probe, checkProbes);
                    nextProbe += settings.probeEvery();
                } else {
                    t.join(2); // the workers' progress is what is awaited
                }
            }
        }
        if (!failed.isEmpty()) {
            for (Connection c : open) {
                c.close();
            }
            Throwable e = failed.get(0);
            StackTraceElement[] at = e.getStackTrace();
            // the cause in the message itself: a CI log that keeps only the summary line still says what failed
            throw new IllegalStateException("a fuzzing thread failed (the fuzzer's own error, not a finding): " + e
                    + (at.length > 0 ? " at " + at[0] : "") + (at.length > 1 ? " < " + at[1] : ""), e);
        }
        // every kept peer closed: their tasks see EOF or a gone peer and end, answering on open connections
        synchronized (held) {
            Fd.closeAll(held);
            held.clear();
        }
        settle(open, END_GRACE_MS);
        List<String> stillDue = new ArrayList<>();
        for (Connection c : open) {
            Map<Long, String> due = c.dueRequests();
            stillDue.addAll(due.values());
            if (!due.isEmpty()) {
                cancelDue(c, due);
            }
        }
        explainOrReport(stillDue, "requests unanswered " + (END_GRACE_MS / 1000) + " s after every kept peer closed");
        settle(open, END_GRACE_MS);
        for (Connection c : open) {
            c.dueRequests().forEach((id, what) -> findings.add("no final answer to request " + id + " after every peer"
                    + " closed and its Cancel: " + what));
            answers.addAndGet(c.answers);
            c.close();
        }
        awaitIdle(probe);
    }

    /** One thread's share of the messages (i = worker, worker + threads, ...); returns its open connection. */
    private Connection work(long seed, int worker, int threads, long count) throws Exception {
        Connection c = null;
        try {
            for (long i = worker; i < count; i += threads) {
                if (c == null || c.dead) {
                    if (c != null) {
                        answers.addAndGet(c.answers);
                        c.close();
                    }
                    c = new Connection(daemon.control(), findings, tasks);
                }
                Messages.Message m = messages.make(seed, i, i + 1);
                try {
                    c.send(m);
                } finally {
                    m.closeSent();
                    keepOrClose(m);
                }
                c.drain();
                sent.incrementAndGet();
                c.pace(m.dropAfter ? 0 : WINDOW, m.dropAfter ? 1000 : 2000);
                if (m.dropAfter) {
                    answers.addAndGet(c.answers);
                    c.close(); // with its requests due: their answers go nowhere
                    c = null;
                }
            }
            Connection last = c;
            c = null;
            return last;
        } finally {
            if (c != null) {
                c.close();
            }
        }
    }

    private void keepOrClose(Messages.Message m) {
        if (!m.keepPeers) {
            Fd.closeAll(m.peers);
            return;
        }
        synchronized (held) {
            for (Fd p : m.peers) {
                held.addLast(p);
                if (held.size() > settings.heldMax()) {
                    held.removeFirst().close();
                }
            }
        }
    }

    private void probeOnce(ControlClient probe, boolean check) {
        long t0 = System.nanoTime();
        try {
            status(probe);
        } catch (Exception e) {
            findings.add("Status not answered within " + settings.probeBoundMs() + " ms after " + sent.get()
                    + " messages: " + e);
            return;
        }
        long ms = (System.nanoTime() - t0) / 1_000_000;
        if (check) {
            probes++;
            probeMaxMs = Math.max(probeMaxMs, ms);
        }
    }

    private StatusReport status(ControlClient probe) throws Exception {
        try (Reply r = probe.call(Request.newBuilder().setStatus(warren.control.v1.Status.getDefaultInstance()), List.of())
                .get(settings.probeBoundMs(), TimeUnit.MILLISECONDS)) {
            if (r.response().getBodyCase() != Response.BodyCase.STATUS) {
                throw new IllegalStateException("Status answered " + Connection.shortly(r.response()));
            }
            return r.response().getStatus();
        }
    }

    /** Status once no task is active (the test's own requests before the run have ended), up to the grace. */
    private StatusReport quiet(ControlClient probe) throws Exception {
        long deadline = System.nanoTime() + END_GRACE_MS * 1_000_000L;
        StatusReport s = status(probe);
        while (s.getTasksActive() > 0 && System.nanoTime() < deadline) {
            Thread.sleep(20); // polled with a deadline: Status is the observable state
            s = status(probe);
        }
        return s;
    }

    /** Reads answers on every open connection until none is due or {@code ms} pass. */
    private static void settle(List<Connection> open, long ms) throws Exception {
        long deadline = System.nanoTime() + ms * 1_000_000L;
        while (System.nanoTime() < deadline) {
            int due = 0;
            for (Connection c : open) {
                c.await(open.size() == 1 ? 50 : 5);
                due += c.dead ? 0 : c.due();
            }
            if (due == 0) {
                return;
            }
        }
    }

    /**
     * Tasks (or their requests) that had to be cancelled at the end: a finding unless each can be a
     * task whose socket is a connection to the daemon's own control socket, which cannot see its
     * peer close (the peer is the daemon's, open while the task holds the other end): at most one
     * per such fd sent.
     */
    private void explainOrReport(List<String> left, String what) {
        if (left.isEmpty()) {
            return;
        }
        if (left.size() > messages.selfConnections() - selfCancelled) {
            findings.add(what + " (" + messages.selfConnections() + " connections to the daemon itself were sent): " + left);
        }
        selfCancelled += left.size();
    }

    /** Cancel{target_id} for each request still due: a task that cannot end by itself (e.g. its peer is the daemon). */
    private void cancelDue(Connection c, Map<Long, String> due) throws Exception {
        long id = Long.MAX_VALUE - 1_000_000;
        for (Map.Entry<Long, String> e : due.entrySet()) {
            Messages.Message m = new Messages.Message(-1);
            m.id = id++;
            m.idKind = Messages.IdKind.READ;
            m.bytes = Request.newBuilder().setId(m.id).setCancel(Cancel.newBuilder().setTargetId(e.getKey())).build()
                    .toByteArray();
            c.send(m);
            synchronized (cancelledKinds) {
                cancelledKinds.add(e.getValue());
            }
        }
    }

    /**
     * Waits until Status shows the clients of the start (the probe, the test's own) and no task; tasks that outlive every peer
     * and connection (none should) are listed as a finding and cancelled.
     */
    private void awaitIdle(ControlClient probe) throws Exception {
        long deadline = System.nanoTime() + END_GRACE_MS * 1_000_000L;
        StatusReport s = status(probe);
        while ((s.getTasksActive() > 0 || s.getClients() > idleClients) && System.nanoTime() < deadline) {
            Thread.sleep(20); // polled with a deadline: Status is the observable state
            s = status(probe);
        }
        if (s.getTasksActive() == 0 && s.getClients() <= idleClients) {
            return;
        }
        try (Reply r = probe.call(Request.newBuilder().setList(warren.control.v1.List.getDefaultInstance()), List.of())
                .get(settings.probeBoundMs(), TimeUnit.MILLISECONDS)) {
            List<String> left = new ArrayList<>();
            for (TaskInfo t : r.response().getListing().getTasksList()) {
                left.add("task " + t.getTask() + " " + t.getKind() + " " + t.getState() + " (connection " + t.getConnection()
                        + ", request " + t.getRequestId() + ", age " + t.getAgeMs() + " ms)");
                try (Reply c = probe.call(Request.newBuilder().setCancel(Cancel.newBuilder().setTask(t.getTask())), List.of())
                        .get(settings.probeBoundMs(), TimeUnit.MILLISECONDS)) {
                    synchronized (cancelledKinds) {
                        cancelledKinds.add(t.getKind() + " " + t.getState());
                    }
                }
            }
            explainOrReport(left, s.getTasksActive() + " tasks and " + (s.getClients() - idleClients) + " other clients "
                    + (END_GRACE_MS / 1000) + " s after every fuzzing connection and peer closed (cancelled)");
        }
        deadline = System.nanoTime() + END_GRACE_MS * 1_000_000L;
        while ((s.getTasksActive() > 0 || s.getClients() > idleClients) && System.nanoTime() < deadline) {
            Thread.sleep(20);
            s = status(probe);
        }
        if (s.getTasksActive() > 0 || s.getClients() > idleClients) {
            findings.add(s.getTasksActive() + " tasks and " + (s.getClients() - idleClients) + " other clients remain even after Cancel");
        }
    }

    /** Waits for the daemon's fd count to come back to {@code base}; reports the difference if it does not. */
    private int awaitFds(int base, Map<String, Integer> baseline) throws Exception {
        long deadline = System.nanoTime() + END_GRACE_MS * 1_000_000L;
        Map<String, Integer> now = fdTargets(daemon.pid());
        while (total(now) != base && System.nanoTime() < deadline) {
            Thread.sleep(50); // the fd table has no event to wait on; polled with a deadline
            now = fdTargets(daemon.pid());
        }
        if (total(now) != base) {
            Map<String, Integer> diff = new TreeMap<>();
            for (String k : union(baseline, now)) {
                int d = now.getOrDefault(k, 0) - baseline.getOrDefault(k, 0);
                if (d != 0) {
                    diff.put(k, d);
                }
            }
            findings.add("/proc/" + daemon.pid() + "/fd: " + total(now) + " fds after the run, " + base
                    + " at the baseline; by kind (after - baseline): " + diff);
        }
        return total(now);
    }

    private static java.util.Set<String> union(Map<String, Integer> a, Map<String, Integer> b) {
        java.util.Set<String> s = new java.util.TreeSet<>(a.keySet());
        s.addAll(b.keySet());
        return s;
    }

    private static int total(Map<String, Integer> m) {
        return m.values().stream().mapToInt(Integer::intValue).sum();
    }

    /** Every open fd of {@code pid}, by what it is ("socket", "pipe", "anon_inode:[eventfd]", a path). */
    public static Map<String, Integer> fdTargets(long pid) {
        Map<String, Integer> out = new TreeMap<>();
        String dir = "/proc/" + pid + "/fd";
        String[] names = new File(dir).list();
        if (names == null) {
            return out;
        }
        for (String n : names) {
            try {
                String t = Files.readSymbolicLink(Path.of(dir, n)).toString();
                if (t.startsWith("socket:")) {
                    t = "socket";
                } else if (t.startsWith("pipe:")) {
                    t = "pipe";
                }
                out.merge(t, 1, Integer::sum);
            } catch (IOException e) {
                // closed while listing
            }
        }
        return out;
    }

    public static int fdCount(long pid) {
        return total(fdTargets(pid));
    }
}
