package warren.fish.egress;

import java.net.InetAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import warren.fdpass.Fd;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.NativeIoException;
import warren.fish.conntrack.Ctnetlink;
import warren.fish.conntrack.NfTables;
import warren.linux.net.Netns;
import warren.linux.net.Rtnetlink;
import warren.linux.net.Tun;

/**
 * The egress namespace ({@code fish.netns}) and what Fish owns there. Fish changes nothing else,
 * and nothing at all in the namespace it runs in:
 * <ul>
 * <li>the TUN {@code fish0} (not persistent: it goes with its last fd, and its routes with it),
 *     with no IPv6 address of its own (addr_gen_mode none: no router solicitation, no duplicate
 *     address detection); the kernel still sends MLD reports on it once IPv6 forwarding is on
 *     (from ::, for the all-routers groups), which Fish counts apart from its drops;
 * <li>a /32 or /128 route to fish0 per soft-unicast IP in use, removed with its last client;
 * <li>its conntrack entries (one per flow);
 * <li>an nftables table {@code inet warren_fish_PID} whose one rule uses conntrack, so the kernel
 *     tracks connections there even in a namespace with no rules of its own (else a real
 *     connection from a soft-unicast IP has no entry and its port would be handed out); owned by
 *     Fish's netlink socket, so the kernel removes it when Fish stops or dies ({@link NfTables}).
 * </ul>
 * Forwarding there is the operator's: Fish checks it is on for each family of
 * {@code fish.soft_unicast_prefixes} and refuses to start otherwise, naming the sysctl.
 * The rtnetlink and ctnetlink sockets are opened inside the namespace once, so requests from the
 * loop thread need no setns(2).
 */
final class EgressNamespace implements AutoCloseable {
    static final String TUN = "fish0";
    /** Tables made by this process so far: each engine's has a name of its own. */
    private static final java.util.concurrent.atomic.AtomicInteger TABLES = new java.util.concurrent.atomic.AtomicInteger();

    final String path;
    /** fish0's queue 0 ({@code queues[0]}). */
    final Fd tun;
    /** fish0's queues (IFF_MULTI_QUEUE), index i read and written by loop i; one with one loop. */
    Fd[] queues;
    /**
     * fish0 has IFF_VNET_HDR (and offloads): every read and write of a queue carries a
     * virtio_net_hdr ({@code warren.packet.VnetHdr}) and may be a GSO super-packet. A property of
     * the device (set when Fish makes it with fish.tun_offload; an inherited fish0 keeps its format,
     * read with TUNGETIFF).
     */
    boolean vnet;
    /** fish0 takes UDP super-packets (TUN_F_USO4|USO6 accepted: Linux 6.2 or later): the client path joins datagrams. */
    boolean uso;
    /** fish0's MTU, the longest packet a client's super-packet may be cut into. */
    static final int MTU = 1500;
    final int tunIndex;
    final Rtnetlink rt;
    final Ctnetlink ct;
    final NfTables nft;

    private EgressNamespace(String path, Fd[] queues, int tunIndex, Rtnetlink rt, Ctnetlink ct, NfTables nft) {
        this.path = path;
        this.queues = queues;
        this.tun = queues[0];
        this.tunIndex = tunIndex;
        this.rt = rt;
        this.ct = ct;
        this.nft = nft;
    }

