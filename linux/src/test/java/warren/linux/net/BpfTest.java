package warren.linux.net;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.HexFormat;
import org.junit.jupiter.api.Test;

/**
 * The assembler's encodings against the bytes gcc produced for the programs measured in
 * /work/notes/mq/mq.c ({@code struct bpf_insn prog_low16[]}, {@code prog_port[]}, dumped with a
 * small C program that printed their memory).
 */
class BpfTest {
    private static final String MQ_C_LOW16 = "bf16000000000000300000000000000077000000040000001500020006000000"
            + "2800000012000000950000000000000028000000260000009500000000000000";

    private static final String MQ_C_PORT = "bf160000000000003000000000000000bf070000000000007700000004000000"
            + "1500150006000000570700000f00000067070000020000003000000009000000"
            + "1500020006000000150001001100000015000200010000004870000002000000"
            + "9500000000000000507000000000000015000900000000001500020003000000"
            + "150001000b000000150000000c0000005070000008000000570000000f000000"
            + "67000000020000000f0700000000000048700000080000009500000000000000"
            + "4870000004000000950000000000000030000000060000001500020006000000"
            + "1500010011000000150002003a000000280000002a0000009500000000000000"
            + "30000000280000001500020081000000a5000300800000009500000000000000"
            + "280000002c000000950000000000000028000000580000009500000000000000";

    @Test
    void low16IsMqCsProgram() {
        assertEquals(MQ_C_LOW16, HexFormat.of().formatHex(Bpf.bytes(TunSteering.low16())));
        assertEquals(8, TunSteering.low16().length);
    }

    @Test
    void portIsMqCsProgram() {
        assertEquals(MQ_C_PORT, HexFormat.of().formatHex(Bpf.bytes(TunSteering.port())));
        assertEquals(40, TunSteering.port().length);
    }

    @Test
    void fieldsLandInTheirBytes() {
        // code 0x15 (JMP|JEQ|K), dst 3, src 0, off -1, imm 0x80000000
        assertEquals("1503ffff00000080", HexFormat.of().formatHex(Bpf.bytes(new long[] {Bpf.jeq(3, 0x80000000, -1)})));
        assertEquals("bf71000000000000", HexFormat.of().formatHex(Bpf.bytes(new long[] {Bpf.movX(1, 7)})));
        assertEquals("b701000007000000", HexFormat.of().formatHex(Bpf.bytes(new long[] {Bpf.movK(1, 7)})));
        assertThrows(IllegalArgumentException.class, () -> Bpf.insn(0x15, 16, 0, 0, 0));
        assertThrows(IllegalArgumentException.class, () -> Bpf.insn(0x15, 0, 0, 40000, 0));
    }

    @Test
    void queueOfIsTheKernelsUnsignedModulo() {
        assertEquals(1, TunSteering.queueOf(0xffffffff, 2));
        assertEquals(0xffffffffL % 3, TunSteering.queueOf(0xffffffff, 3));
        assertEquals(1, TunSteering.queueOf(7, 3));
    }
}
