package warren.cli;

import picocli.CommandLine.IVersionProvider;
import warren.daemon.Version;

/** {@code --version} of every command: the build's version (one source: {@link Version}). */
public final class VersionProvider implements IVersionProvider {
    @Override
    public String[] getVersion() {
        return new String[] {"warren " + Version.string()};
    }
}
