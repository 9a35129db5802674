package warren.daemon.control;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import warren.fdpass.PeerCredentials;
import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * The uids and gids a role is given to, from a config value: comma-separated entries
 * {@code uid:N}, {@code gid:N}, {@code user:NAME}, {@code group:NAME}. Names are resolved once,
 * when the value is parsed (through NSS, like id(1)); an unknown name, a bad number or an unknown
 * prefix is an {@link IllegalArgumentException} with one line saying which. A peer matches when
 * its uid is listed or its primary gid or one of its supplementary groups is
 * ({@link PeerCredentials#inGroup}). {@link #toString} gives the entries as written, so a printed
 * config reads back the same (names are resolved again then).
 */
public final class Principals {
    /** No entry: the role's documented default applies. */
    public static final Principals NONE = new Principals("", new int[0], new int[0]);

    private final String text;
    private final int[] uids;
    private final int[] gids;

    private Principals(String text, int[] uids, int[] gids) {
        this.text = text;
        this.uids = uids;
        this.gids = gids;
    }

    /** Exactly these uids and gids (for defaults computed at start). */
    public static Principals of(int[] uids, int[] gids) {
        List<String> parts = new ArrayList<>();
        for (int u : uids) {
            parts.add("uid:" + Integer.toUnsignedString(u));
        }
        for (int g : gids) {
            parts.add("gid:" + Integer.toUnsignedString(g));
        }
        return new Principals(String.join(", ", parts), uids.clone(), gids.clone());
    }

    /** Parses and resolves a config value; "" is {@link #NONE}. */
    public static Principals parse(String value) {
        String v = value.strip();
        if (v.isEmpty()) {
            return NONE;
        }
        List<Integer> uids = new ArrayList<>();
        List<Integer> gids = new ArrayList<>();
        List<String> entries = new ArrayList<>();
        for (String raw : v.split(",", -1)) {
            String e = raw.strip();
            int colon = e.indexOf(':');
            if (colon <= 0 || colon == e.length() - 1) {
                throw new IllegalArgumentException("entry '" + e + "' is not uid:N, gid:N, user:NAME or group:NAME");
            }
            String kind = e.substring(0, colon).strip().toLowerCase(Locale.ROOT);
            String what = e.substring(colon + 1).strip();
            switch (kind) {
                case "uid": uids.add(id(what, e)); break;
                case "gid": gids.add(id(what, e)); break;
                case "user": uids.add(resolve(what, true)); break;
                case "group": gids.add(resolve(what, false)); break;
                default:
                    throw new IllegalArgumentException("entry '" + e + "': '" + kind
                            + "' is not one of uid, gid, user, group");
            }
            entries.add(kind + ":" + what);
        }
        return new Principals(String.join(", ", entries), uids.stream().mapToInt(Integer::intValue).toArray(),
                gids.stream().mapToInt(Integer::intValue).toArray());
    }

    private static int id(String n, String entry) {
        long v;
        try {
            v = Long.parseLong(n);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("entry '" + entry + "': '" + n + "' is not a number");
        }
        if (v < 0 || v > 0xFFFF_FFFEL) { // (uid_t) -1 means "no change" to the kernel, never an id
            throw new IllegalArgumentException("entry '" + entry + "': " + n + " is not a valid id");
        }
        return (int) v;
    }

    private static int resolve(String name, boolean user) {
        int id;
        try {
            id = user ? Native.getpwnam(name) : Native.getgrnam(name);
        } catch (NativeIoException e) {
            throw new IllegalArgumentException("cannot look up " + (user ? "user" : "group") + " '" + name + "': "
                    + e.getMessage());
        }
        if (id == -1) {
            throw new IllegalArgumentException("unknown " + (user ? "user" : "group") + " '" + name + "'");
        }
        return id;
    }

    /** Both sets (this one's entries first). */
    public Principals plus(Principals other) {
        if (other.isEmpty()) {
            return this;
        }
        int[] u = java.util.stream.IntStream.concat(Arrays.stream(uids), Arrays.stream(other.uids)).toArray();
        int[] g = java.util.stream.IntStream.concat(Arrays.stream(gids), Arrays.stream(other.gids)).toArray();
        return new Principals(isEmpty() ? other.text : text + ", " + other.text, u, g);
    }

    public boolean isEmpty() {
        return uids.length == 0 && gids.length == 0;
    }

    /** True if the peer's uid is listed, or its primary gid or a supplementary group is. */
    public boolean matches(PeerCredentials p) {
        for (int u : uids) {
            if (u == p.uid()) {
                return true;
            }
        }
        for (int g : gids) {
            if (p.inGroup(g)) {
                return true;
            }
        }
        return false;
    }

    public int[] uids() {
        return uids.clone();
    }

    public int[] gids() {
        return gids.clone();
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Principals p && Arrays.equals(p.uids, uids) && Arrays.equals(p.gids, gids);
    }

    @Override
    public int hashCode() {
        return 31 * Arrays.hashCode(uids) + Arrays.hashCode(gids);
    }

    /** The entries as a config value (names kept as written). */
    @Override
    public String toString() {
        return text;
    }
}
