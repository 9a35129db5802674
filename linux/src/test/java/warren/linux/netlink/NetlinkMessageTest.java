package warren.linux.netlink;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.Test;

/** The byte layout {@link NetlinkMessage} writes and {@link NetlinkAttributes} reads back. */
class NetlinkMessageTest {
    private static byte[] bytes(NetlinkMessage m) {
        byte[] b = new byte[m.length()];
        m.buffer().get(0, b, 0, b.length);
        return b;
    }

    @Test
    void aMessageWithNestedAttributesIsLaidOutAsTheKernelReadsIt() {
        NetlinkMessage m = new NetlinkMessage(256);
        // leave garbage in the buffer: every byte of the next message must be written
        m.buffer().setMemory(0, 256, (byte) 0xAA);
        m.begin(0x0100, NetlinkMessage.NLM_F_REQUEST | NetlinkMessage.NLM_F_ACK, 7, 4).familyU8(0, 2).familyBe16(2, 10);
        int outer = m.nestStart(1);
        m.attrU8(1, 6).attrBe16(2, 0x1234);
        m.nestEnd(outer);
        m.attrBe32(7, 0x01020304).attrU32(4, 0x0A0B0C0D).attrString(3, "ab");
        m.end();
        ByteBuffer e = ByteBuffer.allocate(m.length()).order(ByteOrder.LITTLE_ENDIAN);
        e.putInt(m.length()).putShort((short) 0x0100).putShort((short) 5).putInt(7).putInt(0); // nlmsghdr
        e.put((byte) 2).put((byte) 0).put((byte) 0).put((byte) 10);                         // nfgenmsg
        e.putShort((short) 20).putShort((short) (1 | NetlinkMessage.NLA_F_NESTED));           // nest, 4 + 8 + 8
        e.putShort((short) 5).putShort((short) 1).put((byte) 6).put(new byte[3]);             // u8, padded
        e.putShort((short) 6).putShort((short) 2).put((byte) 0x12).put((byte) 0x34).put(new byte[2]);
        e.putShort((short) 8).putShort((short) 7).put(new byte[] {1, 2, 3, 4});                // be32
        e.putShort((short) 8).putShort((short) 4).putInt(0x0A0B0C0D);                         // host u32
        e.putShort((short) 7).putShort((short) 3).put(new byte[] {'a', 'b', 0, 0});            // "ab\0", padded
        assertEquals(16 + 4 + 20 + 8 + 8 + 8, m.length());
        assertArrayEquals(e.array(), bytes(m));
    }

    @Test
    void messagesOfABatchFollowEachOtherAndResetStartsAgain() {
        NetlinkMessage m = new NetlinkMessage(128);
        m.begin(0x10, 1, 1, 4).end();
        m.begin(0x0a00, 5, 2, 4).attrU8(1, 9).end();
        assertEquals(20 + 28, m.length());
        Pointer b = m.buffer();
        assertEquals(20, b.getInt(0));
        assertEquals(28, b.getInt(20));
        assertEquals(2, b.getInt(28));
        assertEquals(0, m.reset().length());
    }

    @Test
    void aMessageLargerThanItsBufferIsRefused() {
        NetlinkMessage m = new NetlinkMessage(32);
        m.begin(1, 1, 1, 4);
        assertThrows(IllegalStateException.class, () -> m.attr(1, new byte[16]));
    }

    @Test
    void attributesAreWalkedWithBoundsChecks() {
        NetlinkMessage m = new NetlinkMessage(128);
        m.begin(1, 1, 1, 0);
        int n = m.nestStart(2);
        m.attrBe16(3, 443).attr(4, new byte[] {10, 0, 0, 1});
        m.nestEnd(n);
        m.attrBe32(5, 77);
        m.end();
        NetlinkAttributes a = new NetlinkAttributes(m.buffer(), 16, m.length());
        assertTrue(a.next());
        assertEquals(2, a.type(), "NLA_F_NESTED is masked off");
        NetlinkAttributes in = a.nested();
        assertTrue(in.next());
        assertEquals(443, in.be16());
        assertTrue(in.next());
        assertArrayEquals(new byte[] {10, 0, 0, 1}, in.bytes());
        assertFalse(in.next());
        assertTrue(a.next());
        assertEquals(77, a.be32());
        assertFalse(a.next());

        // an attribute claiming more than is there stops the walk
        m.buffer().putShort(16, (short) 200);
        assertFalse(new NetlinkAttributes(m.buffer(), 16, m.length()).next());
        m.buffer().putShort(16, (short) 2);
        assertFalse(new NetlinkAttributes(m.buffer(), 16, m.length()).next());
    }
}
