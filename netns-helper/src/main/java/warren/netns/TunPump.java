package warren.netns;

import java.net.InetAddress;
import java.util.List;
import jnr.ffi.Pointer;
import warren.fdpass.Fd;
import warren.fdpass.SendBatch;
import warren.fdpass.epoll.Epoll;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.linux.net.Netns;
import warren.linux.net.Rtnetlink;
import warren.linux.net.Tun;
import warren.packet.VnetHdr;

/**
 * A client namespace's default route as one packet socket: a TUN device (addresses given, default
 * routes to it) whose every packet is sent, one per message, on a socket, and whose socket messages
 * are written back into the TUN. What a front proxy receiving raw IP does for one client (Fish's
 * tests and benchmark use it). One thread; closing stops it and closes both fds.
 *
 * <p><b>vnet mode</b> ({@code vnetHdr} true; issue #15): the TUN is opened with IFF_VNET_HDR, a
 * 10-byte little-endian virtio_net_hdr ({@link Tun#enableVnetHdr}) and every offload the kernel
 * has ({@link Tun#OFFLOADS_ALL}), so a read gives a TCP or UDP super-packet of up to 64 KiB behind
 * a {@link VnetHdr} and a write takes one. Messages are pumped unchanged both ways, header
 * included: what a client that declared {@code Egress.vnet_hdr} sends and takes. The pump counts
 * the super-packets (gso_type not NONE) it read from the TUN and wrote into it.
 *
 * <p>Socket buffers: a vnet socket carries messages of up to {@link VnetHdr#MAX_MESSAGE} bytes, so
 * both its buffers are set to {@link #VNET_SOCKET_BUFFER} (SO_SNDBUFFORCE/SO_RCVBUFFORCE as root,
 * else SO_SNDBUF/SO_RCVBUF, which the kernel caps at wmem_max/rmem_max). A plain socket gets
 * SO_SNDBUFFORCE 4 MiB when root, as before. A message the socket or the TUN does not take
 * (EAGAIN, or a header the kernel refuses) is dropped, like a packet on a full link.
 *
 * <p>Batches (issue 15): packets are read from the TUN into the slots of a {@link SendBatch} until
 * it has none left (EAGAIN) or {@link #BATCH} are read, then sent with one sendmmsg(2), in order;
 * a message the socket refuses is dropped and the rest sent on. The socket's messages go into the
 * TUN one write each (a TUN takes one packet per write).
 */
public final class TunPump implements AutoCloseable {
    /** SO_SNDBUFFORCE / SO_RCVBUFFORCE (asm-generic/socket.h): past wmem_max/rmem_max, needs CAP_NET_ADMIN. */
    private static final int SO_SNDBUFFORCE = 32;
    private static final int SO_RCVBUFFORCE = 33;
    /** Both buffers of a vnet socket: room for dozens of 64 KiB messages. */
    public static final int VNET_SOCKET_BUFFER = 4 << 20;
    /** A plain read buffer: more than any IP packet. */
    private static final int PLAIN_BUFFER = 65600;
    /** Packets read from the TUN and sent with one sendmmsg(2), at most. */
    public static final int BATCH = 64;
    private static final long TUN_EVENT = 1;
    private static final long SOCKET_EVENT = 2;

    private final Fd tun;
    private final Fd socket;
    private final boolean vnetHdr;
    private final int offloads;
    private final Thread thread;
    private volatile boolean running = true;
    /** Written by the pump thread only. */
    private volatile long superPacketsFromTun;
    private volatile long superPacketsToTun;
    private volatile long messagesToSocket;
    private volatile long sendsToSocket;
    /** The TUN's packets on their way to the socket (the pump thread's). */
    private final SendBatch tx;

    /**
     * A plain pump: one raw IP packet per message.
     *
     * @param namespace a path such as /run/netns/NAME
     * @param addresses "IP/prefix" strings for the TUN; a default route per family goes to it
     * @param socket owned by the pump from this call on, closed by {@link #close} or if this throws
     */
    public TunPump(String namespace, String tunName, int mtu, List<String> addresses, Fd socket) throws Exception {
        this(namespace, tunName, mtu, addresses, socket, false);
    }

    /**
     * A pump in plain or ({@code vnetHdr} true) vnet mode: each message a virtio_net_hdr and an IP
     * packet of up to 64 KiB.
     *
     * @param socket owned by the pump from this call on, closed by {@link #close} or if this throws
     */
    public TunPump(String namespace, String tunName, int mtu, List<String> addresses, Fd socket, boolean vnetHdr)
            throws Exception {
        this.socket = socket;
        this.vnetHdr = vnetHdr;
        int[] set = new int[1];
        try {
            if (vnetHdr) {
                bufferSize(socket, SO_SNDBUFFORCE, Native.SO_SNDBUF);
                bufferSize(socket, SO_RCVBUFFORCE, Native.SO_RCVBUF);
            } else {
                try { // like Fish's end: room for a burst (a datagram pair queues against the sender's buffer)
                    Native.setsockoptInt(socket.get(), Native.SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20);
                } catch (NativeIoException e) {
                    // not root: the default buffer
                }
            }
            this.tun = Netns.call(namespace, () -> {
                Fd t = vnetHdr ? Tun.open(tunName, true, true) : Tun.open(tunName, true);
                try {
                    if (vnetHdr) {
                        Tun.enableVnetHdr(t);
                        set[0] = Tun.setOffload(t, Tun.OFFLOADS_ALL);
                    }
                    configure(tunName, mtu, addresses);
                    return t;
                } catch (Exception | Error e) {
                    t.close();
                    throw e;
                }
            });
        } catch (Exception | Error e) {
            socket.close();
            throw e;
        }
        this.offloads = set[0];
        // slots for the longest packet the TUN gives: a super-packet behind its header, or one of its MTU
        this.tx = new SendBatch(BATCH, vnetHdr ? VnetHdr.MAX_MESSAGE : Math.min(PLAIN_BUFFER, mtu + 64));
        thread = new Thread(this::run, "tun-pump-" + tunName);
        thread.setDaemon(true);
        thread.start();
    }

