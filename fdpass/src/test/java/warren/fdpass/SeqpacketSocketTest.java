package warren.fdpass;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import warren.fdpass.libc.Native;

@Timeout(value = 60, unit = TimeUnit.SECONDS)
class SeqpacketSocketTest {
    @TempDir
    Path dir;

    @Test
    void oneFdRoundTripsAndAWriteThroughItReachesThePeer() throws Exception {
        int before = FdCount.now();
        SeqpacketSocket[] p = SeqpacketSocket.pair();
        try (SeqpacketSocket a = p[0]; SeqpacketSocket b = p[1]) {
            Fd[] stream = TestSockets.streamPair();
            assertTrue(a.send("hello".getBytes(StandardCharsets.UTF_8), List.of(stream[0])));
            stream[0].close(); // sent: the kernel holds a duplicate in flight
            try (Received r = b.receiveBlocking(5000)) {
                assertEquals("hello", new String(r.data(), StandardCharsets.UTF_8));
                assertEquals(1, r.fdCount());
                try (Fd got = r.take(0)) {
                    int flags = Native.fcntl(got.get(), Native.F_GETFD, 0);
                    assertEquals(Native.FD_CLOEXEC, flags & Native.FD_CLOEXEC, "MSG_CMSG_CLOEXEC");
                    TestSockets.writeAll(got, "ping".getBytes(StandardCharsets.UTF_8));
                    assertArrayEquals("ping".getBytes(StandardCharsets.UTF_8), TestSockets.readExactly(stream[1], 4));
                }
            }
            stream[1].close();
        }
        assertEquals(before, FdCount.now());
    }

    @Test
    void twoHundredFiftyThreeFdsRoundTripWithAPayload() throws Exception {
        int before = FdCount.now();
        SeqpacketSocket[] p = SeqpacketSocket.pair();
        List<Fd[]> pairs = TestSockets.streamPairs(253);
        try (SeqpacketSocket a = p[0]; SeqpacketSocket b = p[1]) {
            List<Fd> send = new ArrayList<>();
            for (Fd[] pair : pairs) {
                send.add(pair[0]);
            }
            byte[] payload = new byte[60_000];
            for (int i = 0; i < payload.length; i++) {
                payload[i] = (byte) (i * 31);
            }
            assertTrue(a.send(payload, send));
            Fd.closeAll(send);
            try (Received r = b.receiveBlocking(5000)) {
                assertArrayEquals(payload, r.data());
                assertEquals(253, r.fdCount());
                List<Fd> got = r.takeAll();
                for (int i = 0; i < 253; i += 50) {
                    byte[] msg = ("n" + i).getBytes(StandardCharsets.UTF_8);
                    TestSockets.writeAll(got.get(i), msg);
                    assertArrayEquals(msg, TestSockets.readExactly(pairs.get(i)[1], msg.length), "fd " + i);
                }
                Fd.closeAll(got);
            }
        } finally {
            for (Fd[] pair : pairs) {
                pair[1].close();
            }
        }
        assertEquals(before, FdCount.now());
    }

    @Test
    void twoHundredFiftyFourFdsAreRefusedBeforeAnythingIsSent() throws Exception {
        SeqpacketSocket[] p = SeqpacketSocket.pair();
        List<Fd[]> pairs = TestSockets.streamPairs(127);
        try (SeqpacketSocket a = p[0]; SeqpacketSocket b = p[1]) {
            List<Fd> send = new ArrayList<>();
            for (Fd[] pair : pairs) {
                send.add(pair[0]);
                send.add(pair[1]);
            }
            assertEquals(254, send.size());
            FdPassException e = assertThrows(FdPassException.class, () -> a.send(new byte[] {1}, send));
            assertEquals(FdPassException.Reason.TOO_MANY_FDS, e.reason());
            assertNull(b.receive(), "nothing was sent");
        } finally {
            pairs.forEach(pp -> Fd.closeAll(List.of(pp)));
        }
    }

    @Test
    void controlTruncationClosesEveryFdThatArrived() throws Exception {
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
        List<Fd[]> pairs = TestSockets.streamPairs(10);
        List<Fd> send = new ArrayList<>();
        pairs.forEach(pp -> send.add(pp[0]));
        try (SeqpacketSocket a = SeqpacketSocket.wrap(Fd.adopt(sv[0]));
                SeqpacketSocket small = SeqpacketSocket.wrap(Fd.adopt(sv[1]), 1024, 2)) {
            int before = FdCount.now();
            assertTrue(a.send(new byte[] {7}, send));
            FdPassException e = assertThrows(FdPassException.class, () -> small.receiveBlocking(5000));
            assertEquals(FdPassException.Reason.TRUNCATED, e.reason());
            assertTrue(e.getMessage().contains("MSG_CTRUNC"), e.getMessage());
            int after = FdCount.now();
            System.out.println("MSG_CTRUNC with 10 fds for a 2-fd receiver: fd count before " + before + ", after " + after);
            assertEquals(before, after, "every fd that arrived was closed");
        } finally {
            pairs.forEach(pp -> Fd.closeAll(List.of(pp)));
        }
    }

