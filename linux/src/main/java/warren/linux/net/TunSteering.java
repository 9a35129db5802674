package warren.linux.net;

import static warren.linux.net.Bpf.AND;
import static warren.linux.net.Bpf.B;
import static warren.linux.net.Bpf.H;
import static warren.linux.net.Bpf.LSH;
import static warren.linux.net.Bpf.RSH;
import static warren.linux.net.Bpf.addX;
import static warren.linux.net.Bpf.aluK;
import static warren.linux.net.Bpf.exit;
import static warren.linux.net.Bpf.jeq;
import static warren.linux.net.Bpf.jlt;
import static warren.linux.net.Bpf.ldAbs;
import static warren.linux.net.Bpf.ldInd;
import static warren.linux.net.Bpf.movX;

import java.nio.charset.StandardCharsets;
import jnr.ffi.Pointer;
import warren.fdpass.Fd;
import warren.fdpass.libc.Errno;
import warren.fdpass.libc.Native;

/**
 * Tells a multi-queue TUN device which queue each packet the kernel sends goes to: an eBPF
 * socket-filter program attached with TUNSETSTEERINGEBPF; the kernel takes its return value
 * modulo the number of queues ({@code tun_ebpf_select_queue}). The program belongs to the device:
 * it survives the fd that attached it, the fds being handed to a successor, and queues being added
 * or removed ({@code % numqueues} follows). With a program attached the kernel also stops keeping
 * its own flow table for the device (no per-new-flow allocation under the device's lock).
 *
 * <p>Two programs, both pure functions of the packet, so a loop can compute the same owner from a
 * packet's header ({@link #queueOf}):
 * <ul>
 *   <li>{@link #low16()} (Bumblebee): the low 16 bits of the destination address, IPv4 and IPv6.</li>
 *   <li>{@link #port()} (Fish): the TCP/UDP destination port; an ICMP(v6) echo reply's identifier;
 *       an ICMP(v6) error's quoted packet's source port (IPv4 with options via the IHL; IPv6
 *       without extension headers).</li>
 * </ul>
 *
 * <p>Loading needs CAP_BPF or CAP_SYS_ADMIN in the initial user namespace when
 * {@code kernel.unprivileged_bpf_disabled} is set (the default): without, {@link #load} throws a
 * {@link SteeringException} whose {@link SteeringException#notPermitted()} is true, and the caller
 * falls back to the kernel's flow table (docs/loops.md). Attaching needs only a queue fd. All of
 * this is control path: it allocates.
 */
public final class TunSteering {
    private TunSteering() {}

    /** ioctl(queue fd, TUNSETSTEERINGEBPF, int *prog_fd); prog_fd -1 detaches. */
    public static final long TUNSETSTEERINGEBPF = 0x800454e0L;
    static final int BPF_PROG_LOAD = 5;
    static final int BPF_PROG_TYPE_SOCKET_FILTER = 1;
    private static final int LOG_SIZE = 1 << 16;

    /**
     * <pre>
     * union bpf_attr, BPF_PROG_LOAD (128 bytes used, rest zero):
     *  0 u32 prog_type   4 u32 insn_cnt   8 u64 insns   16 u64 license   24 u32 log_level
     * 28 u32 log_size   32 u64 log_buf   40 u32 kern_version   44 u32 prog_flags   48 char prog_name[16]
     * </pre>
     */
    private static final int ATTR_SIZE = 128;
    private static final int PROG_TYPE = 0;
    private static final int INSN_CNT = 4;
    private static final int INSNS = 8;
    private static final int LICENSE = 16;
    private static final int LOG_LEVEL = 24;
    private static final int LOG_SIZE_OFF = 28;
    private static final int LOG_BUF = 32;
    private static final int PROG_NAME = 48;
    private static final int OBJ_NAME_LEN = 16;

