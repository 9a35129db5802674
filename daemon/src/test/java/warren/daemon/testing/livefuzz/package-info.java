/**
 * The live-daemon fuzzer (docs/testing.md, "Live fuzzing"; issue 16 item 3): a running daemon's
 * control socket fed mutated requests with fds of every kind, its answers and its fd table checked.
 *
 * <ul>
 *   <li>{@link warren.daemon.testing.livefuzz.FdZoo}: fresh fds of every kind a client could attach
 *       (sockets of each family and type, pipes, eventfds, memfds sealed and not, a directory,
 *       /dev/null, O_PATH fds, a connection to the daemon itself) and the peers of pairs.</li>
 *   <li>{@link warren.daemon.testing.livefuzz.Messages}: message {@code i} of seed {@code S}, a valid
 *       request of a random kind and one mutation; the mutations with one right answer record it.</li>
 *   <li>{@link warren.daemon.testing.livefuzz.Connection}: one fuzzing connection, raw sendmsg(2)
 *       and the books its answers are checked against.</li>
 *   <li>{@link warren.daemon.testing.livefuzz.LiveFuzzer}: the run (threads, Status probes, the end:
 *       every task ended and accounted, the fd count back to its baseline).</li>
 * </ul>
 * Each daemon's module has its JUnit test ({@code SplicerLiveFuzzTest}, {@code BumblebeeLiveFuzzTest},
 * {@code FishLiveFuzzTest}) that starts it as a process, runs the fuzzer and makes one real request
 * before and after; {@code ./warren fuzz live} runs them with more messages.
 */
package warren.daemon.testing.livefuzz;