    @Test
    void anOversizedMessageIsTruncatedAndItsFdsClosed() throws Exception {
        int[] sv = Native.socketpair(Native.AF_UNIX, Native.SOCK_SEQPACKET | Native.SOCK_CLOEXEC);
        Fd[] s = TestSockets.streamPair();
        try (SeqpacketSocket big = SeqpacketSocket.wrap(Fd.adopt(sv[0]));
                SeqpacketSocket small = SeqpacketSocket.wrap(Fd.adopt(sv[1]), 100, 253)) {
            int before = FdCount.now();
            assertTrue(big.send(new byte[1000], List.of(s[0])));
            FdPassException e = assertThrows(FdPassException.class, () -> small.receiveBlocking(5000));
            assertEquals(FdPassException.Reason.TRUNCATED, e.reason());
            assertEquals(before, FdCount.now());
        } finally {
            Fd.closeAll(List.of(s));
        }
    }

    @Test
    void eofIsReportedWhenThePeerCloses() throws Exception {
        SeqpacketSocket[] p = SeqpacketSocket.pair();
        try (SeqpacketSocket b = p[1]) {
            p[0].close();
            assertTrue(b.receiveBlocking(5000).isEof());
        }
    }

    @Test
    void aPipeOrARegularFileIsNotAStreamSocket() throws Exception {
        int[] pipe = Native.pipe2(Native.O_CLOEXEC);
        try (Fd r = Fd.adopt(pipe[0]); Fd w = Fd.adopt(pipe[1]);
                Fd f = Fd.adopt(Native.socket(Native.AF_INET, Native.SOCK_DGRAM | Native.SOCK_CLOEXEC, 0))) {
            FdPassException e = assertThrows(FdPassException.class, () -> FdInfo.requireConnectedStream(r, "fd_a", false));
            assertEquals(FdPassException.Reason.BAD_FD_TYPE, e.reason());
            assertTrue(e.getMessage().contains("a pipe"), e.getMessage());
            e = assertThrows(FdPassException.class, () -> FdInfo.requireConnectedStream(f, "fd_b", false));
            assertTrue(e.getMessage().contains("AF_INET SOCK_DGRAM"), e.getMessage());
            // a regular file (a memfd is S_IFREG)
            try (Fd reg = Memfd.createUnsealed("f", new byte[] {1})) {
                assertEquals(FdInfo.Kind.REGULAR, FdInfo.of(reg).kind());
                e = assertThrows(FdPassException.class, () -> FdInfo.requireConnectedStream(reg, "fd_a", false));
                assertTrue(e.getMessage().contains("a regular file"), e.getMessage());
            }
            Fd[] s = TestSockets.streamPair();
            try (Fd x = s[0]; Fd y = s[1]) {
                assertEquals(Native.AF_UNIX, FdInfo.requireConnectedStream(x, "fd_a", true).domain());
                assertFalse(FdInfo.of(y).listening());
            }
        }
    }

    /**
     * An O_PATH fd of a socket file (what the live fuzzer sent): fstat(2) says socket, every socket
     * call EBADF. FdInfo calls it PATH instead of throwing, which Bumblebee's Upgrade and Downgrade
     * and Fish's Egress answered INTERNAL.
     */
    @Test
    void anOPathFdOfASocketFileIsNoSocket() throws Exception {
        java.nio.file.Path dir = java.nio.file.Files.createTempDirectory("warren-opath-");
        String path = dir.resolve("s.sock").toString();
        try (Fd bound = Fd.adopt(Native.socket(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC, 0))) {
            Native.bind(bound.get(), Native.sockaddrUn(path), path);
            try (Fd opath = Fd.adopt(Native.open(path, 0x200000 /* O_PATH */))) {
                assertEquals(Native.S_IFSOCK, Native.fstat(opath.get())[0] & Native.S_IFMT, "fstat says socket");
                assertEquals(FdInfo.Kind.PATH, FdInfo.of(opath).kind());
                FdPassException e = assertThrows(FdPassException.class, () -> FdInfo.requireConnectedStream(opath, "fd_a", true));
                assertEquals(FdPassException.Reason.BAD_FD_TYPE, e.reason());
                assertTrue(e.getMessage().contains("O_PATH"), e.getMessage());
            }
        } finally {
            java.nio.file.Files.deleteIfExists(java.nio.file.Path.of(path));
            java.nio.file.Files.delete(dir);
        }
    }

