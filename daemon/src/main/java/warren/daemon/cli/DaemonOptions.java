package warren.daemon.cli;

import java.nio.file.Path;

/**
 * The command line every daemon takes:
 * {@code --control PATH [--config FILE] [--print-config] [--help] [--version]}. Values may follow as the next
 * argument or after '='. Anything else is a {@link UsageException} with one line to print.
 */
public record DaemonOptions(Path control, Path config, boolean help, boolean printConfig, Path handoff,
        boolean version) {

    public static String usage(String daemon, String summary) {
        return "usage: ./warren " + daemon + " --control PATH [--config FILE] [--print-config]\n\n"
                + summary + "\n\n"
                + "  --control PATH   the AF_UNIX SOCK_SEQPACKET control socket to create (mode and owner\n"
                + "                   from the config); a stale socket file is replaced. Not needed when\n"
                + "                   socket-activated (LISTEN_FDS; the fd named 'control', else the first)\n"
                + "  --config FILE    key = value settings; every key has a default, so none is needed\n"
                + "  --print-config   print every config key with its value and meaning, then exit\n"
                + "  --handoff PATH   (set by an upgrade) take over a running predecessor's state from\n"
                + "                   the handoff socket at PATH instead of binding the control socket\n"
                + "  --help           this text\n"
                + "  --version        the build's version\n\n"
                + "Logs go to stderr, audit lines to audit.path (stderr by default). SIGTERM or SIGINT:\n"
                + "stop accepting, hand every task back with its answer, exit 0.\n";
    }

    public static DaemonOptions parse(String[] args) throws UsageException {
        Path control = null;
        Path config = null;
        Path handoff = null;
        boolean help = false;
        boolean print = false;
        boolean version = false;
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            String value = null;
            int eq = a.indexOf('=');
            if (a.startsWith("--") && eq > 0) {
                value = a.substring(eq + 1);
                a = a.substring(0, eq);
            }
            switch (a) {
                case "--help":
                case "-h":
                    help = true;
                    break;
                case "--print-config":
                    print = true;
                    break;
                case "--version":
                case "-V":
                    version = true;
                    break;
                case "--control":
                case "--handoff":
                case "--config": {
                    if (value == null) {
                        if (i + 1 >= args.length) {
                            throw new UsageException(a + " needs a value");
                        }
                        value = args[++i];
                    }
                    if (value.isEmpty()) {
                        throw new UsageException(a + " needs a non-empty value");
                    }
                    if (a.equals("--control")) {
                        control = Path.of(value);
                    } else if (a.equals("--handoff")) {
                        handoff = Path.of(value);
                    } else {
                        config = Path.of(value);
                    }
                    break;
                }
                default:
                    throw new UsageException("unknown option '" + args[i] + "' (try --help)");
            }
        }
        return new DaemonOptions(control, config, help, print, handoff, version);
    }
}