    /**
     * Opens the netlink sockets inside the namespace (calling thread's) and creates Fish's
     * nftables table; closes what it opened if a step fails.
     */
    private static EgressNamespace open(String path, Fd[] queues, int idx) throws Exception {
        List<AutoCloseable> opened = new java.util.ArrayList<>();
        try {
            Rtnetlink rt = new Rtnetlink();
            opened.add(rt);
            Ctnetlink ct = new Ctnetlink();
            opened.add(ct);
            NfTables nft;
            try {
                int n = TABLES.getAndIncrement(); // a second engine in one process (tests: a successor beside its predecessor)
                nft = NfTables.keepConntrackActive("warren_fish_" + ProcessHandle.current().pid() + (n == 0 ? "" : "_" + n),
                        "warren fish (pid "
                        + ProcessHandle.current().pid() + "): keeps connection tracking active for its reservations;"
                        + " removed when it stops");
            } catch (NativeIoException e) {
                throw new java.io.IOException("cannot make connection tracking active in the egress namespace " + path
                        + " (an nftables table of Fish's own, which its conntrack reservations rely on): " + e.getMessage(), e);
            }
            return new EgressNamespace(path, queues, idx, rt, ct, nft);
        } catch (Exception | Error e) {
            for (AutoCloseable c : opened) {
                c.close();
            }
            throw e;
        }
    }

    /** {@code fish.netns} must name a namespace: Fish never works in the one it runs in. */
    static String require(String netnsPath) {
        if (netnsPath == null || netnsPath.isBlank()) {
            throw new IllegalArgumentException("fish.netns is not set: name the egress network namespace Fish may change"
                    + " (e.g. fish.netns = /run/netns/egress); Fish never changes the namespace it runs in");
        }
        return netnsPath;
    }

    /**
     * A fresh start: checks forwarding, creates fish0 (up, multi-queue with {@code queues}
     * queues, so that a successor with another thread count can grow or shrink it) and opens the
     * netlink sockets.
     */
    static EgressNamespace create(String netnsPath, List<Prefix> prefixes, int queues) throws Exception {
        return create(netnsPath, prefixes, queues, false);
    }

    /** As above; with {@code offload}, fish0 takes and gives GSO super-packets ({@link #vnet}). */
    static EgressNamespace create(String netnsPath, List<Prefix> prefixes, int queues, boolean offload) throws Exception {
        String path = require(netnsPath);
        return Netns.call(path, () -> {
            checkForwarding(path, prefixes);
            Fd[] q = Tun.openQueues(TUN, queues, true, offload);
            try {
                int set = 0;
                if (offload) {
                    Tun.enableVnetHdr(q[0]);
                    set = Tun.setOffload(q[0], Tun.OFFLOADS_ALL);
                }
                int idx = Tun.index(TUN);
                EgressNamespace ns = open(path, q, idx);
                ns.vnet = offload;
                ns.uso = (set & Tun.TUN_F_USO4) != 0;
                try {
                    ns.rt.addrGenModeNone(idx);
                    ns.rt.linkUp(idx, 0, 10_000);
                } catch (Exception | Error e) {
                    ns.close();
                    throw e;
                }
                return ns;
            } catch (Exception | Error e) {
                for (Fd f : q) {
                    f.close();
                }
                throw e;
            }
        });
    }

    /**
     * A successor's: the predecessor's fish0 (its routes and conntrack entries as they are), its
     * queues in index order grown to {@code n} ({@link #resize}).
     */
    static EgressNamespace adopt(String netnsPath, Fd[] queues, int n) throws Exception {
        String path = require(netnsPath);
        EgressNamespace ns;
        try {
            ns = Netns.call(path, () -> {
                int idx = Tun.index(TUN);
                if (idx == 0) {
                    throw new IllegalStateException("no " + TUN + " in " + path);
                }
                EgressNamespace opened = open(path, queues, idx);
                opened.vnet = Tun.hasVnetHdr(queues[0]); // the device's format, whoever made it
                if (opened.vnet) { // the same offloads again (per device): learns whether this kernel has USO
                    opened.uso = (Tun.setOffload(queues[0], Tun.OFFLOADS_ALL) & Tun.TUN_F_USO4) != 0;
                }
                return opened;
            });
        } catch (Exception | Error e) {
            for (Fd f : queues) {
                f.close(); // handed to this engine either way
            }
            throw e;
        }
        try {
            ns.resize(n);
        } catch (Exception | Error e) {
            ns.close();
            throw e;
        }
        return ns;
    }