    /** Sets a socket buffer with the FORCE option (root), else the capped one. */
    private static void bufferSize(Fd socket, int force, int capped) throws NativeIoException {
        try {
            Native.setsockoptInt(socket.get(), Native.SOL_SOCKET, force, VNET_SOCKET_BUFFER);
        } catch (NativeIoException e) { // EPERM: not root
            Native.setsockoptInt(socket.get(), Native.SOL_SOCKET, capped, VNET_SOCKET_BUFFER);
        }
    }

    /** In the namespace: the TUN up at {@code mtu}, its addresses, a default route per family. */
    private static void configure(String tunName, int mtu, List<String> addresses) throws Exception {
        int idx = Tun.index(tunName);
        try (Rtnetlink rt = new Rtnetlink()) {
            rt.linkUp(idx, mtu, 10_000);
            boolean v4 = false;
            boolean v6 = false;
            for (String a : addresses) {
                String[] p = a.split("/");
                InetAddress ip = InetAddress.getByName(p[0]);
                rt.addAddress(idx, ip, Integer.parseInt(p[1]));
                v4 |= ip.getAddress().length == 4;
                v6 |= ip.getAddress().length == 16;
            }
            if (v4) {
                rt.addRoute(InetAddress.getByName("0.0.0.0"), 0, idx);
            }
            if (v6) {
                rt.addRoute(InetAddress.getByName("::"), 0, idx);
            }
        }
    }

    /** True if messages carry a virtio_net_hdr. */
    public boolean vnetHdr() {
        return vnetHdr;
    }

    /** The TUN_F_* offloads the kernel took (vnet mode; without USO before Linux 6.2), 0 in plain mode. */
    public int offloads() {
        return offloads;
    }

    /** Messages read from the TUN whose gso_type is not NONE (vnet mode), sent to the socket or dropped. */
    public long superPacketsFromTun() {
        return superPacketsFromTun;
    }

    /** Messages from the socket whose gso_type is not NONE that the TUN took (vnet mode). */
    public long superPacketsToTun() {
        return superPacketsToTun;
    }

    /** Messages sent to the socket (taken by it). */
    public long messagesToSocket() {
        return messagesToSocket;
    }

    /** sendmmsg(2) calls that sent them: {@link #messagesToSocket} / this is the mean batch. */
    public long sendsToSocket() {
        return sendsToSocket;
    }

    private void run() {
        int capacity = vnetHdr ? VnetHdr.MAX_MESSAGE : PLAIN_BUFFER;
        Pointer p = Native.allocate(capacity);
        try (Epoll ep = new Epoll(8)) {
            ep.add(tun.get(), Native.EPOLLIN, TUN_EVENT);
            ep.add(socket.get(), Native.EPOLLIN, SOCKET_EVENT);
            while (running) {
                int n = ep.await(100);
                for (int i = 0; i < n; i++) {
                    long len;
                    if (ep.data(i) == TUN_EVENT) {
                        while (tunToSocket() == BATCH) {
                            // a full batch: the TUN may hold more
                        }
                    } else if (ep.data(i) == SOCKET_EVENT) {
                        while ((len = Native.recv(socket.get(), p, capacity, Native.MSG_DONTWAIT)) > 0) {
                            if (Native.write(tun.get(), p, len) == len && vnetHdr && isGso(p, len)) {
                                superPacketsToTun++; // the only writer
                            }
                        }
                    }
                }
            }
        } catch (Exception e) {
            if (running) {
                e.printStackTrace();
            }
        }
    }

    /**
     * Reads packets from the TUN into the batch's slots until EAGAIN or {@link #BATCH}, sends them
     * in order with sendmmsg(2) (a message the socket refuses is dropped, the next tried); the
     * number read.
     */
    private int tunToSocket() {
        int slot = tx.slotSize();
        int got = 0;
        long len;
        while (got < BATCH && (len = Native.read(tun.get(), tx.pointer(got), slot)) > 0) {
            if (vnetHdr && isGso(tx.pointer(got), len)) {
                superPacketsFromTun++; // the only writer
            }
            tx.length(got++, (int) len);
        }
        for (int from = 0; from < got; ) {
            int sent = tx.send(socket.get(), from, got - from);
            if (sent > 0) {
                messagesToSocket += sent; // the only writer
                sendsToSocket++;
                from += sent;
            } else {
                from++; // the socket refused it (full: EAGAIN, or its peer gone): dropped
            }
        }
        return got;
    }

    private static boolean isGso(Pointer p, long len) {
        return len >= VnetHdr.SIZE && p.getByte(VnetHdr.GSO_TYPE) != VnetHdr.GSO_NONE;
    }

    @Override
    public void close() throws InterruptedException {
        running = false;
        thread.join(5000);
        tun.close();
        socket.close();
    }
}
