package warren.daemon;

import java.util.BitSet;
import jnr.ffi.Pointer;
import warren.fdpass.Fd;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;
import warren.systemd.SdNotify;

/**
 * The pair book: one memfd in systemd's fd store ({@link FdStoreNames#BOOK}) holding the
 * description of every relay pair stored under a slot's name ({@link FdStoreNames#slot}), so that a
 * pair's entry is its 4 fds under a name of 1-3 characters instead of 5 fds under
 * {@code p<TASK>} (a sealed memfd each): systemd passes all names in one 128 KiB string
 * ({@link FdStoreBudget}) and hands back about half its RLIMIT_NOFILE of fds.
 *
 * <p>Layout: slot {@code s} at offset {@code s * SLOT_BYTES}: a little-endian u32 length, then
 * that many bytes of the pair's {@code StoredPair}. A slot is 1 KiB and aligned, so a write never
 * crosses a page and a kill -9 leaves it whole or untouched. Slots are claimed lowest first (short
 * names) and freed after the entry's FDSTOREREMOVE was sent: systemd reads the notify socket in
 * order, so a slot's next entry is stored after the last one was removed. A description is
 * written before its fds are stored; the recovery trusts a description only if its inodes are
 * those of the fds stored under the slot's name.
 *
 * <p>One per daemon (its {@code ControlServer}), shared by every loop's relay (synchronized: one
 * call per pair start and end, nothing per byte). The memfd is created and stored at the first
 * claim, or adopted from a predecessor (upgrade: the control item; crash: the store), which
 * stored it already. Its figures feed {@link FdStoreBudget}: the slots in use and their names'
 * exact length.
 */
public final class PairBook implements AutoCloseable {
    /** One slot's size: a u32 length and up to {@link #MAX_DESCRIPTION} bytes. */
    public static final int SLOT_BYTES = 1024;
    /** The longest description a slot holds; a longer one is stored as {@code p<TASK>}. */
    public static final int MAX_DESCRIPTION = SLOT_BYTES - 4;
    /** A slot pair's fds in the store: a, b and its pinned pipes' read ends. */
    public static final int FDS_PER_PAIR = 4;

    private final BitSet used = new BitSet();
    private int[] refs = new int[64];
    private int inUse;
    private long nameBytes;
    private Fd fd;
    private boolean stored;
    private boolean closed;
    private Pointer buf;

    /** Claims the lowest free slot; counted at once in {@link #inUse} and {@link #nameBytes}. */
    public synchronized int claim() {
        int s = used.nextClearBit(0);
        take(s);
        return s;
    }

    /**
     * A slot a predecessor's pair holds (upgrade, pre-copy, crash recovery). Counted: in a
     * successor a pre-copied pair that ended and the pair the predecessor gave its slot next can
     * be marked in either order ({@link #release} of the first then leaves the second's).
     */
    public synchronized void mark(int slot) {
        if (slot >= 0) {
            take(slot);
        }
    }

    private void take(int s) {
        if (s >= refs.length) {
            refs = java.util.Arrays.copyOf(refs, Math.max(s + 1, refs.length * 2));
        }
        if (refs[s]++ == 0) {
            used.set(s);
            inUse++;
            nameBytes += names(s);
        }
    }

    /** Frees {@code slot} once every holder let it go (its entry's removal was sent); one not held is ignored. */
    public synchronized void release(int slot) {
        if (slot >= 0 && slot < refs.length && refs[slot] > 0 && --refs[slot] == 0) {
            used.clear(slot);
            inUse--;
            nameBytes -= names(slot);
        }
    }

    /** What a slot's entry adds to LISTEN_FDNAMES: its name and a ':' for each of its fds. */
    static long names(long slot) {
        return FDS_PER_PAIR * (1L + FdStoreNames.slotNameLength(slot));
    }

    /** Slots in use. */
    public synchronized int inUse() {
        return inUse;
    }

    /** The LISTEN_FDNAMES bytes the slots in use take (each fd's name and separator). */
    public synchronized long nameBytes() {
        return nameBytes;
    }

    /**
     * Writes {@code description} into {@code slot}, creating and storing the book first if this
     * daemon has none (false if systemd could not be told: the caller stores the pair otherwise).
     */
    public synchronized boolean write(int slot, byte[] description, SdNotify notify) throws NativeIoException {
        if (description.length > MAX_DESCRIPTION) {
            throw new IllegalArgumentException("a description of " + description.length + " bytes; a slot holds "
                    + MAX_DESCRIPTION);
        }
        if (closed) {
            return false; // at exit: never a second book
        }
        if (!stored) {
            if (fd == null) {
                // growing and writing stay allowed (a successor writes on); shrinking never is
                fd = Fd.adopt(Native.memfd_create("warren-" + FdStoreNames.BOOK,
                        Native.MFD_CLOEXEC | Native.MFD_ALLOW_SEALING));
                Native.fcntl(fd.get(), Native.F_ADD_SEALS, Native.F_SEAL_SHRINK);
            }
            if (!notify.fdStore(FdStoreNames.BOOK, java.util.List.of(fd))) {
                return false;
            }
            stored = true;
        }
        if (buf == null) {
            buf = Native.allocate(SLOT_BYTES);
        }
        int n = description.length;
        buf.putByte(0, (byte) n);
        buf.putByte(1, (byte) (n >>> 8));
        buf.putByte(2, (byte) 0);
        buf.putByte(3, (byte) 0);
        buf.put(4, description, 0, n);
        long off = (long) slot * SLOT_BYTES;
        int done = 0;
        while (done < n + 4) {
            done += (int) Native.pwrite(fd.get(), buf.slice(done), n + 4 - done, off + done);
        }
        return true;
    }

    /** Takes a predecessor's book (stored in systemd already); a second one is closed. */
    public synchronized void adopt(Fd book) {
        if (fd != null || closed) {
            book.close();
            return;
        }
        fd = book;
        stored = true;
    }

    /** The book as stored (a view: the book keeps it), or null if none is. */
    public synchronized Fd storedFd() {
        return stored ? Fd.adopt(fd.get()) : null;
    }

    @Override
    public synchronized void close() {
        closed = true;
        if (fd != null) {
            fd.close();
            fd = null;
            stored = false;
        }
    }

    // ---- reading, after a crash

    /**
     * A book's content as a recovery reads it once: every slot written so far (at most
     * {@code maxBytes}, else IllegalArgumentException).
     */
    public static byte[] read(Fd book, long maxBytes) throws NativeIoException {
        long size = Native.fstat(book.get())[1];
        if (size > maxBytes) {
            throw new IllegalArgumentException("a pair book of " + size + " bytes; at most " + maxBytes);
        }
        byte[] out = new byte[(int) size];
        // shorter than its size said: what was read stands, the rest reads as empty slots
        warren.fdpass.Memfd.readInto(book, out, 0);
        return out;
    }

    /** Slot {@code slot}'s description in {@code content} ({@link #read}) as [offset, length], or null if empty or bad. */
    public static int[] find(byte[] content, long slot) {
        long off = slot * SLOT_BYTES;
        if (slot < 0 || off + 4 > content.length) {
            return null;
        }
        int o = (int) off;
        int n = (content[o] & 0xFF) | (content[o + 1] & 0xFF) << 8 | (content[o + 2] & 0xFF) << 16
                | (content[o + 3] & 0xFF) << 24;
        if (n <= 0 || n > MAX_DESCRIPTION || o + 4 + n > content.length) {
            return null;
        }
        return new int[] {o + 4, n};
    }
}
