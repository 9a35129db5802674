package warren.bumblebee.nat;

import com.google.protobuf.ByteString;
import java.util.ArrayList;
import java.util.List;
import warren.control.v1.FiveTuple;
import warren.fdpass.Fd;
import warren.handoff.v1.BumblebeeState;
import warren.handoff.v1.FlowState;
import warren.packet.FlowKey;

/**
 * Writes the flow/NAT table to the handoff encoding ({@code warren.handoff.v1.BumblebeeState})
 * and reads it back. Writing borrows the flows' fds (listed in {@code fdsOut} in the order their
 * fd_* fields index); reading moves the received fds into the flows. The control path: it may
 * allocate.
 */
final class FlowTableCodec {
    static final int FORMAT = 1;

    private FlowTableCodec() {}

    static BumblebeeState write(Flow[] flows, int mtu, long nowNanos, List<Integer> fdsOut) {
        BumblebeeState.Builder b = BumblebeeState.newBuilder().setFormat(FORMAT).setSlots(flows.length).setMtu(mtu);
        for (Flow f : flows) {
            if (f.state == Flow.FREE) {
                continue;
            }
            FlowState.Builder s = FlowState.newBuilder().setSlot(f.slot).setStateValue(f.state).setHaveKey(f.haveKey)
                    .setUdp(f.udp).setFinFromFlow(f.finFromFlow).setFinFromKernel(f.finFromKernel)
                    .setPacketsIn(f.packetsIn).setPacketsOut(f.packetsOut).setBytesIn(f.bytesIn).setBytesOut(f.bytesOut)
                    .setIdleMs(Math.max(0, (nowNanos - f.lastActiveNanos) / 1_000_000)).setNatPort(f.natPort);
            if (f.haveKey) {
                s.setOriginal(tuple(f.original));
            }
            if (f.flowFd >= 0) {
                s.setFdFlow(fdsOut.size());
                fdsOut.add(f.flowFd);
            }
            if (f.udpFd >= 0) {
                s.setFdUdp(fdsOut.size());
                fdsOut.add(f.udpFd);
            }
            b.addFlows(s);
        }
        return b.build();
    }

    /** Rebuilds a table of {@code state.getSlots()} flows; takes the fds it names from {@code fds}. */
    static Flow[] read(BumblebeeState state, List<Fd> fds, long nowNanos) {
        if (state.getFormat() != FORMAT) {
            throw new IllegalArgumentException("Bumblebee state format " + state.getFormat() + "; this version reads "
                    + FORMAT);
        }
        Flow[] flows = new Flow[state.getSlots()];
        for (int i = 0; i < flows.length; i++) {
            flows[i] = new Flow(i);
        }
        for (FlowState s : state.getFlowsList()) {
            if (s.getSlot() >= flows.length) {
                throw new IllegalArgumentException("flow in slot " + s.getSlot() + " of " + flows.length);
            }
            Flow f = flows[s.getSlot()];
            f.state = s.getStateValue();
            f.haveKey = s.getHaveKey();
            if (s.hasOriginal()) {
                key(s.getOriginal(), f.original);
            }
            f.udp = s.getUdp();
            f.flowFd = s.hasFdFlow() ? fds.get(s.getFdFlow()).detach() : -1;
            f.udpFd = s.hasFdUdp() ? fds.get(s.getFdUdp()).detach() : -1;
            f.finFromFlow = s.getFinFromFlow();
            f.finFromKernel = s.getFinFromKernel();
            f.packetsIn = s.getPacketsIn();
            f.packetsOut = s.getPacketsOut();
            f.bytesIn = s.getBytesIn();
            f.bytesOut = s.getBytesOut();
            f.lastActiveNanos = nowNanos - s.getIdleMs() * 1_000_000L;
            f.natPort = s.getNatPort() != 0 ? s.getNatPort() : f.natPort;
        }
        return flows;
    }

    static FiveTuple tuple(FlowKey k) {
        int len = k.addressLength();
        return FiveTuple.newBuilder().setProtocol(k.protocol).setSrcIp(ByteString.copyFrom(k.src, 0, len))
                .setSrcPort(k.srcPort).setDstIp(ByteString.copyFrom(k.dst, 0, len)).setDstPort(k.dstPort).build();
    }

    static void key(FiveTuple t, FlowKey out) {
        out.version = t.getSrcIp().size() == 4 ? 4 : 6;
        out.protocol = t.getProtocol();
        java.util.Arrays.fill(out.src, (byte) 0);
        java.util.Arrays.fill(out.dst, (byte) 0);
        t.getSrcIp().copyTo(out.src, 0);
        t.getDstIp().copyTo(out.dst, 0);
        out.srcPort = t.getSrcPort();
        out.dstPort = t.getDstPort();
    }

    static List<Integer> newFdList() {
        return new ArrayList<>();
    }
}
