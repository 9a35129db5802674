package warren.fish;

import java.util.List;
import java.util.Set;
import java.util.function.BiConsumer;
import java.util.function.LongFunction;
import java.util.function.ToLongFunction;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.daemon.Daemon;
import warren.daemon.config.Config;
import warren.daemon.config.ConfigException;
import warren.daemon.control.Call;
import warren.daemon.control.RequestHandler;
import warren.daemon.handoff.HandoffItem;
import warren.daemon.handoff.Handoffable;
import warren.daemon.task.Task;
import warren.fdpass.FdInfo;
import warren.fdpass.libc.Native;
import warren.fish.egress.Egress;
import warren.handoff.v1.FishState;

/**
 * Serves {@code Egress}: checks the packet socket and the identity, hands them to the engine.
 * Upgrade in place: the engine (TUN, clients, flows and their reservations) is the whole state;
 * a successor builds nothing of its own and adopts the predecessor's.
 */
public final class EgressHandler implements RequestHandler, Handoffable {
    private static final String ITEM = "fish.egress";
    private final Daemon daemon;
    private volatile Egress egress; // null in a successor until its pre-copy's first chunk or adopt (before its loops run)
    /**
     * Successor whose thread count differs from the predecessor's: what the pre-copy brought (fish0's
     * queues and the chunks, their fds not taken), adopted whole at the pause, when fish0's queues
     * may be grown or shrunk (not while the old process reads them). Null otherwise.
     */
    private PreCopied pre;

    /** The pre-copy's queues by index and its chunks, kept aside (see {@link #pre}). */
    private static final class PreCopied {
        final warren.fdpass.Fd[] queues;
        final List<FishState> states = new java.util.ArrayList<>();
        final List<List<warren.fdpass.Fd>> fds = new java.util.ArrayList<>();

        PreCopied(warren.fdpass.Fd[] queues) {
            this.queues = queues;
        }
    }

    public EgressHandler(Daemon d) throws Exception {
        this.daemon = d;
        d.metrics().probe(s -> {
            Egress e = egress;
            if (e != null) {
                e.sampleControl(s);
            }
        });
        for (int i = 0; i < d.loops().size(); i++) {
            int index = i;
            d.metrics().probe(d.loops().get(i), s -> { // each loop's clients, sampled on their loop
                Egress e = egress;
                if (e != null) {
                    e.sample(index, s);
                }
            });
        }
        if (!d.successor()) {
            egress = new Egress(loops(d), d.counters(), d.audit(), settings(d.config()));
            egress.clientSendBuffer(d.config().get(FishConfig.CLIENT_SNDBUF));
            if (d.fdStore()) {
                egress.enableFdStore(d.notifier());
            }
        }
    }

    private static warren.daemon.loop.EventLoop[] loops(Daemon d) {
        warren.daemon.loop.EventLoop[] l = new warren.daemon.loop.EventLoop[d.loops().size()];
        for (int i = 0; i < l.length; i++) {
            l[i] = d.loops().get(i);
        }
        return l;
    }

    private static Egress.Settings settings(Config c) throws ConfigException {
        if (c.get(FishConfig.NETNS).isBlank()) {
            throw new ConfigException("fish.netns is not set: name the egress network namespace Fish may change (e.g."
                    + " fish.netns = /run/netns/egress); Fish never changes the namespace it runs in");
        }
        return new Egress.Settings(c.get(FishConfig.NETNS), c.get(FishConfig.SOFT_UNICAST_PREFIXES),
                new Egress.Timeouts(c.get(FishConfig.TCP_TIMEOUT), c.get(FishConfig.TCP_CLOSE_TIMEOUT),
                        c.get(FishConfig.UDP_TIMEOUT), c.get(FishConfig.ICMP_TIMEOUT)), c.get(FishConfig.CLIENT_IDLE_TIMEOUT),
                c.get(FishConfig.TUN_OFFLOAD));
    }

    @Override
    public Set<Request.BodyCase> serves() {
        return Set.of(Request.BodyCase.EGRESS);
    }

    @Override
    public void handle(Call call) throws Exception {
        warren.control.v1.Egress e = call.request().getEgress();
        FdInfo info = FdInfo.of(call.peekFd(e.getFdPackets()));
        if (!info.isSocket() || info.domain() != Native.AF_UNIX
                || (info.type() != Native.SOCK_SEQPACKET && info.type() != Native.SOCK_DGRAM)) {
            call.fail(Error.Code.BAD_FD_TYPE, "fd_packets is " + info.describe()
                    + ", expected an AF_UNIX SOCK_SEQPACKET or SOCK_DGRAM socket (one packet per message)");
            return;
        }
        int len = e.getSoftUnicastIp().size();
        if (len != 4 && len != 16) {
            call.fail(Error.Code.INVALID_ARGUMENT, "soft_unicast_ip must be 4 or 16 bytes, got " + len);
            return;
        }
        egress.start(call, call.takeFd(e.getFdPackets()), e.getSoftUnicastIp().toByteArray(), e.getPortFirst(),
                e.getPortLast(), e.getTenant(), info.type() == Native.SOCK_DGRAM, e.getVnetHdr());
    }