    /**
     * Bumblebee's program (8 instructions): queue = low 16 bits of the destination address, which
     * for Bumblebee's slot addresses is slot + 1. The legacy packet loads read from skb->data,
     * which on a TUN's transmit path is the IP header, and return host-order values.
     */
    public static long[] low16() {
        return new long[] {
            movX(6, 1),        // 0: r6 = skb (LD_ABS/LD_IND read the packet through r6)
            ldAbs(B, 0),       // 1: r0 = version << 4 | ihl
            aluK(RSH, 0, 4),   // 2: r0 = IP version
            jeq(0, 6, 2),      // 3: IPv6 -> 6
            ldAbs(H, 18),      // 4: IPv4: r0 = daddr[2..3]
            exit(),            // 5
            ldAbs(H, 38),      // 6: IPv6: r0 = daddr[14..15]
            exit(),            // 7
        };
    }

    /**
     * Fish's program (40 instructions): queue = the client's port as the reply carries it. r7 is
     * the transport header's offset (IPv4: IHL * 4; IPv6: 40, no extension headers are walked).
     */
    public static long[] port() {
        return new long[] {
            movX(6, 1),        // 0: r6 = skb
            ldAbs(B, 0),       // 1: r0 = version << 4 | ihl
            movX(7, 0),        // 2: r7 = version << 4 | ihl
            aluK(RSH, 0, 4),   // 3: r0 = IP version
            jeq(0, 6, 21),     // 4: IPv6 -> 26
            // IPv4
            aluK(AND, 7, 15),  // 5: r7 = ihl
            aluK(LSH, 7, 2),   // 6: r7 = ihl * 4 = offset of the transport header
            ldAbs(B, 9),       // 7: r0 = protocol
            jeq(0, 6, 2),      // 8: TCP -> 11
            jeq(0, 17, 1),     // 9: UDP -> 11
            jeq(0, 1, 2),      // 10: ICMP -> 13
            ldInd(H, 7, 2),    // 11: TCP/UDP (and any other protocol): r0 = destination port
            exit(),            // 12
            ldInd(B, 7, 0),    // 13: r0 = ICMP type
            jeq(0, 0, 9),      // 14: echo reply -> 24
            jeq(0, 3, 2),      // 15: destination unreachable -> 18
            jeq(0, 11, 1),     // 16: time exceeded -> 18
            jeq(0, 12, 0),     // 17: parameter problem -> 18 (other types too)
            ldInd(B, 7, 8),    // 18: r0 = quoted IP header's version << 4 | ihl
            aluK(AND, 0, 15),  // 19: r0 = quoted ihl
            aluK(LSH, 0, 2),   // 20: r0 = quoted ihl * 4
            addX(7, 0),        // 21: r7 = offset of the quoted transport header - 8
            ldInd(H, 7, 8),    // 22: r0 = quoted source port (the client's)
            exit(),            // 23
            ldInd(H, 7, 4),    // 24: r0 = echo identifier
            exit(),            // 25
            // IPv6 (no extension headers)
            ldAbs(B, 6),       // 26: r0 = next header
            jeq(0, 6, 2),      // 27: TCP -> 30
            jeq(0, 17, 1),     // 28: UDP -> 30
            jeq(0, 58, 2),     // 29: ICMPv6 -> 32
            ldAbs(H, 42),      // 30: r0 = destination port
            exit(),            // 31
            ldAbs(B, 40),      // 32: r0 = ICMPv6 type
            jeq(0, 129, 2),    // 33: echo reply -> 36
            jlt(0, 128, 3),    // 34: error (type < 128) -> 38
            exit(),            // 35: other informational: the type
            ldAbs(H, 44),      // 36: r0 = echo identifier
            exit(),            // 37
            ldAbs(H, 88),      // 38: r0 = quoted source port (40 + 8 + 40)
            exit(),            // 39
        };
    }

    /** The queue the kernel picks for a program's return value: {@code value % queues}, unsigned. */
    public static int queueOf(int value, int queues) {
        return Integer.remainderUnsigned(value, queues);
    }

