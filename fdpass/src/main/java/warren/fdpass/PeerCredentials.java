package warren.fdpass;

/** SO_PEERCRED of a unix socket: the peer's pid, uid and gid when it connected. */
public record PeerCredentials(int pid, int uid, int gid) {
    @Override
    public String toString() {
        return "pid=" + pid + " uid=" + uid + " gid=" + gid;
    }
}
