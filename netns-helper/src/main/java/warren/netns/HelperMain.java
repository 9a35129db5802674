package warren.netns;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import warren.fdpass.Fd;
import warren.fdpass.FdPassException;
import warren.fdpass.Received;
import warren.fdpass.SeqpacketSocket;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.fdpass.net.TcpSockets;
import warren.linux.net.Rtnetlink;
import warren.linux.net.Tun;
import warren.netns.v1.Address;
import warren.netns.v1.Connected;
import warren.netns.v1.HelperRequest;
import warren.netns.v1.HelperResponse;
import warren.netns.v1.SetupDone;

/**
 * The helper process: started as {@code unshare [--user --map-root-user] --net -- java ...
 * warren.netns.HelperMain --connect PATH}, so the whole JVM lives in a fresh network namespace
 * (and, without root, a fresh user namespace in which it is root). It connects back to the daemon
 * over PATH (SOCK_SEQPACKET: the filesystem is shared, the network is not), builds the environment
 * asked for and passes every fd back; then it makes outbound connections on demand. It exits when
 * the daemon closes the connection, so it never outlives its daemon.
 *
 * <p>Why a process: the kernel refuses unshare(CLONE_NEWUSER) to a multi-threaded process, and
 * a JVM always has threads; unshare(1) does it before the JVM starts.
 */
public final class HelperMain {
    private HelperMain() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 2 || !args[0].equals("--connect")) {
            System.err.println("usage: HelperMain --connect PATH");
            System.exit(2);
        }
        try (SeqpacketSocket s = SeqpacketSocket.connect(Path.of(args[1]))) {
            while (true) {
                Received r;
                try {
                    r = s.receiveBlocking(Long.MAX_VALUE / 4_000_000L);
                } catch (FdPassException e) {
                    if (e.reason() == FdPassException.Reason.TIMEOUT) {
                        continue;
                    }
                    throw e;
                }
                try (r) {
                    if (r.isEof()) {
                        return;
                    }
                    HelperRequest req = HelperRequest.parseFrom(r.data());
                    List<Fd> fds = new ArrayList<>();
                    HelperResponse.Builder resp = HelperResponse.newBuilder().setId(req.getId());
                    try {
                        switch (req.getBodyCase()) {
                            case SETUP: resp.setSetupDone(setup(req.getSetup(), fds)); break;
                            case CONNECT: resp.setConnected(connect(req.getConnect(), fds)); break;
                            default: resp.setError("unknown request");
                        }
                    } catch (Exception e) {
                        Fd.closeAll(fds);
                        fds.clear();
                        resp.setError(e.toString());
                    }
                    s.sendBlocking(resp.build().toByteArray(), fds, 10_000);
                    Fd.closeAll(fds); // sent: the daemon holds its own copies
                }
            }
        }
    }

    private static SetupDone setup(warren.netns.v1.Setup setup, List<Fd> fds) throws Exception {
        fds.add(Fd.adopt(Native.open("/proc/self/ns/net", Native.O_RDONLY)));
        Fd tun = Tun.open(setup.getTunName(), true);
        fds.add(tun);
        int idx = Tun.index(setup.getTunName());
        try (Rtnetlink rt = new Rtnetlink()) {
            rt.linkUp(Tun.index("lo"), 0);
            rt.linkUp(idx, setup.getMtu(), 10_000);
            for (Address a : setup.getAddressesList()) {
                rt.addAddress(idx, InetAddress.getByAddress(a.getIp().toByteArray()), a.getPrefix());
            }
            for (Address a : setup.getRoutesList()) {
                rt.addRoute(InetAddress.getByAddress(a.getIp().toByteArray()), a.getPrefix(), idx);
            }
        }
        SetupDone.Builder done = SetupDone.newBuilder().setFdNetns(0).setFdTun(1);
        for (Address l : setup.getListensList()) {
            Fd fd = TcpSockets.listen(new InetSocketAddress(InetAddress.getByAddress(l.getIp().toByteArray()),
                    l.getPrefix()), 4096);
            TcpSockets.setBlocking(fd, false);
            done.addFdListeners(fds.size());
            fds.add(fd);
        }
        return done.build();
    }

    private static Connected connect(warren.netns.v1.Connect c, List<Fd> fds) throws Exception {
        InetAddress to = InetAddress.getByAddress(c.getToIp().toByteArray());
        int fd = Native.socket(to.getAddress().length == 4 ? Native.AF_INET : Native.AF_INET6,
                Native.SOCK_STREAM | Native.SOCK_NONBLOCK | Native.SOCK_CLOEXEC, 0);
        Fd s = Fd.adopt(fd);
        fds.add(s);
        Native.bind(fd, Native.sockaddr(new InetSocketAddress(InetAddress.getByAddress(c.getFromIp().toByteArray()), 0)),
                "helper connect");
        byte[] sa = Native.sockaddr(new InetSocketAddress(to, c.getToPort()));
        int rc = Native.tryConnect(fd, sa);
        if (rc < 0 && rc != -Errno.EINPROGRESS) {
            throw new NativeIoException("connect", -rc, to.getHostAddress());
        }
        return Connected.newBuilder().setFdSocket(0).setLocalPort(Native.getsockname(fd).getPort()).build();
    }
}
