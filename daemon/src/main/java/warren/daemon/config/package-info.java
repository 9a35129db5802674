/**
 * Config loading: typed keys with working defaults ({@link warren.daemon.config.ConfigKey}), a
 * {@code key = value} file format, and one clear error line for anything wrong
 * ({@link warren.daemon.config.Config}).
 */
package warren.daemon.config;
