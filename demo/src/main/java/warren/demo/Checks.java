package warren.demo;

import java.io.PrintStream;

/** The checks of one part: each printed as it is made, counted for the part's summary line. */
final class Checks {
    private final PrintStream out;
    private int passed;
    private int failed;

    Checks(PrintStream out) {
        this.out = out;
    }

    /** Records and prints one check; returns {@code ok}. */
    boolean check(boolean ok, String what) {
        if (ok) {
            passed++;
        } else {
            failed++;
        }
        out.println((ok ? "  ok      " : "  FAILED  ") + what);
        return ok;
    }

    int passed() {
        return passed;
    }

    int failed() {
        return failed;
    }
}
