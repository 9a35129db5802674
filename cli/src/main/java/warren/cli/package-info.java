/**
 * cli: the operator's command line over the control protocol ({@code ./warren status|list|cancel|
 * metrics|trace|upgrade}), built with picocli. Each subcommand is one class that connects to a daemon's
 * control socket ({@code --control PATH}) with {@link warren.daemon.client.ControlClient}, sends
 * one request and prints the answer: a human-readable table by default, {@code --json} (one JSON
 * object on one line) for scripts; the daemon's name and version head the output.
 *
 * <p>Exit status, the same for every subcommand: 0 done; 1 the daemon is unreachable, refused the
 * request or the upgrade did not happen (one line on stderr); 2 a bad command line (one line on
 * stderr, naming the subcommand's {@code --help}). {@code --help} and {@code --version} work on
 * every subcommand; the version is the build's ({@link warren.daemon.Version}).
 *
 * <p>Adding a subcommand: write a {@code public final class XCommand implements Callable<Integer>}
 * annotated {@code @Command(name = "x", mixinStandardHelpOptions = true, versionProvider =
 * VersionProvider.class)} (take {@link ControlOption} as a {@code @Mixin} for {@code --control},
 * talk through {@link Control}, throw {@link CliException} for a one-line failure) and add it to
 * the {@code subcommands} list of {@link WarrenCommand}; then route its name to the cli module in
 * the {@code ./warren} launcher (the {@code status|list|...} case in {@code main}).
 */
package warren.cli;
