package warren.fish;

import java.util.Set;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.daemon.Daemon;
import warren.daemon.config.Config;
import warren.daemon.control.Call;
import warren.daemon.control.RequestHandler;
import warren.fdpass.FdInfo;
import warren.fdpass.libc.Native;
import warren.fish.egress.Egress;

/** Serves {@code Egress}: checks the packet socket and the identity, hands them to the engine. */
public final class EgressHandler implements RequestHandler {
    private final Egress egress;

    public EgressHandler(Daemon d) throws Exception {
        Config c = d.config();
        egress = new Egress(d.loop(), d.counters(), d.audit(), c.get(FishConfig.NETNS), new Egress.Timeouts(
                c.get(FishConfig.TCP_TIMEOUT), c.get(FishConfig.TCP_CLOSE_TIMEOUT), c.get(FishConfig.UDP_TIMEOUT),
                c.get(FishConfig.ICMP_TIMEOUT)));
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
                e.getPortLast(), e.getTenant());
    }

    @Override
    public void close() {
        egress.close();
    }
}
