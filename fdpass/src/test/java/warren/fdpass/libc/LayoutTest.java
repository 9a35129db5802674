package warren.fdpass.libc;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import warren.fdpass.net.TcpInfo;

/** Checks {@link Layout} and the constants of {@link Native} against the C headers, with gcc. */
class LayoutTest {
    @TempDir
    Path dir;

    @Test
    void offsetsAndConstantsMatchTheCHeaders() throws Exception {
        assumeTrue(Files.isExecutable(Path.of("/usr/bin/gcc")), "gcc not installed");
        String c = String.join("\n",
                "#define _GNU_SOURCE",
                "#include <stdio.h>", "#include <stddef.h>", "#include <sys/socket.h>", "#include <sys/un.h>",
                "#include <sys/epoll.h>", "#include <poll.h>", "#include <sys/stat.h>", "#include <fcntl.h>",
                "#include <sys/mman.h>", "#include <sys/eventfd.h>", "#include <linux/tcp.h>", "#include <pwd.h>",
                "#include <grp.h>", "#include <errno.h>",
                "#define P(n, v) printf(\"%s %ld\\n\", n, (long)(v))",
                "int main(void) {",
                " P(\"MSGHDR_SIZE\", sizeof(struct msghdr)); P(\"MSG_IOV\", offsetof(struct msghdr, msg_iov));",
                " P(\"MSG_IOVLEN\", offsetof(struct msghdr, msg_iovlen));",
                " P(\"MSG_CONTROL\", offsetof(struct msghdr, msg_control));",
                " P(\"MSG_CONTROLLEN\", offsetof(struct msghdr, msg_controllen));",
                " P(\"MSG_FLAGS\", offsetof(struct msghdr, msg_flags));",
                " P(\"IOVEC_SIZE\", sizeof(struct iovec)); P(\"CMSG_HDR_SIZE\", CMSG_LEN(0));",
                " P(\"MMSGHDR_SIZE\", sizeof(struct mmsghdr)); P(\"MMSG_LEN\", offsetof(struct mmsghdr, msg_len));",
                " P(\"CMSG_SPACE_4\", CMSG_SPACE(4)); P(\"CMSG_SPACE_1012\", CMSG_SPACE(1012));",
                " P(\"UCRED_SIZE\", sizeof(struct ucred)); P(\"EPOLL_EVENT_SIZE\", sizeof(struct epoll_event));",
                " P(\"POLLFD_SIZE\", sizeof(struct pollfd)); P(\"SOCKADDR_UN_SIZE\", sizeof(struct sockaddr_un));",
                " P(\"STAT_SIZE\", sizeof(struct stat)); P(\"ST_MODE\", offsetof(struct stat, st_mode));",
                " P(\"ST_SIZE\", offsetof(struct stat, st_size));",
                " P(\"ST_INO\", offsetof(struct stat, st_ino)); P(\"ST_DEV\", offsetof(struct stat, st_dev));",
                " P(\"TI_RTT\", offsetof(struct tcp_info, tcpi_rtt)); P(\"TI_RTTVAR\", offsetof(struct tcp_info, tcpi_rttvar));",
                " P(\"TI_CWND\", offsetof(struct tcp_info, tcpi_snd_cwnd));",
                " P(\"TI_TOTAL_RETRANS\", offsetof(struct tcp_info, tcpi_total_retrans));",
                " P(\"TI_BYTES_ACKED\", offsetof(struct tcp_info, tcpi_bytes_acked));",
                " P(\"TI_BYTES_RECEIVED\", offsetof(struct tcp_info, tcpi_bytes_received));",
                " P(\"TI_MIN_RTT\", offsetof(struct tcp_info, tcpi_min_rtt));",
                " P(\"TI_DELIVERY_RATE\", offsetof(struct tcp_info, tcpi_delivery_rate));",
                " P(\"F_SETPIPE_SZ\", F_SETPIPE_SZ); P(\"SPLICE_F_MORE\", SPLICE_F_MORE); P(\"EPOLLET\", (unsigned)EPOLLET);",
                " P(\"MSG_CMSG_CLOEXEC\", MSG_CMSG_CLOEXEC); P(\"MSG_NOSIGNAL\", MSG_NOSIGNAL);",
                " P(\"SOCK_NONBLOCK\", SOCK_NONBLOCK); P(\"SOCK_CLOEXEC\", SOCK_CLOEXEC);",
                " P(\"SO_PEERCRED\", SO_PEERCRED); P(\"SO_DOMAIN\", SO_DOMAIN); P(\"SO_PROTOCOL\", SO_PROTOCOL);",
                " P(\"SO_ACCEPTCONN\", SO_ACCEPTCONN); P(\"F_ADD_SEALS\", F_ADD_SEALS); P(\"F_GET_SEALS\", F_GET_SEALS);",
                " P(\"EPOLLRDHUP\", EPOLLRDHUP); P(\"POLLRDHUP\", POLLRDHUP); P(\"EFD_NONBLOCK\", EFD_NONBLOCK);",
                " P(\"O_NONBLOCK\", O_NONBLOCK); P(\"F_DUPFD_CLOEXEC\", F_DUPFD_CLOEXEC);",
                " P(\"SO_PEERGROUPS\", SO_PEERGROUPS); P(\"PASSWD_SIZE\", sizeof(struct passwd));",
                " P(\"PW_UID\", offsetof(struct passwd, pw_uid)); P(\"PW_GID\", offsetof(struct passwd, pw_gid));",
                " P(\"GROUP_SIZE\", sizeof(struct group)); P(\"GR_GID\", offsetof(struct group, gr_gid));",
                " P(\"ERANGE\", ERANGE); P(\"ENODATA\", ENODATA); P(\"ESRCH\", ESRCH);",
                " return 0; }", "");
        Path src = Files.writeString(dir.resolve("layout.c"), c);
        Path exe = dir.resolve("layout");
        Process cc = new ProcessBuilder("gcc", "-o", exe.toString(), src.toString()).inheritIO().start();
        assertEquals(0, cc.waitFor(60, TimeUnit.SECONDS) ? cc.exitValue() : -1, "gcc");
        Process run = new ProcessBuilder(exe.toString()).start();
        Map<String, Long> v = new HashMap<>();
        for (String line : new String(run.getInputStream().readAllBytes()).split("\n")) {
            String[] kv = line.split(" ");
            v.put(kv[0], Long.parseLong(kv[1]));
        }
        assertEquals(v.get("MSGHDR_SIZE"), (long) Layout.MSGHDR_SIZE);
        assertEquals(v.get("MSG_IOV"), (long) Layout.MSG_IOV);
        assertEquals(v.get("MSG_IOVLEN"), (long) Layout.MSG_IOVLEN);
        assertEquals(v.get("MSG_CONTROL"), (long) Layout.MSG_CONTROL);
        assertEquals(v.get("MSG_CONTROLLEN"), (long) Layout.MSG_CONTROLLEN);
        assertEquals(v.get("MSG_FLAGS"), (long) Layout.MSG_FLAGS);
        assertEquals(v.get("IOVEC_SIZE"), (long) Layout.IOVEC_SIZE);
        assertEquals(v.get("MMSGHDR_SIZE"), (long) Layout.MMSGHDR_SIZE);
        assertEquals(v.get("MMSG_LEN"), (long) Layout.MMSG_LEN);
        assertEquals(v.get("CMSG_HDR_SIZE"), (long) Layout.cmsgLen(0));
        assertEquals(v.get("CMSG_SPACE_4"), (long) Layout.cmsgSpace(4));
        assertEquals(v.get("CMSG_SPACE_1012"), (long) Layout.cmsgSpace(1012));
        assertEquals(v.get("UCRED_SIZE"), (long) Layout.UCRED_SIZE);
        assertEquals(v.get("EPOLL_EVENT_SIZE"), (long) Layout.EPOLL_EVENT_SIZE);
        assertEquals(v.get("POLLFD_SIZE"), (long) Layout.POLLFD_SIZE);
        assertEquals(v.get("SOCKADDR_UN_SIZE"), (long) Layout.SOCKADDR_UN_SIZE);
        assertEquals(v.get("STAT_SIZE"), (long) Layout.STAT_SIZE);
        assertEquals(v.get("ST_MODE"), (long) Layout.ST_MODE);
        assertEquals(v.get("ST_SIZE"), (long) Layout.ST_SIZE);
        assertEquals(v.get("ST_INO"), (long) Layout.ST_INO);
        assertEquals(v.get("ST_DEV"), (long) Layout.ST_DEV);
        assertEquals(v.get("TI_RTT"), (long) TcpInfo.RTT);
        assertEquals(v.get("TI_RTTVAR"), (long) TcpInfo.RTTVAR);
        assertEquals(v.get("TI_CWND"), (long) TcpInfo.SND_CWND);
        assertEquals(v.get("TI_TOTAL_RETRANS"), (long) TcpInfo.TOTAL_RETRANS);
        assertEquals(v.get("TI_BYTES_ACKED"), (long) TcpInfo.BYTES_ACKED);
        assertEquals(v.get("TI_BYTES_RECEIVED"), (long) TcpInfo.BYTES_RECEIVED);
        assertEquals(v.get("TI_MIN_RTT"), (long) TcpInfo.MIN_RTT);
        assertEquals(v.get("TI_DELIVERY_RATE"), (long) TcpInfo.DELIVERY_RATE);
        assertEquals(v.get("F_SETPIPE_SZ"), (long) Native.F_SETPIPE_SZ);
        assertEquals(v.get("SPLICE_F_MORE"), (long) Native.SPLICE_F_MORE);
        assertEquals(v.get("EPOLLET"), (long) Native.EPOLLET & 0xFFFFFFFFL);
        assertEquals(v.get("MSG_CMSG_CLOEXEC"), (long) Native.MSG_CMSG_CLOEXEC);
        assertEquals(v.get("MSG_NOSIGNAL"), (long) Native.MSG_NOSIGNAL);
        assertEquals(v.get("SOCK_NONBLOCK"), (long) Native.SOCK_NONBLOCK);
        assertEquals(v.get("SOCK_CLOEXEC"), (long) Native.SOCK_CLOEXEC);
        assertEquals(v.get("SO_PEERCRED"), (long) Native.SO_PEERCRED);
        assertEquals(v.get("SO_DOMAIN"), (long) Native.SO_DOMAIN);
        assertEquals(v.get("SO_PROTOCOL"), (long) Native.SO_PROTOCOL);
        assertEquals(v.get("SO_ACCEPTCONN"), (long) Native.SO_ACCEPTCONN);
        assertEquals(v.get("F_ADD_SEALS"), (long) Native.F_ADD_SEALS);
        assertEquals(v.get("F_GET_SEALS"), (long) Native.F_GET_SEALS);
        assertEquals(v.get("EPOLLRDHUP"), (long) Native.EPOLLRDHUP);
        assertEquals(v.get("POLLRDHUP"), (long) Native.POLLRDHUP);
        assertEquals(v.get("EFD_NONBLOCK"), (long) Native.EFD_NONBLOCK);
        assertEquals(v.get("O_NONBLOCK"), (long) Native.O_NONBLOCK);
        assertEquals(v.get("F_DUPFD_CLOEXEC"), (long) Native.F_DUPFD_CLOEXEC);
        assertEquals(v.get("SO_PEERGROUPS"), (long) Native.SO_PEERGROUPS);
        assertEquals(v.get("PASSWD_SIZE"), (long) Layout.PASSWD_SIZE);
        assertEquals(v.get("PW_UID"), (long) Layout.PW_UID);
        assertEquals(v.get("PW_GID"), (long) Layout.PW_GID);
        assertEquals(v.get("GROUP_SIZE"), (long) Layout.GROUP_SIZE);
        assertEquals(v.get("GR_GID"), (long) Layout.GR_GID);
        assertEquals(v.get("ERANGE"), (long) Errno.ERANGE);
        assertEquals(v.get("ENODATA"), (long) Errno.ENODATA);
        assertEquals(v.get("ESRCH"), (long) Errno.ESRCH);
    }

    @Test
    void errnoIsNamedAndDescribed() {
        assertEquals("EPIPE (Broken pipe)", Errno.describe(Errno.EPIPE));
        assertEquals("errno 4095", Errno.name(4095));
        NativeIoException e = new NativeIoException("splice", Errno.EPIPE);
        assertEquals("splice() failed: EPIPE (Broken pipe)", e.getMessage());
    }
}
