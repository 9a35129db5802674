package warren.daemon;

/**
 * The one owner of the names of systemd's fd store entries (fdstore.proto; {@code FDNAME=} of
 * sd_pid_notify_with_fds(3)): every writer formats its names here and recovery parses them here.
 *
 * <pre>
 *   c&lt;N&gt;      CONNECTION  control connection N (its socket)
 *   p&lt;TASK&gt;   PAIR        a relay pair of task TASK (sockets, pinned pipes, a sealed StoredPair)
 *   t&lt;TASK&gt;   TASK        another daemon's task (its fds and a sealed StoredTask)
 *   x.&lt;NAME&gt;  EXTRA       one fd a handler needs back (Bumblebee's x.tun, x.netns, ...)
 *   book      BOOK        the pair book: one memfd holding every slot-named pair's description
 *   &lt;SLOT&gt;    SLOT        a relay pair of slot SLOT (sockets, pinned pipes' read ends; its
 *                         description in the book): 1-3 characters, the first never a lowercase letter
 * </pre>
 * N and TASK are decimal, without sign or leading zero, so that a name parses back to the same
 * string. A slot's name is short because systemd passes every stored fd's name in one environment
 * string of at most 128 KiB ({@link FdStoreBudget}): 4 fds under a 3-character name cost 16 bytes
 * a pair, so 8,000 pairs fit where {@code p<TASK>} with its 5 fds (~35 bytes) stopped at ~3,000.
 * Slot numbers are reused (the lowest free one, {@link PairBook}), written in a bijective base:
 * the first character from {@link #SLOT_FIRST} (51: no lowercase letter, so no other kind's name
 * is a slot's), the next from {@link #SLOT_REST} (87); no quote, backslash, '$', '%' or '`'. Anything else in LISTEN_FDS is not a stored entry: the socket-activated control listener
 * ({@link #LISTENER}, or whatever the .socket unit names it) or junk, which recovery closes.
 */
public final class FdStoreNames {
    /** The control listener's name in the shipped .socket unit (FileDescriptorName=). */
    public static final String LISTENER = "control";

    /** What an entry holds. */
    public enum Kind {
        CONNECTION("c"), PAIR("p"), TASK("t"), EXTRA("x."), BOOK("book"), SLOT("");

        private final String prefix;

        Kind(String prefix) {
            this.prefix = prefix;
        }

        /** The name's prefix: "c", "p", "t" or "x."; BOOK's whole name; "" for SLOT. */
        public String prefix() {
            return prefix;
        }
    }

    /**
     * A parsed entry name: a kind and its number (CONNECTION, PAIR, TASK, SLOT; 0 for EXTRA and
     * BOOK) or its name (EXTRA, without the "x."; null otherwise). {@link #toString} is the name as
     * stored.
     */
    public record Name(Kind kind, long number, String extra) {
        public Name {
            if (kind == Kind.EXTRA ? extra == null || number != 0
                    : extra != null || number < 0 || (kind == Kind.BOOK && number != 0)
                            || (kind == Kind.SLOT && number > Integer.MAX_VALUE)) {
                throw new IllegalArgumentException("not an fd store name: " + kind + " " + number + " " + extra);
            }
        }

        @Override
        public String toString() {
            return switch (kind) {
                case EXTRA -> kind.prefix + extra;
                case BOOK -> kind.prefix;
                case SLOT -> slot((int) number);
                default -> kind.prefix + number;
            };
        }
    }

    /** A slot name's first character: 26 capitals and 25 punctuation marks (no lowercase letter). */
    public static final String SLOT_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZ!#&()*+,-./;<=>?@[]^_{|}~";
    /** A slot name's later characters: the first's, lowercase letters and digits. */
    public static final String SLOT_REST = SLOT_FIRST + "abcdefghijklmnopqrstuvwxyz0123456789";
    private static final int F = SLOT_FIRST.length();
    private static final int R = SLOT_REST.length();
    private static final byte[] REST_INDEX = new byte[128];

    static {
        java.util.Arrays.fill(REST_INDEX, (byte) -1);
        for (int i = 0; i < R; i++) {
            REST_INDEX[SLOT_REST.charAt(i)] = (byte) i;
        }
    }

    /** The pair book's name. */
    public static final String BOOK = Kind.BOOK.prefix;

    /**
     * Slot {@code slot}'s name: slots 0-50 one character, the next 4,437 two, the next 386,019
     * three, and so on (bijective: every name is one slot's, and parses back to the same string).
     */
    public static String slot(int slot) {
        if (slot < 0) {
            throw new IllegalArgumentException("a negative fd store slot: " + slot);
        }
        int len = slotNameLength(slot);
        long rest = slot - firstOfLength(len);
        char[] c = new char[len];
        for (int i = len - 1; i > 0; i--) {
            c[i] = SLOT_REST.charAt((int) (rest % R));
            rest /= R;
        }
        c[0] = SLOT_FIRST.charAt((int) rest);
        return new String(c);
    }

    /** How many characters slot {@code slot}'s name has. */
    public static int slotNameLength(long slot) {
        int len = 1;
        long first = 0;
        long count = F;
        while (slot >= first + count) {
            first += count;
            count *= R;
            len++;
        }
        return len;
    }

