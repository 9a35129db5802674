package warren.cli;

import java.io.PrintStream;
import java.io.PrintWriter;
import picocli.CommandLine;

/** {@code ./warren <status|list|cancel|metrics|trace|upgrade|--version> ...}: see {@link WarrenCommand}. */
public final class Main {
    private Main() {}

    public static void main(String[] args) {
        System.exit(run(args, System.out, System.err));
    }

    /** Runs one command line; returns its exit status (0 done, 1 failed, 2 bad usage). */
    public static int run(String[] args, PrintStream out, PrintStream err) {
        return commandLine(new PrintWriter(out, true), new PrintWriter(err, true)).execute(args);
    }

    static CommandLine commandLine(PrintWriter out, PrintWriter err) {
        CommandLine cl = new CommandLine(new WarrenCommand());
        cl.setOut(out);
        cl.setErr(err);
        cl.setParameterExceptionHandler((e, args) -> {
            CommandLine c = e.getCommandLine();
            String why = e.getMessage();
            if (e instanceof CommandLine.MissingParameterException) { // a misspelt option is the real error
                String unknown = unknownOption(c, args);
                why = unknown != null ? "Unknown option: '" + unknown + "'" : why;
            }
            c.getErr().println(c.getCommandSpec().qualifiedName() + ": " + why
                    + " (try " + c.getCommandSpec().qualifiedName().replaceFirst("^warren", "./warren") + " --help)");
            return CommandLine.ExitCode.USAGE;
        });
        cl.setExecutionExceptionHandler((e, c, parsed) -> {
            String name = c.getCommandSpec().qualifiedName();
            if (e instanceof CliException ce) {
                c.getErr().println(name + ": " + ce.getMessage());
                return ce.exitCode();
            }
            c.getErr().println(name + ": " + (e.getMessage() != null ? e.getMessage() : e.toString()));
            return CommandLine.ExitCode.SOFTWARE;
        });
        return cl;
    }

    /** The first option-looking argument (before any "--") that command {@code c} does not know, or null. */
    private static String unknownOption(CommandLine c, String[] args) {
        for (String a : args) {
            if (a.equals("--")) {
                return null;
            }
            String name = a.indexOf('=') > 0 ? a.substring(0, a.indexOf('=')) : a;
            if (name.startsWith("-") && name.length() > 1 && !name.matches("-\\d+")
                    && c.getCommandSpec().findOption(name) == null) {
                return a;
            }
        }
        return null;
    }
}
