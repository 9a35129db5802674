package warren.daemon.client;

import java.io.BufferedOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.OutputStream;

/**
 * Writes a classic pcap file of raw IP packets with nanosecond timestamps (what tcpdump, tshark
 * and Wireshark read as {@code LINKTYPE_RAW}). Big-endian; readers tell the byte order and the
 * timestamp resolution from the magic number.
 *
 * <pre>
 * global header (24 bytes)                      record header (16 bytes), then incl_len bytes
 *  0 magic 0xa1b23c4d (nanosecond stamps)        0 ts_sec   seconds since the epoch
 *  4 version 2.4 (u16 major, u16 minor)          4 ts_nsec  nanoseconds within the second
 *  8 thiszone 0, 12 sigfigs 0                    8 incl_len bytes kept in the file
 * 16 snaplen                                    12 orig_len the packet's length on the wire
 * 20 linktype 101 (LINKTYPE_RAW: IPv4 or IPv6 by the first nibble)
 * </pre>
 * Written by hand rather than with pcap4j: pcap4j-core's PcapDumper writes through libpcap's
 * pcap_dump_open/pcap_dump by JNA, so the CLI would need libpcap (and JNA, slf4j) at run time
 * to write these 40 bytes of headers.
 */
public final class PcapWriter implements AutoCloseable {
    public static final int MAGIC_NANOS = 0xa1b23c4d;
    public static final int LINKTYPE_RAW = 101;
    public static final int GLOBAL_HEADER = 24;
    public static final int RECORD_HEADER = 16;

    private final DataOutputStream out;
    private final int snaplen;
    private long packets;

    /** Writes the global header; {@code snaplen} is the most bytes any record keeps. */
    public PcapWriter(OutputStream out, int snaplen) throws IOException {
        this.out = new DataOutputStream(new BufferedOutputStream(out, 1 << 16));
        this.snaplen = snaplen;
        this.out.writeInt(MAGIC_NANOS);
        this.out.writeShort(2);
        this.out.writeShort(4);
        this.out.writeInt(0);
        this.out.writeInt(0);
        this.out.writeInt(snaplen);
        this.out.writeInt(LINKTYPE_RAW);
    }

    /** Appends one packet ({@code data[off, off + len)}, cut to snaplen) seen at {@code unixNanos}. */
    public void write(long unixNanos, byte[] data, int off, int len, int originalLength) throws IOException {
        int kept = Math.min(len, snaplen);
        out.writeInt((int) Math.floorDiv(unixNanos, 1_000_000_000L));
        out.writeInt((int) Math.floorMod(unixNanos, 1_000_000_000L));
        out.writeInt(kept);
        out.writeInt(Math.max(originalLength, kept));
        out.write(data, off, kept);
        packets++;
    }

    public long packets() {
        return packets;
    }

    public void flush() throws IOException {
        out.flush();
    }

    @Override
    public void close() throws IOException {
        out.close();
    }
}
