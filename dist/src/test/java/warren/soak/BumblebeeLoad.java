package warren.soak;

import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import jnr.ffi.Pointer;
import warren.bumblebee.onramp.OnRamp;
import warren.control.v1.Error;
import warren.control.v1.Request;
import warren.control.v1.Upgrade;
import warren.daemon.client.ControlClient;
import warren.daemon.client.Reply;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.netns.testing.Packets;
import warren.netns.testing.TestNetwork;

/**
 * TCP and UDP flows through Bumblebee from the on-ramp simulator (a client namespace whose
 * default route is a TUN; every new 5-tuple becomes an Upgrade on one control connection): each
 * Upgraded socket is echoed here, so a TCP stream's bytes come back hashed and each datagram is
 * compared with the one sent ({@link NetFlows}).
 */
final class BumblebeeLoad extends Load {
    static final int TCP = 3;
    static final int UDP = 2;
    private static final InetSocketAddress TCP_SERVER = new InetSocketAddress("198.18.99.9", 9000);
    private static final InetSocketAddress UDP_SERVER = new InetSocketAddress("198.18.99.9", 53);
    private final Path sock;
    private final ControlClient control;
    private final OnRamp ramp;
    private final NetFlows flows;
    private final AtomicLong upgraded = new AtomicLong();
    private final AtomicLong burstPort = new AtomicLong();

    BumblebeeLoad(Path sock, TestNetwork net, Ledger ledger, long seed) throws Exception {
        super("bumblebee", ledger, seed);
        this.sock = sock;
        control = ControlClient.connect(sock);
        control.onUnmatched(r -> ledger.fail("bumblebee: an answer to no request in flight (answered twice?): " + r));
        String ns = net.namespace("onramp").name;
        ramp = new OnRamp(ns, control, this::serve);
        flows = new NetFlows(daemon, ns, "198.18.50.1", 20_000, ledger, io);
    }

    @Override
    void warmUp() throws Exception {
        for (String out : List.of(flows.tcp(TCP_SERVER, data(0)), flows.udp(UDP_SERVER, data(1)))) {
            if (!out.equals("ok")) {
                throw new IllegalStateException("the warm-up flows: " + out);
            }
        }
    }

    @Override
    void start() {
        workers("tcp", TCP, n -> flows.tcp(TCP_SERVER, data(n)));
        workers("udp", UDP, n -> flows.udp(UDP_SERVER, data(n)));
    }

    /**
     * Echoes an Upgraded socket (as BumblebeeSystemdTest.serve): a TCP one until its end of file,
     * a UDP one (SOCK_DGRAM, payloads) until 10 s without a datagram (its flow has ended by then:
     * bumblebee.idle_timeout is 5 s here).
     */
    private void serve(Reply r) {
        upgraded.incrementAndGet();
        Fd s = r.takeFd(r.response().getUpgraded().getFdSocket());
        boolean tcp = r.response().getUpgraded().getOriginal().getProtocol() == 6;
        r.close();
        io.submit(() -> {
            try (s) {
                Pointer p = Native.allocate(65536);
                while (true) {
                    if (!tcp && Native.pollOne(s.get(), Native.POLLIN, 10_000) == 0) {
                        return null;
                    }
                    long n = Native.recv(s.get(), p, 65536, 0);
                    if (n <= 0) {
                        if (tcp && n == 0) {
                            Native.shutdown(s.get(), Native.SHUT_WR);
                        }
                        return null;
                    }
                    for (long off = 0; off < n; ) {
                        long w = Native.send(s.get(), p.slice(off), n - off, Native.MSG_NOSIGNAL);
                        if (w < 0) {
                            return null;
                        }
                        off += w;
                    }
                }
            }
        });
    }

    /**
     * UDP flows, each its own SEQPACKET socket with a first datagram and an Upgrade on a control
     * connection of its own, until one is refused; then they all close (their slots rest in
     * quarantine, bumblebee.quarantine, and come back).
     */
    @Override
    String burst() throws Exception {
        long h = ledger.openBurst(daemon);
        List<Fd> held = new ArrayList<>();
        String refusal = null;
        try (ControlClient c = ControlClient.connect(sock)) {
            for (int i = 0; i < 4 * Soak.BUMBLEBEE_SLOTS && refusal == null; i++) {
                int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
                Fd mine = Fd.adopt(sv[0]);
                held.add(mine);
                int port = 30_000 + (int) (burstPort.getAndIncrement() % 30_000);
                Packets.send(mine, Packets.udp4(new byte[] {(byte) 198, 18, 51, 1}, port,
                        new byte[] {(byte) 198, 18, 99, 9}, 53, "burst"));
                try (Fd theirs = Fd.adopt(sv[1]);
                        Reply r = c.call(Request.newBuilder().setId(i + 1).setUpgrade(Upgrade.newBuilder().setFdFlow(0)),
                                List.of(theirs)).get(30, TimeUnit.SECONDS)) {
                    if (r.response().hasUpgraded()) {
                        held.add(r.takeFd(r.response().getUpgraded().getFdSocket()));
                    } else {
                        refusal = r.response().getError().getCode() + ": " + r.response().getError().getMessage();
                        if (r.response().getError().getCode() != Error.Code.RESOURCE_EXHAUSTED) {
                            ledger.fail("bumblebee burst: refused with " + r.response());
                        }
                    }
                }
            }
        } finally {
            Fd.closeAll(held);
            ledger.closeBurst(h);
        }
        int flowsHeld = (held.size() - 1) / 2;
        if (refusal == null) {
            ledger.fail("bumblebee burst: " + flowsHeld + " flows upgraded and never refused");
            return "never refused";
        }
        return flowsHeld + " UDP flows upgraded (slots " + Soak.BUMBLEBEE_SLOTS + ", the soak's own flows and those in"
                + " quarantine beside), then " + refusal;
    }

    @Override
    void finish() throws Exception {
        stop();
        long lost = ledger.get("bumblebee tcp: lost at kill -9 (by design)") + ledger.get("bumblebee udp: lost at kill -9 (by design)")
                + ledger.get("bumblebee tcp: refused during a burst") + ledger.get("bumblebee udp: refused during a burst");
        int open = control.inFlight();
        if (open > lost) {
            ledger.fail("bumblebee: " + open + " Upgrades still without an answer, only " + lost
                    + " flows lost at kill -9 or refused in a burst");
        }
        ledger.count("bumblebee Upgrades answered (on-ramp)", upgraded.get());
        ramp.close();
        control.close();
        if (!ramp.errors.isEmpty()) {
            ledger.fail("the on-ramp's pump: " + ramp.errors);
        }
    }
}