    /** The first slot whose name has {@code len} characters. */
    private static long firstOfLength(int len) {
        long first = 0;
        long count = F;
        for (int l = 1; l < len; l++) {
            first += count;
            count *= R;
        }
        return first;
    }

    /** The slot {@code s} names, or -1 if it is not a slot's name. */
    private static long slotNumber(String s) {
        int len = s.length();
        if (len < 1 || len > 5) { // 5 characters: ~2.9 billion slots, past int
            return -1;
        }
        int first = SLOT_FIRST.indexOf(s.charAt(0));
        if (first < 0) {
            return -1;
        }
        long v = first;
        for (int i = 1; i < len; i++) {
            char c = s.charAt(i);
            int d = c < 128 ? REST_INDEX[c] : -1;
            if (d < 0) {
                return -1;
            }
            v = v * R + d;
        }
        long n = firstOfLength(len) + v;
        return n > Integer.MAX_VALUE ? -1 : n;
    }

    private FdStoreNames() {}

    /** {@code c<number>}: a control connection. */
    public static String connection(long number) {
        return numbered(Kind.CONNECTION, number);
    }

    /** {@code p<task>}: a relay pair. */
    public static String pair(long task) {
        return numbered(Kind.PAIR, task);
    }

    /** {@code t<task>}: another daemon's task. */
    public static String task(long task) {
        return numbered(Kind.TASK, task);
    }

    /** {@code x.<name>}: a handler's extra; {@code name} non-empty, printable ASCII without ':'. */
    public static String extra(String name) {
        String s = Kind.EXTRA.prefix + name;
        if (!validExtra(s)) {
            throw new IllegalArgumentException("not an fd store extra name: \"" + name + "\"");
        }
        return s;
    }

    /**
     * {@code x.<base>} for {@code index} 0, {@code x.<base><index>} after it: one of several fds of
     * one kind stored one per name (a multi-queue TUN's queues: x.tun, x.tun1, x.tun2...), so that
     * index 0 keeps the name it had before there were several.
     */
    public static String indexedExtra(String base, int index) {
        if (index < 0) {
            throw new IllegalArgumentException("negative index " + index + " for fd store extra \"" + base + "\"");
        }
        return extra(index == 0 ? base : base + index);
    }

    private static String numbered(Kind kind, long number) {
        if (number < 0) {
            throw new IllegalArgumentException("a negative number in an fd store name: " + kind.prefix + number);
        }
        return kind.prefix + number;
    }

    /**
     * The entry {@code name} names; IllegalArgumentException saying which entry and why if it is
     * not one of c&lt;N&gt;, p&lt;TASK&gt;, t&lt;TASK&gt;, x.&lt;NAME&gt;, book or a slot's.
     */
    public static Name parse(String name) {
        Name n = tryParse(name);
        if (n == null) {
            throw new IllegalArgumentException("fd store entry \"" + name
                    + "\" is not c<N>, p<TASK>, t<TASK>, x.<NAME>, book or a slot's name");
        }
        return n;
    }

    /** As {@link #parse}, null for a name that is not a stored entry's. */
    public static Name tryParse(String name) {
        if (name == null || name.isEmpty()) {
            return null;
        }
        if (name.startsWith(Kind.EXTRA.prefix)) {
            return validExtra(name) ? new Name(Kind.EXTRA, 0, name.substring(Kind.EXTRA.prefix.length())) : null;
        }
        if (name.equals(BOOK)) {
            return new Name(Kind.BOOK, 0, null);
        }
        char c0 = name.charAt(0);
        if (c0 < 'a' || c0 > 'z') {
            long slot = slotNumber(name);
            return slot < 0 ? null : new Name(Kind.SLOT, slot, null);
        }
        Kind kind = switch (name.charAt(0)) {
            case 'c' -> Kind.CONNECTION;
            case 'p' -> Kind.PAIR;
            case 't' -> Kind.TASK;
            default -> null;
        };
        long number = kind == null ? -1 : number(name, 1);
        return number < 0 ? null : new Name(kind, number, null);
    }

    /** True if {@code name} is a stored entry's (of any kind), not a listener's. */
    public static boolean isStored(String name) {
        return tryParse(name) != null;
    }

    /** The decimal number at {@code from} to the end: digits only, no leading zero, fits a long; else -1. */
    private static long number(String s, int from) {
        int len = s.length() - from;
        if (len < 1 || len > 19 || (len > 1 && s.charAt(from) == '0')) {
            return -1;
        }
        long n = 0;
        for (int i = from; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c < '0' || c > '9') {
                return -1;
            }
            n = n * 10 + (c - '0');
            if (n < 0) {
                return -1; // past Long.MAX_VALUE
            }
        }
        return n;
    }

    /** systemd's rule for FDNAME= (at most 255 printable ASCII characters, no ':'), with something after "x.". */
    private static boolean validExtra(String s) {
        if (s.length() <= Kind.EXTRA.prefix.length() || s.length() > 255) {
            return false;
        }
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c <= 0x20 || c >= 0x7f || c == ':') {
                return false;
            }
        }
        return true;
    }
}