    @Test
    void peerCredentialsAreThoseOfTheConnectingChildProcess() throws Exception {
        Path sock = dir.resolve("creds.sock");
        try (SeqpacketListener l = SeqpacketListener.bind(sock)) {
            Process child = new ProcessBuilder(javaBin(), "-cp", System.getProperty("java.class.path"),
                    PeerProbe.class.getName(), sock.toString()).redirectErrorStream(true).start();
            try {
                SeqpacketSocket c = null;
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                while (c == null && System.nanoTime() < deadline) {
                    c = l.accept();
                    if (c == null) {
                        Native.pollOne(l.fd().get(), Native.POLLIN, 200);
                    }
                }
                assertNotNull(c, "child connected");
                try (SeqpacketSocket conn = c) {
                    assertEquals(child.pid(), conn.peer().pid());
                    assertEquals(Native.getuid(), conn.peer().uid());
                    assertEquals(Native.getgid(), conn.peer().gid());
                    try (Received r = conn.receiveBlocking(30_000)) {
                        assertEquals("pid " + child.pid(), new String(r.data(), StandardCharsets.UTF_8));
                    }
                }
            } finally {
                child.destroy();
                child.waitFor(10, TimeUnit.SECONDS);
            }
        }
        assertFalse(Files.exists(sock), "listener removes its path on close");
    }

    @Test
    void supplementaryGroupsOfTheConnectingProcessComeWithTheCredentials() throws Exception {
        assumeTrue(Native.getuid() == 0, "setgroups needs root");
        assumeTrue(Files.isExecutable(Path.of("/usr/bin/setpriv")), "setpriv (util-linux) not installed");
        // more groups than the first getsockopt buffer holds: the ERANGE retry is exercised
        int[] groups = java.util.stream.IntStream.rangeClosed(4001, 4070).toArray();
        String list = java.util.Arrays.stream(groups).mapToObj(Integer::toString)
                .collect(java.util.stream.Collectors.joining(","));
        Path sock = dir.resolve("groups.sock");
        try (SeqpacketListener l = SeqpacketListener.bind(sock)) {
            Process child = new ProcessBuilder("setpriv", "--groups", list, "--", javaBin(), "-cp",
                    System.getProperty("java.class.path"), PeerProbe.class.getName(), sock.toString())
                    .redirectErrorStream(true).start();
            try {
                SeqpacketSocket c = null;
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                while (c == null && System.nanoTime() < deadline) {
                    c = l.accept();
                    if (c == null) {
                        Native.pollOne(l.fd().get(), Native.POLLIN, 200);
                    }
                }
                assertNotNull(c, "child connected");
                try (SeqpacketSocket conn = c) {
                    int[] got = conn.peer().groups();
                    java.util.Arrays.sort(got);
                    assertArrayEquals(groups, got);
                    assertTrue(conn.peer().inGroup(4070) && conn.peer().inGroup(Native.getgid()));
                    assertFalse(conn.peer().inGroup(4071));
                }
            } finally {
                child.destroy();
                child.waitFor(10, TimeUnit.SECONDS);
            }
            // getsockname gives the name bound, which is the temporary one before the rename
            assertTrue(l.boundName().startsWith(sock + ".tmp-"), l.boundName());
        }
        SeqpacketSocket[] pair = SeqpacketSocket.pair();
        try (SeqpacketSocket a = pair[0]; SeqpacketSocket b = pair[1]) {
            assertEquals("", Native.getsocknameUnix(a.fd().get()));
            assertEquals(0, a.peer().groups().length, "this JVM runs with no supplementary groups: "
                    + Files.readAllLines(Path.of("/proc/self/status")).stream().filter(x -> x.startsWith("Groups:"))
                            .findFirst().orElse("?"));
        }
    }

    @Test
    void userAndGroupNamesResolveThroughLibc() throws Exception {
        assertEquals(0, Native.getpwnam("root"));
        assertEquals(0, Native.getgrnam("root"));
        assertEquals(-1, Native.getpwnam("no-such-user-warren"));
        assertEquals(-1, Native.getgrnam("no-such-group-warren"));
        for (String line : Files.readAllLines(Path.of("/etc/passwd"))) {
            String[] f = line.split(":");
            if (f.length > 3) {
                assertEquals(Integer.parseInt(f[2]), Native.getpwnam(f[0]), line);
            }
        }
        for (String line : Files.readAllLines(Path.of("/etc/group"))) {
            String[] f = line.split(":");
            if (f.length > 2) {
                assertEquals(Integer.parseInt(f[2]), Native.getgrnam(f[0]), line);
            }
        }
    }

    @Test
    void aStaleSocketFileIsReplacedButALiveOneIsNot() throws Exception {
        Path sock = dir.resolve("stale.sock");
        SeqpacketListener first = SeqpacketListener.bind(sock);
        first.fd().close(); // crash-like: the file stays, nobody listens
        assertTrue(Files.exists(sock));
        try (SeqpacketListener second = SeqpacketListener.bind(sock)) {
            assertThrows(java.io.IOException.class, () -> SeqpacketListener.bind(sock));
            assertEquals(0660, Files.getAttribute(sock, "unix:mode", java.nio.file.LinkOption.NOFOLLOW_LINKS)
                    instanceof Integer m ? m & 0777 : -1);
        }
        Files.writeString(sock, "not a socket");
        FdPassException e = assertThrows(FdPassException.class, () -> SeqpacketListener.bind(sock));
        assertTrue(e.getMessage().contains("not a socket"));
    }

    static String javaBin() {
        return Path.of(System.getProperty("java.home"), "bin", "java").toString();
    }
}
