package warren.fdpass.net;

import jnr.ffi.Pointer;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * The fields of {@code struct tcp_info} (linux/tcp.h, getsockopt TCP_INFO) that an audit log
 * wants, read once into a snapshot. Offsets are the kernel's (checked by a gcc probe in tests).
 *
 * <pre>
 *   0 u8  tcpi_state          2 u8 tcpi_retransmits
 *  68 u32 tcpi_rtt (us)      72 u32 tcpi_rttvar (us)    80 u32 tcpi_snd_cwnd (segments)
 * 100 u32 tcpi_total_retrans 120 u64 tcpi_bytes_acked  128 u64 tcpi_bytes_received
 * 160 u64 tcpi_delivery_rate (bytes/s)                 148 u32 tcpi_min_rtt (us)
 * </pre>
 */
public record TcpInfo(int state, int rttMicros, int rttVarMicros, int retransmits, int totalRetrans, int sndCwnd,
        int minRttMicros, long bytesAcked, long bytesReceived, long deliveryRate) {
    public static final int STATE = 0;
    public static final int RETRANSMITS = 2;
    public static final int RTT = 68;
    public static final int RTTVAR = 72;
    public static final int SND_CWND = 80;
    public static final int TOTAL_RETRANS = 100;
    public static final int BYTES_ACKED = 120;
    public static final int BYTES_RECEIVED = 128;
    public static final int MIN_RTT = 148;
    public static final int DELIVERY_RATE = 160;
    /** Bytes we ask for; older kernels fill less and say so. */
    public static final int SIZE = 168;

    /** TCP_INFO of a TCP socket, or null when the kernel returned too little (not TCP). */
    public static TcpInfo of(int fd, Pointer scratch) throws NativeIoException {
        int len = Native.getsockopt(fd, Native.IPPROTO_TCP, Native.TCP_INFO, scratch, SIZE);
        if (len < DELIVERY_RATE + 8) {
            return null;
        }
        return new TcpInfo(scratch.getByte(STATE) & 0xFF, scratch.getInt(RTT), scratch.getInt(RTTVAR),
                scratch.getByte(RETRANSMITS) & 0xFF, scratch.getInt(TOTAL_RETRANS), scratch.getInt(SND_CWND),
                scratch.getInt(MIN_RTT), scratch.getLong(BYTES_ACKED), scratch.getLong(BYTES_RECEIVED),
                scratch.getLong(DELIVERY_RATE));
    }

    public static TcpInfo of(int fd) throws NativeIoException {
        return of(fd, Native.allocate(SIZE));
    }

    /** TCP states (include/net/tcp_states.h). */
    public static String stateName(int s) {
        String[] names = {"?", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE",
            "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV"};
        return s >= 0 && s < names.length ? names[s] : "state " + s;
    }

    public static final int TCP_CLOSE = 7;
    public static final int TCP_LISTEN = 10;
}
