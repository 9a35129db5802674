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
import warren.fdpass.libc.NativeIoException;
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
    private Egress egress; // null in a successor until adopt

    public EgressHandler(Daemon d) throws Exception {
        this.daemon = d;
        if (d.loops().size() > 1) {
            warren.daemon.Log.info("threads = " + d.loops().size() + ": Fish runs its egress engine on loop 0 only (one"
                    + " TUN queue, one thread for every client and reply); its other loops stay idle");
        }
        d.metrics().probe(s -> {
            if (egress != null) {
                egress.sample(s);
            }
        });
        if (!d.successor()) {
            egress = new Egress(d.loop(), d.counters(), d.audit(), settings(d.config()));
            egress.clientSendBuffer(d.config().get(FishConfig.CLIENT_SNDBUF));
            if (d.fdStore()) {
                egress.enableFdStore(d.notifier());
            }
        }
    }

    private static Egress.Settings settings(Config c) throws ConfigException {
        if (c.get(FishConfig.NETNS).isBlank()) {
            throw new ConfigException("fish.netns is not set: name the egress network namespace Fish may change (e.g."
                    + " fish.netns = /run/netns/egress); Fish never changes the namespace it runs in");
        }
        return new Egress.Settings(c.get(FishConfig.NETNS), c.get(FishConfig.SOFT_UNICAST_PREFIXES),
                new Egress.Timeouts(c.get(FishConfig.TCP_TIMEOUT), c.get(FishConfig.TCP_CLOSE_TIMEOUT),
                        c.get(FishConfig.UDP_TIMEOUT), c.get(FishConfig.ICMP_TIMEOUT)), c.get(FishConfig.CLIENT_IDLE_TIMEOUT));
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
                e.getPortLast(), e.getTenant(), info.type() == Native.SOCK_DGRAM);
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

    @Override
    public List<HandoffItem> pauseAndExport(ToLongFunction<Call> callRef) {
        egress.pause();
        return List.of(egress.export(ITEM, callRef));
    }

    @Override
    public void resume() throws NativeIoException {
        egress.resume();
    }

    @Override
    public void abandon() {
        egress.abandon();
    }

    @Override
    public void adopt(int stateVersion, List<HandoffItem> items, LongFunction<Call> calls, BiConsumer<Call, Task> adoptTask)
            throws Exception {
        if (items.size() != 1 || !(items.get(0).name().equals(ITEM) || items.get(0).name().equals("fdstore"))) {
            throw new IllegalArgumentException("expected one item '" + ITEM + "', got "
                    + items.stream().map(HandoffItem::name).toList());
        }
        HandoffItem it = items.get(0);
        String netns = daemon.config().get(FishConfig.NETNS);
        FishState state = it.name().equals(ITEM) ? FishState.parseFrom(it.payload())
                : Egress.fromFdStore(warren.handoff.v1.StoredTasks.parseFrom(it.payload()), netns); // after a crash
        egress = Egress.adopt(daemon.loop(), daemon.counters(), daemon.audit(), settings(daemon.config()),
                it.name().equals("fdstore"), state,
                it.fds(), calls, adoptTask);
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
    public void startAdopted() throws NativeIoException {
        egress.resume();
    }
}