    /**
     * fish0's queues made {@code n} if it can (in the namespace: TUNSETIFF looks the name up
     * there): more are attached after the last; fewer: the last ones are read until EAGAIN (their
     * packets dropped: detaching would purge them anyway, and nobody owns them yet) and closed,
     * last first, so no queue changes its index. A fish0 made by an older Fish is single-queue
     * and cannot grow: it stays at one queue (logged). Returns the number of queues.
     */
    int resize(int n) throws Exception {
        if (n == queues.length) {
            return n;
        }
        if (n < queues.length) {
            java.nio.ByteBuffer b = java.nio.ByteBuffer.allocateDirect(65536);
            jnr.ffi.Pointer p = jnr.ffi.Pointer.wrap(warren.fdpass.libc.Native.RUNTIME, b);
            for (int i = n; i < queues.length; i++) {
                while (warren.fdpass.libc.Native.read(queues[i].get(), p, 65536) > 0) {
                    // dropped
                }
            }
            queues = Tun.shrinkQueues(queues, n);
            return n;
        }
        try {
            queues = Netns.call(path, () -> Tun.growQueues(TUN, queues, n, true, vnet));
        } catch (NativeIoException e) {
            warren.daemon.Log.warn(TUN + " cannot get " + n + " queues (" + e.getMessage() + "; a single-queue fish0 made"
                    + " by an older Fish?): Fish runs on " + queues.length + " loop(s) until it is made afresh");
        }
        return queues.length;
    }

    /** A conntrack socket of its own in this namespace (one per loop: a socket is not thread-safe). */
    Ctnetlink openConntrack() throws Exception {
        return Netns.call(path, Ctnetlink::new);
    }

    private static void checkForwarding(String path, List<Prefix> prefixes) throws java.io.IOException {
        if (prefixes.stream().anyMatch(Prefix::v4)) {
            checkOn(path, "net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward");
        }
        if (prefixes.stream().anyMatch(p -> !p.v4())) {
            checkOn(path, "net.ipv6.conf.all.forwarding", "/proc/sys/net/ipv6/conf/all/forwarding");
        }
    }

    private static void checkOn(String path, String sysctl, String file) throws java.io.IOException {
        if (!Files.readString(Path.of(file)).strip().equals("1")) {
            throw new java.io.IOException(sysctl + " is 0 in the egress namespace " + path + ": Fish forwards through it"
                    + " and never changes it; turn it on there (ip netns exec NAME sysctl -w " + sysctl + "=1), or take"
                    + " that family's prefixes out of fish.soft_unicast_prefixes");
        }
    }

    /** ip route add IP/32|128 dev fish0 (an existing one is fine: a restarted Fish finds its own). */
    void addRoute(byte[] ip) throws Exception {
        try {
            rt.addRoute(InetAddress.getByAddress(ip), ip.length * 8, tunIndex); // replies to the soft IP come to Fish
        } catch (NativeIoException e) {
            if (e.errno() != Errno.EEXIST) {
                throw e;
            }
        }
    }

    /**
     * Deletes the conntrack entries an earlier Fish left here (it died without systemd, or its
     * successor recovered fewer clients): every entry with a mark, IPS_FIXED_TIMEOUT and a
     * source inside {@code prefixes} (Fish's own kind; the original tuple's, or the reply's for an
     * entry in the reply's orientation) whose flow-side tuple is not in {@code keep}.
     * Entries of anyone else (no mark, or not fixed-timeout) stay. Returns how many went.
     */
    int removeStale(List<Prefix> prefixes, java.util.Set<Ctnetlink.Tuple> keep) throws NativeIoException {
        int removed = 0;
        for (int family : new int[] {warren.fdpass.libc.Native.AF_INET, warren.fdpass.libc.Native.AF_INET6}) {
            for (Ctnetlink.Entry e : ct.dump(family)) {
                Ctnetlink.Tuple o = e.original();
                if (o == null || e.mark() == 0 || (e.status() & Ctnetlink.IPS_FIXED_TIMEOUT) == 0) {
                    continue;
                }
                byte[] src = o.src().getAddress();
                Ctnetlink.Tuple flow = o; // the flow's orientation: the reply tuple if a server's packet made the entry
                if (prefixes.stream().noneMatch(p -> p.contains(src)) && e.reply() != null) {
                    byte[] replySrc = e.reply().src().getAddress();
                    if (prefixes.stream().anyMatch(p -> p.contains(replySrc))) {
                        flow = e.reply();
                    }
                }
                byte[] flowSrc = flow.src().getAddress();
                if (!keep.contains(flow) && prefixes.stream().anyMatch(p -> p.contains(flowSrc)) && ct.delete(o)) {
                    removed++;
                }
            }
        }
        return removed;
    }

