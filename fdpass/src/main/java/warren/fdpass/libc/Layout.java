package warren.fdpass.libc;

/**
 * Sizes and offsets of the kernel/libc structures warren lays out by hand, for Linux x86_64
 * (LP64). Computed in one place and checked by {@code LayoutTest} against the C definitions.
 *
 * <pre>
 * struct msghdr (56)            struct iovec (16)       struct cmsghdr (16 + data)
 *  0 void   *msg_name            0 void *iov_base        0 size_t cmsg_len
 *  8 u32     msg_namelen         8 size_t iov_len        8 int    cmsg_level
 * 16 iovec  *msg_iov                                     12 int    cmsg_type
 * 24 size_t  msg_iovlen                                  16 data, padded to 8
 * 32 void   *msg_control
 * 40 size_t  msg_controllen     struct ucred (12)       struct epoll_event (12, packed)
 * 48 int     msg_flags           0 pid  4 uid  8 gid     0 u32 events  4 u64 data
 *
 * struct pollfd (8): 0 int fd, 4 short events, 6 short revents
 * struct sockaddr_un (110): 0 sa_family_t sun_family, 2 char sun_path[108]
 * struct stat (144): 0 st_dev (u64), 8 st_ino (u64), 24 st_mode (u32), 48 st_size (i64)
 *
 * struct passwd (48)            struct group (32)
 *  0 char  *pw_name              0 char  *gr_name
 *  8 char  *pw_passwd            8 char  *gr_passwd
 * 16 uid_t  pw_uid              16 gid_t  gr_gid
 * 20 gid_t  pw_gid              24 char **gr_mem
 * 24 char  *pw_gecos
 * 32 char  *pw_dir
 * 40 char  *pw_shell
 * </pre>
 */
public final class Layout {
    private Layout() {}

    public static final int MSGHDR_SIZE = 56;
    public static final int MSG_NAME = 0;
    public static final int MSG_NAMELEN = 8;
    public static final int MSG_IOV = 16;
    public static final int MSG_IOVLEN = 24;
    public static final int MSG_CONTROL = 32;
    public static final int MSG_CONTROLLEN = 40;
    public static final int MSG_FLAGS = 48;

    /** struct mmsghdr: a msghdr, then unsigned int msg_len, padded to 64. */
    public static final int MMSGHDR_SIZE = 64;
    public static final int MMSG_LEN = 56;

    public static final int IOVEC_SIZE = 16;
    public static final int IOV_BASE = 0;
    public static final int IOV_LEN = 8;

    public static final int CMSG_HDR_SIZE = 16;
    public static final int CMSG_LEN_OFF = 0;
    public static final int CMSG_LEVEL = 8;
    public static final int CMSG_TYPE = 12;
    private static final int CMSG_ALIGN = 8;

    public static final int UCRED_SIZE = 12;

    public static final int EPOLL_EVENT_SIZE = 12;
    public static final int EPOLL_EVENTS = 0;
    public static final int EPOLL_DATA = 4;

    public static final int POLLFD_SIZE = 8;

    public static final int SOCKADDR_UN_SIZE = 110;
    public static final int SUN_PATH_OFFSET = 2;
    public static final int SUN_PATH_MAX = 108;

    public static final int STAT_SIZE = 144;
    public static final int ST_DEV = 0;
    public static final int ST_INO = 8;
    public static final int ST_MODE = 24;
    public static final int ST_SIZE = 48;

    public static final int PASSWD_SIZE = 48;
    public static final int PW_UID = 16;
    public static final int PW_GID = 20;
    public static final int GROUP_SIZE = 32;
    public static final int GR_GID = 16;

    /** CMSG_ALIGN(n): round up to the alignment of size_t. */
    public static int cmsgAlign(int n) {
        return (n + CMSG_ALIGN - 1) & ~(CMSG_ALIGN - 1);
    }

    /** CMSG_LEN(n): header plus n data bytes (the value of cmsg_len). */
    public static int cmsgLen(int dataLen) {
        return CMSG_HDR_SIZE + dataLen;
    }

    /** CMSG_SPACE(n): header plus n data bytes, padded (the buffer space one cmsg takes). */
    public static int cmsgSpace(int dataLen) {
        return CMSG_HDR_SIZE + cmsgAlign(dataLen);
    }
}
