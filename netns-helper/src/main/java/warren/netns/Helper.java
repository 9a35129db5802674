package warren.netns;

import com.google.protobuf.ByteString;
import java.io.IOException;
import java.net.InetAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import warren.fdpass.Fd;
import warren.fdpass.Received;
import warren.fdpass.SeqpacketListener;
import warren.fdpass.SeqpacketSocket;
import warren.fdpass.libc.Native;
import warren.netns.v1.Address;
import warren.netns.v1.Connect;
import warren.netns.v1.HelperRequest;
import warren.netns.v1.HelperResponse;
import warren.netns.v1.Setup;

/**
 * The daemon's side of a {@link HelperMain} process: starts it in a fresh network namespace
 * ({@code unshare --net}; with {@code --user --map-root-user} too when not root), asks it for the
 * environment and for connections, and receives their fds. Blocking calls with deadlines: a
 * control path. Closing ends the helper (EOF) and waits for it.
 */
public final class Helper implements AutoCloseable {
    private final Process process;
    private final SeqpacketSocket socket;
    private final Path dir;
    private long nextId = 1;

    private Helper(Process process, SeqpacketSocket socket, Path dir) {
        this.process = process;
        this.socket = socket;
        this.dir = dir;
    }

    /** Starts a helper; {@code userNamespace} for an unprivileged daemon. */
    public static Helper start(boolean userNamespace) throws Exception {
        Path dir = Files.createTempDirectory("warren-helper-", PosixFilePermissions.asFileAttribute(
                PosixFilePermissions.fromString("rwx------")));
        Path path = dir.resolve("helper.sock");
        try (SeqpacketListener l = SeqpacketListener.bind(path, 0600, -1, -1, 1)) {
            List<String> cmd = new ArrayList<>(List.of("unshare"));
            if (userNamespace) {
                cmd.addAll(List.of("--user", "--map-root-user"));
            }
            cmd.addAll(List.of("--net", "--", Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                    "-XX:+UseSerialGC", "-Xmx64m", "-cp", System.getProperty("java.class.path"),
                    HelperMain.class.getName(), "--connect", path.toString()));
            Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.INHERIT)
                    .start();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            SeqpacketSocket s = null;
            while (s == null) {
                if (!p.isAlive() || System.nanoTime() > deadline) {
                    p.destroyForcibly();
                    throw new IOException("the netns helper did not connect back (" + String.join(" ", cmd.subList(0, 4))
                            + "...)" + (p.isAlive() ? "" : ", exit status " + p.exitValue()));
                }
                Native.pollOne(l.fd().get(), Native.POLLIN, 100);
                s = l.accept();
            }
            return new Helper(p, s, dir);
        }
    }

    private static Address address(InetAddress a, int prefix) {
        return Address.newBuilder().setIp(ByteString.copyFrom(a.getAddress())).setPrefix(prefix).build();
    }

    /** The environment's fds: [netns, tun, listeners...] (owned by the caller). */
    public List<Fd> setup(String tun, int mtu, List<InetAddress> addresses, List<InetAddress> routes,
            List<Integer> routePrefixes, List<InetAddress> listenIps, int listenPort) throws Exception {
        Setup.Builder s = Setup.newBuilder().setTunName(tun).setMtu(mtu);
        for (InetAddress a : addresses) {
            s.addAddresses(address(a, a.getAddress().length * 8));
        }
        for (int i = 0; i < routes.size(); i++) {
            s.addRoutes(address(routes.get(i), routePrefixes.get(i)));
        }
        for (InetAddress l : listenIps) {
            s.addListens(address(l, listenPort));
        }
        List<Fd> fds = call(HelperRequest.newBuilder().setSetup(s), 2 + listenIps.size());
        return fds;
    }

    /** A socket made inside the namespace, connecting (non-blocking) from {@code from} to {@code to}:port. */
    public Fd connect(InetAddress from, InetAddress to, int port, int[] localPortOut) throws Exception {
        HelperResponse[] resp = new HelperResponse[1];
        List<Fd> fds = call(HelperRequest.newBuilder().setConnect(Connect.newBuilder()
                .setFromIp(ByteString.copyFrom(from.getAddress())).setToIp(ByteString.copyFrom(to.getAddress()))
                .setToPort(port)), 1, resp);
        localPortOut[0] = resp[0].getConnected().getLocalPort();
        return fds.get(0);
    }

    private List<Fd> call(HelperRequest.Builder req, int wantFds) throws Exception {
        return call(req, wantFds, new HelperResponse[1]);
    }

    private synchronized List<Fd> call(HelperRequest.Builder req, int wantFds, HelperResponse[] out) throws Exception {
        long id = nextId++;
        socket.sendBlocking(req.setId(id).build().toByteArray(), List.of(), 10_000);
        try (Received r = socket.receiveBlocking(30_000)) {
            if (r.isEof()) {
                throw new IOException("the netns helper went away");
            }
            HelperResponse resp = HelperResponse.parseFrom(r.data());
            out[0] = resp;
            if (resp.getBodyCase() == HelperResponse.BodyCase.ERROR) {
                throw new IOException("netns helper: " + resp.getError());
            }
            if (resp.getId() != id || r.fdCount() != wantFds) {
                throw new IOException("netns helper answered " + r.fdCount() + " fds for request " + resp.getId()
                        + "; expected " + wantFds + " for " + id);
            }
            return r.takeAll();
        }
    }

    @Override
    public void close() {
        socket.close();
        try {
            if (!process.waitFor(10, TimeUnit.SECONDS)) {
                process.destroyForcibly();
            }
        } catch (InterruptedException e) {
            process.destroyForcibly();
        }
        try {
            Files.deleteIfExists(dir.resolve("helper.sock"));
            Files.deleteIfExists(dir);
        } catch (IOException ignored) {
            // a temp directory left behind is harmless
        }
    }
}
