package warren.soak;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.security.MessageDigest;
import java.util.Arrays;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import warren.daemon.testing.Streams;
import warren.linux.net.Netns;

/**
 * Flows from a client namespace, the same for Bumblebee's on-ramp and Fish's client: a TCP
 * stream echoed by its far end (every byte hashed as it comes back) and a UDP exchange of
 * numbered datagrams, stop and wait (each echoed datagram compared with the one sent; one with no
 * echo in 1 s is sent again and counted). Source ports come from a counter (never two flows on
 * one 5-tuple in a run: the on-ramp keeps a flow's socket for its 5-tuple).
 */
final class NetFlows {
    /** A flow that could not start because its daemon was down (kill -9) or full (a burst) at the time. */
    static final class Refused extends Exception {
        Refused(String why) {
            super(why, null, false, false);
        }
    }

    private final String daemon;
    private final String namespace;
    private final InetAddress source;
    private final Ledger ledger;
    private final ExecutorService io;
    private final AtomicInteger ports = new AtomicInteger();
    private final int firstPort;

    NetFlows(String daemon, String namespace, String source, int firstPort, Ledger ledger, ExecutorService io)
            throws IOException {
        this.daemon = daemon;
        this.namespace = "/run/netns/" + namespace;
        this.source = InetAddress.getByName(source);
        this.firstPort = firstPort;
        this.ledger = ledger;
        this.io = io;
    }

    private int port() {
        return firstPort + ports.getAndIncrement() % 20_000;
    }

    /** Why a flow that failed to start did: an expected refusal in a kill or burst window, else an error. */
    private Exception startFailed(long from, String what, Exception e) {
        long now = System.nanoTime();
        if (ledger.killedDuring(daemon, from, now)) {
            return new Refused("lost at kill -9 (by design)");
        }
        if (ledger.burstDuring(daemon, from, now)) {
            return new Refused("refused during a burst");
        }
        return new IllegalStateException(what + ": " + e, e);
    }

    /** A TCP stream of {@code data} to {@code to}, paced (16 KiB every 60 ms), echoed and hashed. */
    String tcp(InetSocketAddress to, byte[] data) throws Exception {
        int p = port();
        long from = System.nanoTime();
        try (Socket s = Netns.call(namespace, () -> {
            Socket x = new Socket();
            x.setReuseAddress(true);
            x.bind(new InetSocketAddress(source, p));
            return x;
        })) {
            try {
                s.connect(to, 15_000);
            } catch (IOException e) {
                Exception why = startFailed(from, "connect from port " + p, e);
                if (why instanceof Refused r) {
                    return r.getMessage();
                }
                throw why;
            }
            s.setSoTimeout(60_000);
            OutputStream out = s.getOutputStream();
            Future<?> writer = io.submit(() -> {
                for (int off = 0; off < data.length; off += 16 << 10) {
                    out.write(data, off, Math.min(16 << 10, data.length - off));
                    Thread.sleep(60);
                }
                s.shutdownOutput();
                return null;
            });
            MessageDigest md = Load.sha256();
            byte[] buf = new byte[64 << 10];
            long got = 0;
            InputStream in = s.getInputStream();
            for (int n; (n = in.read(buf)) > 0; ) {
                md.update(buf, 0, n);
                got += n;
            }
            writer.get(30, TimeUnit.SECONDS);
            if (!Arrays.equals(Streams.sha256(data), md.digest())) {
                throw new IllegalStateException("port " + p + ": echo of " + data.length + " bytes differs (" + got
                        + " bytes came back)");
            }
            return "ok";
        }
    }

    /** {@code data} in numbered datagrams of up to 1,200 bytes to {@code to}, each echoed before the next. */
    String udp(InetSocketAddress to, byte[] data) throws Exception {
        int p = port();
        long from = System.nanoTime();
        int resent = 0;
        try (DatagramSocket d = Netns.call(namespace, () -> new DatagramSocket(new InetSocketAddress(source, p)))) {
            d.connect(to);
            d.setSoTimeout(1000);
            byte[] in = new byte[2048];
            int seq = 0;
            for (int off = 0; off < data.length; off += 1200, seq++) {
                int len = Math.min(1200, data.length - off);
                byte[] msg = new byte[4 + len];
                msg[0] = (byte) (seq >>> 24);
                msg[1] = (byte) (seq >>> 16);
                msg[2] = (byte) (seq >>> 8);
                msg[3] = (byte) seq;
                System.arraycopy(data, off, msg, 4, len);
                for (int tries = 0; ; tries++) {
                    d.send(new DatagramPacket(msg, msg.length));
                    if (await(d, in, msg)) {
                        break;
                    }
                    if (tries == 10) {
                        Exception why = startFailed(from, "port " + p + ": datagram " + seq + " never echoed in 11 tries",
                                new SocketTimeoutException());
                        if (why instanceof Refused r) {
                            return r.getMessage();
                        }
                        throw why;
                    }
                    resent++;
                }
                Thread.sleep(5);
            }
        }
        if (resent > 0) {
            ledger.count(daemon + " udp datagrams sent again (no echo in 1 s)", resent);
        }
        return "ok";
    }

    /** Waits for the echo of {@code msg}: true if it came, false after 1 s; a wrong one is a failure. */
    private boolean await(DatagramSocket d, byte[] in, byte[] msg) throws IOException {
        while (true) {
            DatagramPacket r = new DatagramPacket(in, in.length);
            try {
                d.receive(r);
            } catch (SocketTimeoutException e) {
                return false;
            }
            byte[] got = Arrays.copyOf(r.getData(), r.getLength());
            if (Arrays.equals(got, msg)) {
                return true;
            }
            if (got.length >= 4 && Arrays.equals(got, 0, 4, msg, 0, 4)) {
                throw new IllegalStateException("an echoed datagram differs from the one sent");
            }
            ledger.count(daemon + " udp late echoes of a datagram sent again (ignored)");
        }
    }
}