    @Override
    public void close() {
        if (egress != null) {
            egress.close();
        }
    }

    // ---- upgrade in place

    @Override
    public int stateVersion() {
        return 1;
    }

    @Override
    public List<Integer> acceptsStateVersions() {
        return List.of(1);
    }

    // Each loop pauses and exports its own clients and its queue of fish0 (Handoffable's per-loop
    // steps); every loop's item is named ITEM, in loop order, and a successor places the clients of
    // all of them on its own loops, whatever their number, with fish0's queues grown or shrunk to it.

    @Override
    public void pauseLoop(int index) {
        egress.pause(index);
    }

    @Override
    public List<HandoffItem> exportLoop(int index, ToLongFunction<Call> callRef) {
        egress.pause(index);
        return egress.export(index, ITEM, callRef);
    }

    @Override
    public void resumeLoop(int index) {
        egress.resume(index);
    }

    // Pre-copy (docs/upgrade.md "Pre-copy"): each loop's lane sends its queue of fish0 once, then its
    // clients (socket duplicates, keys, flows) while it serves; exportLoop then sends the delta.

    @Override
    public List<HandoffItem> preCopyLoop(int index, ToLongFunction<Call> taskRef, int maxFds) throws Exception {
        return egress.preCopy(index, ITEM, taskRef, maxFds);
    }

    @Override
    public List<String> preCopyItems() {
        return List.of(ITEM);
    }

    @Override
    public void preCopyAbortedLoop(int index) {
        egress.forgetCopy(index);
    }

    /**
     * A pre-copy chunk, in the successor before its loops run. The first brings every queue of the
     * predecessor's fish0: with as many loops here, the engine is built on them now (paused) and
     * each chunk's clients are built into it ({@link Egress#preAdopt}); with another number, the
     * chunks are kept aside ({@link #pre}) for the pause. Everything is checked before anything is
     * taken.
     */
    @Override
    public void preAdopt(int stateVersion, List<HandoffItem> items) throws Exception {
        if (!acceptsStateVersions().contains(stateVersion)) {
            throw new IllegalArgumentException("state version " + stateVersion + " is not one of " + acceptsStateVersions());
        }
        List<FishState> states = new java.util.ArrayList<>();
        for (HandoffItem it : items) {
            if (!it.name().equals(ITEM)) {
                throw new IllegalArgumentException("unknown pre-copied item " + it.name());
            }
            FishState s = FishState.parseFrom(it.payload());
            if (!s.getPreCopy()) {
                throw new IllegalArgumentException("a pre-copied " + ITEM + " item without pre_copy");
            }
            warren.fish.egress.FishStateCodec.checkChunk(s, it.fds());
            states.add(s);
        }
        boolean first = egress == null && pre == null;
        warren.fdpass.Fd[] queues = null;
        for (int k = 0; k < states.size(); k++) {
            FishState s = states.get(k);
            if (!s.hasFdTun()) {
                continue;
            }
            if (!first) {
                throw new IllegalArgumentException("a queue of fish0 pre-copied after the first chunk");
            }
            if (queues == null) {
                queues = new warren.fdpass.Fd[s.getQueues()];
            }
            if (s.getQueues() != queues.length || queues[s.getQueueIndex()] != null) {
                throw new IllegalArgumentException("pre-copied queue " + s.getQueueIndex() + " of " + s.getQueues()
                        + ": twice, or of another number of queues");
            }
            queues[s.getQueueIndex()] = items.get(k).fds().get(s.getFdTun());
        }
        if (first) {
            if (queues == null || java.util.Arrays.asList(queues).contains(null)) {
                throw new IllegalArgumentException("the first pre-copy chunk lacks queues of fish0");
            }
            if (queues.length == daemon.loops().size()) {
                warren.fdpass.Fd[] taken = new warren.fdpass.Fd[queues.length];
                for (int i = 0; i < queues.length; i++) {
                    taken[i] = queues[i].transfer();
                }
                egress = Egress.adoptQueues(loops(daemon), daemon.counters(), daemon.audit(), settings(daemon.config()),
                        taken);
            } else {
                pre = new PreCopied(queues); // taken at the pause (until then the receiver closes them on failure)
            }
        }
        for (int i = 0; i < states.size(); i++) {
            if (pre != null) {
                pre.states.add(states.get(i));
                pre.fds.add(items.get(i).fds());
            } else {
                egress.preAdopt(states.get(i), items.get(i).fds());
            }
        }
    }

    @Override
    public void abandonLoop(int index) {
        egress.abandon(index);
    }

