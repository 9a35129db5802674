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
 * </pre>
 * N and TASK are decimal, without sign or leading zero, so that a name parses back to the same
 * string. Anything else in LISTEN_FDS is not a stored entry: the socket-activated control listener
 * ({@link #LISTENER}, or whatever the .socket unit names it) or junk, which recovery closes.
 */
public final class FdStoreNames {
    /** The control listener's name in the shipped .socket unit (FileDescriptorName=). */
    public static final String LISTENER = "control";

    /** What an entry holds. */
    public enum Kind {
        CONNECTION("c"), PAIR("p"), TASK("t"), EXTRA("x.");

        private final String prefix;

        Kind(String prefix) {
            this.prefix = prefix;
        }

        /** The name's prefix: "c", "p", "t" or "x.". */
        public String prefix() {
            return prefix;
        }
    }

    /**
     * A parsed entry name: a kind and its number (CONNECTION, PAIR, TASK; 0 for EXTRA) or its name
     * (EXTRA, without the "x."; null otherwise). {@link #toString} is the name as stored.
     */
    public record Name(Kind kind, long number, String extra) {
        public Name {
            if (kind == Kind.EXTRA ? extra == null || number != 0 : extra != null || number < 0) {
                throw new IllegalArgumentException("not an fd store name: " + kind + " " + number + " " + extra);
            }
        }

        @Override
        public String toString() {
            return kind == Kind.EXTRA ? kind.prefix + extra : kind.prefix + number;
        }
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
     * not one of c&lt;N&gt;, p&lt;TASK&gt;, t&lt;TASK&gt;, x.&lt;NAME&gt;.
     */
    public static Name parse(String name) {
        Name n = tryParse(name);
        if (n == null) {
            throw new IllegalArgumentException("fd store entry \"" + name + "\" is not c<N>, p<TASK>, t<TASK> or x.<NAME>");
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
