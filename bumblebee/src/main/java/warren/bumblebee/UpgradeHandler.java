package warren.bumblebee;

import java.util.Set;
import warren.bumblebee.env.Environment;
import warren.bumblebee.nat.Nat;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.daemon.Daemon;
import warren.daemon.config.Config;
import warren.daemon.control.Call;
import warren.daemon.control.RequestHandler;
import warren.fdpass.Fd;
import warren.fdpass.FdInfo;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * Serves {@code Upgrade}: checks the flow socket (an AF_UNIX SOCK_SEQPACKET or SOCK_DGRAM socket:
 * one packet per message) and hands it to the {@link Nat}.
 */
public final class UpgradeHandler implements RequestHandler, warren.daemon.handoff.Handoffable {
    private static final String ITEM = Nat.STORE_ITEM; // the handoff item of the table (and its relay's, + ".relay")
    private final Daemon daemon;
    private Nat nat;         // null in a successor until adopt
    private Environment env;

    public UpgradeHandler(Daemon d) throws Exception {
        this.daemon = d;
        if (d.loops().size() > 1) {
            // docs/bumblebee.md, "Threads": the N-loop engine (a TUN queue and a share of the slots per
            // loop) is not there yet; everything of Bumblebee's stays on loop 0, as with threads = 1
            warren.daemon.Log.notice("threads = " + d.loops().size() + ": Bumblebee runs its NAT on one event loop"
                    + " (loop 0, one TUN queue) whatever threads says; loops 1.." + (d.loops().size() - 1)
                    + " stay idle (docs/bumblebee.md, Threads)");
        }
        d.metrics().probe(s -> {
            if (nat != null) {
                nat.sample(s);
            }
        });
        if (d.successor()) {
            return; // the namespace, TUN, listeners and table come from the predecessor
        }
        Config c = d.config();
        this.env = Environment.create(c.get(BumblebeeConfig.ENVIRONMENT), c.get(BumblebeeConfig.MTU).intValue(),
                c.get(BumblebeeConfig.SLOTS).intValue());
        try {
            this.nat = new Nat(d.loop(), env, d.counters(), settings(c), false, survivesCrashes());
        } catch (Exception e) {
            env.close();
            throw e;
        }
        if (survivesCrashes()) {
            nat.enableFdStore(d.notifier());
        }
    }

    /** Under systemd (systemd.fd_store) with the namespace in this process (not the helper's). */
    @Override
    public boolean survivesCrashes() {
        return daemon.fdStore() && (env == null || env.inProcess());
    }

    private static Nat.Settings settings(Config c) {
        return new Nat.Settings(c.get(BumblebeeConfig.QUARANTINE), c.get(BumblebeeConfig.IDLE_TIMEOUT),
                c.get(BumblebeeConfig.HANDSHAKE_TIMEOUT), c.get(BumblebeeConfig.CLOSE_LINGER));
    }

    /** The namespace, TUN and listeners go once every flow has ended. */
    @Override
    public void close() {
        if (env != null) {
            env.close();
        }
    }

    // ---- upgrade in place: the environment and the flow/NAT table are the whole state

    @Override
    public int stateVersion() {
        return 1;
    }

    @Override
    public java.util.List<Integer> acceptsStateVersions() {
        return java.util.List.of(1);
    }

    @Override
    public java.util.List<warren.daemon.handoff.HandoffItem> pauseAndExport(
            java.util.function.ToLongFunction<Call> callRef) {
        nat.pause();
        return nat.export(ITEM, callRef);
    }

    @Override
    public void resume() throws NativeIoException {
        nat.resume();
    }

    @Override
    public void abandon() {
        nat.abandon();
    }

    @Override
    public void adopt(int stateVersion, java.util.List<warren.daemon.handoff.HandoffItem> items,
            java.util.function.LongFunction<Call> calls,
            java.util.function.BiConsumer<Call, warren.daemon.task.Task> adoptTask) throws Exception {
        Config c = daemon.config();
        Nat.Inherited in = Nat.inherited(items, c.get(BumblebeeConfig.SLOTS).intValue(),
                c.get(BumblebeeConfig.MTU).intValue());
        env = in.environment();
        nat = new Nat(daemon.loop(), env, daemon.counters(), settings(c), true, survivesCrashes());
        nat.adopt(in, calls, adoptTask);
        if (survivesCrashes()) {
            nat.enableFdStore(daemon.notifier());
        }
    }

    @Override
    public void startAdopted() throws NativeIoException {
        nat.resume();
    }

    @Override
    public Set<Request.BodyCase> serves() {
        return Set.of(Request.BodyCase.UPGRADE, Request.BodyCase.DOWNGRADE);
    }

    @Override
    public void handle(Call call) throws NativeIoException {
        if (call.request().getBodyCase() == Request.BodyCase.DOWNGRADE) {
            downgrade(call);
            return;
        }
        int idx = call.request().getUpgrade().getFdFlow();
        if (!flowSocketOk(call, idx)) {
            return;
        }
        int mtu = call.request().getUpgrade().getMtu();
        if (mtu != 0 && (mtu < 576 || mtu > 65535)) {
            call.fail(Error.Code.INVALID_ARGUMENT, "mtu " + mtu + " is outside 576-65535 (0 = the default)");
            return;
        }
        Fd flow = call.takeFd(idx);
        nat.upgrade(call, flow, mtu);
    }

    private void downgrade(Call call) throws NativeIoException {
        warren.control.v1.Downgrade d = call.request().getDowngrade();
        try {
            FdInfo.requireConnectedStream(call.peekFd(d.getFdSocket()), "fd_socket", true);
        } catch (warren.fdpass.FdPassException e) {
            call.fail(Error.Code.BAD_FD_TYPE, e.getMessage());
            return;
        }
        if (!flowSocketOk(call, d.getFdFlow())) {
            return;
        }
        warren.control.v1.FiveTuple t = d.getTuple();
        int len = t.getSrcIp().size();
        if (t.getProtocol() != 6 || (len != 4 && len != 16) || t.getDstIp().size() != len || t.getSrcPort() < 1
                || t.getSrcPort() > 65535 || t.getDstPort() < 1 || t.getDstPort() > 65535) {
            call.fail(Error.Code.INVALID_ARGUMENT, "tuple must be TCP (protocol 6) with two addresses of the same family"
                    + " (4 or 16 bytes) and ports 1-65535; got " + t.toString().replace('\n', ' '));
            return;
        }
        warren.packet.FlowKey k = new warren.packet.FlowKey();
        k.version = len == 4 ? 4 : 6;
        k.protocol = 6;
        t.getSrcIp().copyTo(k.src, 0);
        t.getDstIp().copyTo(k.dst, 0);
        k.srcPort = t.getSrcPort();
        k.dstPort = t.getDstPort();
        nat.downgrade(call, call.takeFd(d.getFdSocket()), call.takeFd(d.getFdFlow()), k);
    }

    private static boolean flowSocketOk(Call call, int idx) throws NativeIoException {
        FdInfo info = FdInfo.of(call.peekFd(idx));
        if (!info.isSocket() || info.domain() != Native.AF_UNIX
                || (info.type() != Native.SOCK_SEQPACKET && info.type() != Native.SOCK_DGRAM) || info.listening()) {
            call.fail(Error.Code.BAD_FD_TYPE, "fd_flow is " + info.describe()
                    + ", expected a connected AF_UNIX SOCK_SEQPACKET or SOCK_DGRAM socket (one packet per message)");
            return false;
        }
        return true;
    }
}
