package warren.systemd;

import warren.fdpass.libc.Native;
import warren.fdpass.libc.NativeIoException;

/**
 * Is stderr connected to journald? systemd sets {@code $JOURNAL_STREAM} to {@code "DEV:INODE"}
 * (decimal {@code st_dev} and {@code st_ino}) of the stream socket it connects a service's stdout
 * and stderr to (systemd.exec(5), "Environment variables in spawned processes"). The exact test,
 * as systemd.exec(5) recommends, is that fd 2's fstat(2) names that device and inode: the
 * variable alone is not enough, since it is inherited by children whose stderr was redirected
 * elsewhere (a shell pipeline, a file, a terminal).
 *
 * <p>Only then do log lines carry the sd-daemon priority prefix ({@code "<3>"}, sd-daemon(3)):
 * journald strips it and stores the priority; on a terminal or in a file it would be noise.
 */
public final class JournalStream {
    private JournalStream() {}

    /** True when fd 2 is the stream named by {@code $JOURNAL_STREAM}. */
    public static boolean stderrIsJournal() {
        return connects(2, System.getenv("JOURNAL_STREAM"));
    }

    /** True when {@code fd} is the stream named by {@code journalStream} ("DEV:INODE"; null: false). */
    public static boolean connects(int fd, String journalStream) {
        if (journalStream == null || journalStream.isEmpty()) {
            return false;
        }
        try {
            long[] st = Native.fstat(fd);
            return matches(journalStream, st[2], st[3]);
        } catch (NativeIoException e) {
            return false; // fd closed: nothing is connected
        }
    }

    /** True when {@code journalStream} is exactly {@code "DEV:INODE"} of the given device and inode. */
    public static boolean matches(String journalStream, long dev, long ino) {
        int colon = journalStream.indexOf(':');
        if (colon <= 0 || colon == journalStream.length() - 1) {
            return false;
        }
        try {
            return Long.parseUnsignedLong(journalStream.substring(0, colon)) == dev
                    && Long.parseUnsignedLong(journalStream.substring(colon + 1)) == ino;
        } catch (NumberFormatException e) {
            return false;
        }
    }
}