    /** Every loop at once, on the calling thread: for a daemon whose loops do not run (the warm-up's). */
    @Override
    public List<HandoffItem> pauseAndExport(ToLongFunction<Call> callRef) {
        List<HandoffItem> items = new java.util.ArrayList<>();
        for (int i = 0; i < daemon.loops().size(); i++) {
            items.addAll(exportLoop(i, callRef));
        }
        return items;
    }

    @Override
    public void resume() {
        for (int i = 0; i < daemon.loops().size(); i++) {
            egress.resume(i);
        }
    }

    @Override
    public void abandon() {
        if (egress != null && egress.copies() > 0 || pre != null) { // a successor's refused handoff: what it built goes
            discardPreCopy();
            return;
        }
        for (int i = 0; i < daemon.loops().size(); i++) {
            egress.abandon(i);
        }
    }

    /**
     * Successor, a failed handoff after a pre-copy: the pre-copied clients' duplicates and the
     * engine built on the pre-copied queues are closed (fds kept aside in {@link #pre} are the
     * receiver's to close). A real successor exits instead; tests call this.
     */
    public void discardPreCopy() {
        pre = null;
        Egress e = egress;
        egress = null;
        if (e != null) {
            e.discard();
        }
    }

    /** Its engine (tests). */
    public Egress egress() {
        return egress;
    }

    @Override
    public void adopt(int stateVersion, List<HandoffItem> items, LongFunction<Call> calls, BiConsumer<Call, Task> adoptTask)
            throws Exception {
        boolean recovered = items.size() == 1 && items.get(0).name().equals(warren.daemon.TaskStore.RECOVERED_ITEM);
        List<FishState> states = new java.util.ArrayList<>();
        List<List<warren.fdpass.Fd>> fds = new java.util.ArrayList<>();
        if (recovered) { // after a crash
            HandoffItem it = items.get(0);
            for (FishState s : Egress.fromFdStore(warren.handoff.v1.StoredTasks.parseFrom(it.payload()),
                    daemon.config().get(FishConfig.NETNS))) {
                states.add(s);
                fds.add(it.fds());
            }
        } else {
            if (egress != null || pre != null) { // after a pre-copy: the delta
                adoptDelta(items, calls, adoptTask);
                return;
            }
            for (HandoffItem it : items) {
                if (!it.name().equals(ITEM)) {
                    throw new IllegalArgumentException("expected items '" + ITEM + "', got "
                            + items.stream().map(HandoffItem::name).toList());
                }
                states.add(FishState.parseFrom(it.payload()));
                fds.add(it.fds());
            }
            if (states.isEmpty()) {
                throw new IllegalArgumentException("expected items '" + ITEM + "', got none");
            }
        }
        egress = Egress.adopt(loops(daemon), daemon.counters(), daemon.audit(), settings(daemon.config()), recovered,
                states, fds, calls, adoptTask);
        egress.clientSendBuffer(daemon.config().get(FishConfig.CLIENT_SNDBUF));
        if (daemon.fdStore()) {
            egress.enableFdStore(daemon.notifier());
        }
    }

    /** The pause's delta after a pre-copy (with another thread count, the kept pre-copy is adopted first). */
    private void adoptDelta(List<HandoffItem> items, LongFunction<Call> calls, BiConsumer<Call, Task> adoptTask)
            throws Exception {
        List<FishState> states = new java.util.ArrayList<>();
        List<List<warren.fdpass.Fd>> fds = new java.util.ArrayList<>();
        for (HandoffItem it : items) {
            if (!it.name().equals(ITEM)) {
                throw new IllegalArgumentException("expected items '" + ITEM + "', got "
                        + items.stream().map(HandoffItem::name).toList());
            }
            states.add(FishState.parseFrom(it.payload()));
            fds.add(it.fds());
        }
        if (pre != null) {
            PreCopied p = pre;
            for (int i = 0; i < p.states.size(); i++) {
                warren.fish.egress.FishStateCodec.checkChunk(p.states.get(i), p.fds.get(i));
            }
            warren.fdpass.Fd[] taken = new warren.fdpass.Fd[p.queues.length];
            for (int i = 0; i < taken.length; i++) {
                taken[i] = p.queues[i].transfer();
            }
            pre = null;
            egress = Egress.adoptQueues(loops(daemon), daemon.counters(), daemon.audit(), settings(daemon.config()), taken);
            for (int i = 0; i < p.states.size(); i++) {
                egress.preAdopt(p.states.get(i), p.fds.get(i));
            }
        }
        egress.adoptDelta(states, fds, calls, adoptTask);
        egress.clientSendBuffer(daemon.config().get(FishConfig.CLIENT_SNDBUF));
        if (daemon.fdStore()) {
            egress.enableFdStore(daemon.notifier());
        }
    }

    @Override
    public boolean survivesCrashes() {
        return daemon.fdStore();
    }

    @Override
    public void startAdopted() {
        resume();
    }
}
