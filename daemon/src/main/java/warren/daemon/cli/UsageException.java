package warren.daemon.cli;

/** A bad command line; the message is the one line printed before exiting with status 2. */
public final class UsageException extends Exception {
    public UsageException(String message) {
        super(message, null, false, false);
    }
}
