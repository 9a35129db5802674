/**
 * logging: what stands between a log or audit line and its destination, so that neither a slow
 * disk nor a stderr pipe nobody reads ever holds the event loop.
 * <ul>
 *   <li>{@link warren.daemon.logging.LineWriter}: one bounded queue and one writer thread per
 *       destination (stderr; the audit file). {@code offer} never blocks: a full queue refuses
 *       the line and the caller counts it ({@code log.dropped}, {@code audit.dropped}); a failed
 *       write(2) loses the lines it held, counted the same way; SIGUSR1 reopens a file on the
 *       writer thread; close writes what is queued with a bounded wait. One thread per
 *       destination, not one for all: a stuck stderr must not stop the audit file, nor a full
 *       disk the log.</li>
 *   <li>{@link warren.daemon.logging.Priority}: syslog priorities as sd-daemon(3) prefixes.</li>
 *   <li>{@link warren.daemon.logging.RateLimit}: at most N lines per interval per key, then one
 *       summary with the count; allocation-free per call.</li>
 * </ul>
 * {@link warren.daemon.Log} (stderr lines) and {@link warren.daemon.audit.AuditLog} are built on
 * these. Threads: callers on any thread (the loop, upgrade, signal threads); one writer thread
 * per destination; the log's writer thread also prints the rate limits' summaries when their
 * interval ends.
 */
package warren.daemon.logging;
