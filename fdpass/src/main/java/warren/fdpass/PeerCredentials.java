package warren.fdpass;

import java.util.Arrays;

/**
 * Who is at the other end of a unix socket, as the kernel recorded it when the peer connected
 * (or called socketpair): SO_PEERCRED's pid, effective uid and gid, and SO_PEERGROUPS's
 * supplementary groups. Neither changes afterwards, whatever the peer does; both are read once,
 * when the socket is wrapped ({@link SeqpacketSocket}).
 */
public record PeerCredentials(int pid, int uid, int gid, int[] groups) {
    private static final int[] NONE = new int[0];

    public PeerCredentials {
        groups = groups == null || groups.length == 0 ? NONE : groups.clone();
    }

    /** Without supplementary groups (a task record handed over by an upgrade, a test). */
    public PeerCredentials(int pid, int uid, int gid) {
        this(pid, uid, gid, NONE);
    }

    /** True if {@code g} is the peer's primary gid or one of its supplementary groups. */
    public boolean inGroup(int g) {
        if (gid == g) {
            return true;
        }
        for (int s : groups) {
            if (s == g) {
                return true;
            }
        }
        return false;
    }

    /** A copy of the supplementary groups. */
    @Override
    public int[] groups() {
        return groups.clone();
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof PeerCredentials p && p.pid == pid && p.uid == uid && p.gid == gid
                && Arrays.equals(p.groups, groups);
    }

    @Override
    public int hashCode() {
        return (31 * (31 * pid + uid) + gid) * 31 + Arrays.hashCode(groups);
    }

    @Override
    public String toString() {
        return "pid=" + pid + " uid=" + uid + " gid=" + gid;
    }
}
