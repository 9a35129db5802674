package warren.daemon.config;

/** A bad config file or value; the message is one line an operator can act on. */
public final class ConfigException extends Exception {
    public ConfigException(String message) {
        super(message, null, false, false);
    }
}
