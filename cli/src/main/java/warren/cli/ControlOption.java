package warren.cli;

import java.nio.file.Path;
import picocli.CommandLine.Option;

/** {@code --control PATH}, the daemon's control socket (a mixin of every subcommand that talks to one). */
public final class ControlOption {
    @Option(names = "--control", required = true, paramLabel = "PATH",
            description = "the daemon's control socket (AF_UNIX SOCK_SEQPACKET)")
    Path path;

    public Path path() {
        return path;
    }
}
