package warren.cli;

/** A failure to report as one line on stderr, with the exit status to return (1, or 2 for usage). */
public final class CliException extends Exception {
    private final int exitCode;
    private final warren.control.v1.Error.Code code;

    public CliException(int exitCode, String message) {
        this(exitCode, message, null);
    }

    /** The daemon answered {@code Error{code}}. */
    public CliException(int exitCode, String message, warren.control.v1.Error.Code code) {
        super(message, null, false, false);
        this.exitCode = exitCode;
        this.code = code;
    }

    /** The daemon's error code, or null when the failure was not an Error answer. */
    public warren.control.v1.Error.Code code() {
        return code;
    }

    public CliException(String message) {
        this(1, message);
    }

    public int exitCode() {
        return exitCode;
    }
}
