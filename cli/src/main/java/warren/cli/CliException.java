package warren.cli;

/** A failure to report as one line on stderr, with the exit status to return (1, or 2 for usage). */
public final class CliException extends Exception {
    private final int exitCode;

    public CliException(int exitCode, String message) {
        super(message, null, false, false);
        this.exitCode = exitCode;
    }

    public CliException(String message) {
        this(1, message);
    }

    public int exitCode() {
        return exitCode;
    }
}