    /** ip route del IP/32|128 dev fish0 (gone already is fine). */
    void removeRoute(byte[] ip) throws Exception {
        rt.deleteRoute(InetAddress.getByAddress(ip), ip.length * 8, tunIndex);
    }

    /**
     * Why {@code ip} may not be a soft-unicast IP here, or null if it may: it must be inside
     * {@code allowed} and must not be one of the namespace's own addresses (a local route
     * included), on one of its links (an address's prefix, or a route with no gateway through
     * another device than fish0), or a gateway of any route. A route to fish0 for it would take
     * that traffic away from whoever has it now.
     */
    String refusal(byte[] ip, List<Prefix> allowed) throws Exception {
        String text = Prefix.text(ip);
        if (allowed.isEmpty()) {
            return "no soft-unicast IP is allowed until fish.soft_unicast_prefixes is set (" + text + " refused)";
        }
        if (allowed.stream().noneMatch(p -> p.contains(ip))) {
            return "soft_unicast_ip " + text + " is outside fish.soft_unicast_prefixes (" + Prefix.formatList(allowed) + ")";
        }
        for (Rtnetlink.Address a : rt.addresses()) {
            if (java.util.Arrays.equals(a.local(), ip) || java.util.Arrays.equals(a.address(), ip)) {
                return "soft_unicast_ip " + text + " is an address of the egress namespace (interface " + a.ifindex() + ")";
            }
            if (a.ifindex() != tunIndex && a.address().length == ip.length
                    && new Prefix(a.address(), a.prefixLength()).contains(ip)) {
                return "soft_unicast_ip " + text + " is on a link of the egress namespace (" + Prefix.text(a.address())
                        + "/" + a.prefixLength() + ", interface " + a.ifindex() + ")";
            }
        }
        for (Rtnetlink.Route r : rt.routes()) {
            for (byte[] gw : r.gateways()) {
                if (java.util.Arrays.equals(gw, ip)) {
                    return "soft_unicast_ip " + text + " is a gateway in the egress namespace (route "
                            + Prefix.text(r.dst()) + "/" + r.dstLength() + ")";
                }
            }
            if (r.dst().length != ip.length || r.oif() == tunIndex || !new Prefix(r.dst(), r.dstLength()).contains(ip)) {
                continue;
            }
            if (r.type() == Rtnetlink.Route.LOCAL || r.type() == Rtnetlink.Route.BROADCAST
                    || r.type() == Rtnetlink.Route.ANYCAST) {
                return "soft_unicast_ip " + text + " is local to the egress namespace (local route " + Prefix.text(r.dst())
                        + "/" + r.dstLength() + ")";
            }
            if (r.type() == Rtnetlink.Route.UNICAST && r.gateways().isEmpty() && r.oif() != 0 && r.dstLength() > 0) {
                return "soft_unicast_ip " + text + " is on a link of the egress namespace (route " + Prefix.text(r.dst())
                        + "/" + r.dstLength() + ", interface " + r.oif() + ")";
            }
        }
        return null;
    }

    @Override
    public void close() {
        nft.close();
        ct.close();
        rt.close();
        for (Fd q : queues) {
            q.close();
        }
    }
}
