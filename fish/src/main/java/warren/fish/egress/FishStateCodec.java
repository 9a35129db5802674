package warren.fish.egress;

import com.google.protobuf.ByteString;
import java.util.ArrayList;
import java.util.List;
import warren.control.v1.FiveTuple;
import warren.fdpass.Fd;
import warren.handoff.v1.FishClient;
import warren.handoff.v1.FishFlow;
import warren.handoff.v1.FishState;

/**
 * Fish's table in the handoff encoding ({@code warren.handoff.v1.FishState}) and back, through
 * plain records: what {@link Egress#snapshot} produces and what a successor rebuilds from.
 */
public final class FishStateCodec {
    public static final int FORMAT = 1;

    private FishStateCodec() {}

    /** One flow of a client. */
    public record FlowRecord(FiveTuple client, int egressPort, boolean replied, boolean finOut, boolean finIn,
            boolean closing, long packets, long bytes, long idleMillis) {}

    /** One client; {@code fd} is a raw fd number (borrowed when writing, owned after reading), -1 if none. */
    public record ClientRecord(String tenant, byte[] softIp, int first, int last, int fd, byte[] identity, int nextPort,
            long packetsOut, long packetsIn, long bytesOut, long bytesIn, long requestId, ByteString metadata,
            List<FlowRecord> flows, long callRef) {}

    /** Encodes; {@code fdsOut} receives the clients' fds in the order the fd_packets fields index them. */
    public static FishState write(List<ClientRecord> clients, List<Integer> fdsOut) {
        FishState.Builder s = FishState.newBuilder().setFormat(FORMAT);
        for (ClientRecord c : clients) {
            FishClient.Builder b = FishClient.newBuilder().setTenant(c.tenant()).setSoftUnicastIp(ByteString.copyFrom(c.softIp()))
                    .setPortFirst(c.first()).setPortLast(c.last()).setIdentity(ByteString.copyFrom(c.identity()))
                    .setNextPort(c.nextPort()).setPacketsOut(c.packetsOut()).setPacketsIn(c.packetsIn())
                    .setBytesOut(c.bytesOut()).setBytesIn(c.bytesIn()).setRequestId(c.requestId())
                    .setMetadata(c.metadata()).setCallRef(c.callRef());
            if (c.fd() >= 0) {
                b.setFdPackets(fdsOut.size());
                fdsOut.add(c.fd());
            }
            for (FlowRecord f : c.flows()) {
                b.addFlows(FishFlow.newBuilder().setClient(f.client()).setEgressPort(f.egressPort()).setReplied(f.replied())
                        .setFinOut(f.finOut()).setFinIn(f.finIn()).setClosing(f.closing()).setPackets(f.packets())
                        .setBytes(f.bytes()).setIdleMs(f.idleMillis()));
            }
            s.addClients(b);
        }
        return s.build();
    }

    /** Decodes; the fds named are detached from {@code fds} into the records. */
    public static List<ClientRecord> read(FishState s, List<Fd> fds) {
        if (s.getFormat() != FORMAT) {
            throw new IllegalArgumentException("Fish state format " + s.getFormat() + "; this version reads " + FORMAT);
        }
        List<ClientRecord> out = new ArrayList<>();
        for (FishClient c : s.getClientsList()) {
            List<FlowRecord> flows = new ArrayList<>();
            for (FishFlow f : c.getFlowsList()) {
                if (f.getEgressPort() < c.getPortFirst() || f.getEgressPort() > c.getPortLast()) {
                    throw new IllegalArgumentException("flow port " + f.getEgressPort() + " outside tenant '"
                            + c.getTenant() + "' range " + c.getPortFirst() + "-" + c.getPortLast());
                }
                flows.add(new FlowRecord(f.getClient(), f.getEgressPort(), f.getReplied(), f.getFinOut(), f.getFinIn(),
                        f.getClosing(), f.getPackets(), f.getBytes(), f.getIdleMs()));
            }
            out.add(new ClientRecord(c.getTenant(), c.getSoftUnicastIp().toByteArray(), c.getPortFirst(), c.getPortLast(),
                    c.hasFdPackets() ? fds.get(c.getFdPackets()).detach() : -1, c.getIdentity().toByteArray(),
                    c.getNextPort(), c.getPacketsOut(), c.getPacketsIn(), c.getBytesOut(), c.getBytesIn(),
                    c.getRequestId(), c.getMetadata(), flows, c.getCallRef()));
        }
        return out;
    }
}