    /**
     * Loads {@code program} as a BPF_PROG_TYPE_SOCKET_FILTER (license "GPL") named {@code name}
     * (up to 15 of [A-Za-z0-9_.], shown by bpftool). The returned fd is close-on-exec; the
     * caller may close it once attached.
     *
     * @throws SteeringException EPERM ({@link SteeringException#notPermitted()}) when bpf(2) is
     *     not allowed here; any other errno with the verifier's log in the message
     */
    public static Fd load(String name, long[] program) throws SteeringException {
        byte[] code = Bpf.bytes(program);
        Pointer insns = Native.allocate(code.length);
        insns.put(0, code, 0, code.length);
        Pointer license = Native.allocate(4);
        license.put(0, "GPL".getBytes(StandardCharsets.US_ASCII), 0, 3);
        byte[] n = name.getBytes(StandardCharsets.US_ASCII);
        Pointer attr = Native.allocate(ATTR_SIZE);
        attr.putInt(PROG_TYPE, BPF_PROG_TYPE_SOCKET_FILTER);
        attr.putInt(INSN_CNT, program.length);
        attr.putAddress(INSNS, insns.address());
        attr.putAddress(LICENSE, license.address());
        attr.put(PROG_NAME, n, 0, Math.min(n.length, OBJ_NAME_LEN - 1));
        int fd = Native.tryBpf(BPF_PROG_LOAD, attr, ATTR_SIZE);
        // attr holds insns' and license's addresses only: keep the memory until the kernel has read it
        java.lang.ref.Reference.reachabilityFence(insns);
        java.lang.ref.Reference.reachabilityFence(license);
        if (fd >= 0) {
            return Fd.adopt(fd);
        }
        String what = "BPF_PROG_LOAD of TUN steering program " + name;
        if (fd == -Errno.EPERM) {
            throw new SteeringException("bpf", Errno.EPERM, what + ": needs CAP_BPF or CAP_SYS_ADMIN in the initial"
                    + " user namespace (kernel.unprivileged_bpf_disabled); the kernel's flow table steers instead", "");
        }
        // load again with a verifier log, only to explain the failure (as libbpf does)
        Pointer log = Native.allocate(LOG_SIZE);
        attr.putInt(LOG_LEVEL, 1);
        attr.putInt(LOG_SIZE_OFF, LOG_SIZE);
        attr.putAddress(LOG_BUF, log.address());
        int again = Native.tryBpf(BPF_PROG_LOAD, attr, ATTR_SIZE);
        java.lang.ref.Reference.reachabilityFence(insns);
        java.lang.ref.Reference.reachabilityFence(license);
        if (again >= 0) {
            return Fd.adopt(again); // a transient failure (e.g. EAGAIN/ENOMEM) that went away
        }
        throw new SteeringException("bpf", -fd, what, cString(log, LOG_SIZE));
    }

    /** Attaches {@code program} to the device of {@code queue} (any of its queue fds). */
    public static void attach(Fd queue, Fd program) throws SteeringException {
        set(queue, program.get(), "TUNSETSTEERINGEBPF");
    }

    /** Detaches the device's program: the kernel's flow table steers again. */
    public static void detach(Fd queue) throws SteeringException {
        set(queue, -1, "TUNSETSTEERINGEBPF detach");
    }

    private static void set(Fd queue, int progFd, String what) throws SteeringException {
        Pointer arg = Native.allocate(4);
        arg.putInt(0, progFd);
        int rc = Native.tryIoctl(queue.get(), TUNSETSTEERINGEBPF, arg);
        if (rc < 0) {
            throw new SteeringException("ioctl", -rc, what, "");
        }
    }

    private static String cString(Pointer p, int max) {
        byte[] b = new byte[max];
        p.get(0, b, 0, max);
        int end = 0;
        while (end < max && b[end] != 0) {
            end++;
        }
        return new String(b, 0, end, StandardCharsets.US_ASCII).strip();
    }
}
