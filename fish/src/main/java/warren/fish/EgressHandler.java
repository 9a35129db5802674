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
    private volatile Egress egress; // null in a successor until adopt (before its loops run)

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
        for (int i = 0; i < daemon.loops().size(); i++) {
            egress.abandon(i);
        }
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

    @Override
    public boolean survivesCrashes() {
        return daemon.fdStore();
    }

    @Override
    public void startAdopted() {
        resume();
    }
}
