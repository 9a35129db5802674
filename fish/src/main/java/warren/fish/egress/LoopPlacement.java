package warren.fish.egress;

/**
 * Which loop a client lives on, and in which order its flows try the ports of its range, with N
 * loops and a TUN whose steering program puts a reply on queue {@code port % N}
 * (docs/fish.md, "Loops"). Pure functions; the control loop places, the client's loop leases.
 *
 * <p>A client goes to the loop {@code c} whose residue class ({@code port % N == c}) holds the
 * most ports of its range, ties to the loop with the fewest clients, then the lowest index: a
 * one-port range lands where its replies land, a wide range on the least loaded loop. Its flows
 * take the ports of class {@code c} first (their replies need no hand-over) and only then the
 * others. With N = 1 every port is of class 0: the order is the plain round robin of before.
 */
final class LoopPlacement {
    private LoopPlacement() {}

    /** Ports {@code p} of {@code [first, last]} with {@code p % n == c}. */
    static int classSize(int first, int last, int n, int c) {
        if (first > last) {
            return 0;
        }
        // ports <= x of class c: floor((x - c) / n) + 1 for x >= c
        return upTo(last, n, c) - upTo(first - 1, n, c);
    }

    private static int upTo(int x, int n, int c) {
        return x < c ? 0 : (x - c) / n + 1;
    }

    /**
     * The loop for a client of {@code [first, last]}, {@code clients[i]} being the clients loop
     * {@code i} has now ({@code clients.length} = N).
     */
    static int place(int first, int last, int[] clients) {
        int n = clients.length;
        int best = 0;
        int bestSize = -1;
        for (int c = 0; c < n; c++) {
            int size = classSize(first, last, n, c);
            if (size > bestSize || (size == bestSize && clients[c] < clients[best])) {
                best = c;
                bestSize = size;
            }
        }
        return best;
    }

    /** The loop a reply to {@code port} is steered to (the port program's {@code % numqueues}). */
    static int steered(int port, int n) {
        return port % n;
    }
}
