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
public final class UpgradeHandler implements RequestHandler {
    private final Nat nat;
    private final Environment env;

    public UpgradeHandler(Daemon d) throws Exception {
        Config c = d.config();
        this.env = Environment.create(c.get(BumblebeeConfig.MTU).intValue(), c.get(BumblebeeConfig.SLOTS).intValue());
        this.nat = new Nat(d.loop(), env, d.counters(), new Nat.Settings(c.get(BumblebeeConfig.QUARANTINE),
                c.get(BumblebeeConfig.IDLE_TIMEOUT), c.get(BumblebeeConfig.HANDSHAKE_TIMEOUT),
                c.get(BumblebeeConfig.CLOSE_LINGER)));
    }

    /** The namespace, TUN and listeners go once every flow has ended. */
    @Override
    public void close() {
        env.close();
    }

    @Override
    public Set<Request.BodyCase> serves() {
        return Set.of(Request.BodyCase.UPGRADE);
    }

    @Override
    public void handle(Call call) throws NativeIoException {
        int idx = call.request().getUpgrade().getFdFlow();
        FdInfo info = FdInfo.of(call.peekFd(idx));
        if (!info.isSocket() || info.domain() != Native.AF_UNIX
                || (info.type() != Native.SOCK_SEQPACKET && info.type() != Native.SOCK_DGRAM) || info.listening()) {
            call.fail(Error.Code.BAD_FD_TYPE, "fd_flow is " + info.describe()
                    + ", expected a connected AF_UNIX SOCK_SEQPACKET or SOCK_DGRAM socket (one packet per message)");
            return;
        }
        Fd flow = call.takeFd(idx);
        nat.upgrade(call, flow);
    }
}
