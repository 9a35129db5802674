package warren.linux.net;

/**
 * A tiny eBPF assembler: each static method returns one instruction ({@code struct bpf_insn},
 * include/uapi/linux/bpf.h) as the {@code long} whose little-endian bytes are its encoding, so a
 * program is a {@code long[]} that reads like the C macros it was measured with
 * (/work/notes/mq/mq.c) and goes into native memory with one {@code putLong} per instruction.
 *
 * <pre>
 * struct bpf_insn (8 bytes): 0 u8 code   1 u8 dst_reg:4 (low nibble), src_reg:4 (high nibble)
 *                            2 s16 off   4 s32 imm
 * </pre>
 *
 * Only what the steering programs use: 64-bit ALU, the legacy packet loads (LD_ABS/LD_IND: the
 * value at skb->data + k (+ src) in host order in r0, r6 must hold the skb; an out-of-bounds load
 * ends the program with 0), conditional jumps against an immediate and exit.
 */
public final class Bpf {
    private Bpf() {}

    // instruction classes
    public static final int LD = 0x00;
    public static final int JMP = 0x05;
    public static final int ALU64 = 0x07;
    // load sizes and modes
    public static final int W = 0x00;
    public static final int H = 0x08;
    public static final int B = 0x10;
    public static final int ABS = 0x20;
    public static final int IND = 0x40;
    // ALU operations
    public static final int ADD = 0x00;
    public static final int AND = 0x50;
    public static final int LSH = 0x60;
    public static final int RSH = 0x70;
    public static final int MOV = 0xb0;
    // jumps
    public static final int JEQ = 0x10;
    public static final int JLT = 0xa0;
    public static final int EXIT = 0x90;
    // operand source
    public static final int K = 0x00;
    public static final int X = 0x08;

    /** The instruction with these fields, as the long of its little-endian encoding. */
    public static long insn(int code, int dst, int src, int off, int imm) {
        if ((code & ~0xff) != 0 || (dst & ~0xf) != 0 || (src & ~0xf) != 0 || off != (short) off) {
            throw new IllegalArgumentException("bad bpf_insn " + code + " " + dst + " " + src + " " + off);
        }
        return code | (long) (dst | src << 4) << 8 | (long) (off & 0xffff) << 16 | (imm & 0xffffffffL) << 32;
    }

    /** dst = src (64 bit). */
    public static long movX(int dst, int src) {
        return insn(ALU64 | MOV | X, dst, src, 0, 0);
    }

    /** dst = k. */
    public static long movK(int dst, int k) {
        return insn(ALU64 | MOV | K, dst, 0, 0, k);
    }

    /** dst = dst OP k, OP one of {@link #ADD}, {@link #AND}, {@link #LSH}, {@link #RSH}, ... */
    public static long aluK(int op, int dst, int k) {
        return insn(ALU64 | op | K, dst, 0, 0, k);
    }

    /** dst += src. */
    public static long addX(int dst, int src) {
        return insn(ALU64 | ADD | X, dst, src, 0, 0);
    }

    /** r0 = packet[k], {@code size} one of {@link #B}, {@link #H}, {@link #W}, host order. */
    public static long ldAbs(int size, int k) {
        return insn(LD | ABS | size, 0, 0, 0, k);
    }

    /** r0 = packet[src + k]. */
    public static long ldInd(int size, int src, int k) {
        return insn(LD | IND | size, 0, src, 0, k);
    }

    /** if dst == k goto pc + 1 + off. */
    public static long jeq(int dst, int k, int off) {
        return insn(JMP | JEQ | K, dst, 0, off, k);
    }

    /** if dst &lt; k (unsigned) goto pc + 1 + off. */
    public static long jlt(int dst, int k, int off) {
        return insn(JMP | JLT | K, dst, 0, off, k);
    }

    /** return r0. */
    public static long exit() {
        return insn(JMP | EXIT, 0, 0, 0, 0);
    }

    /** The program's bytes as the kernel reads them (little-endian instructions). */
    public static byte[] bytes(long[] program) {
        java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(program.length * 8).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        for (long insn : program) {
            b.putLong(insn);
        }
        return b.array();
    }
}
