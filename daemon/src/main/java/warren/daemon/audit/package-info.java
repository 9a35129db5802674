/**
 * Per-task audit log: JSON lines, one at the start and one at the end of every task, plus one per
 * rejected request, to a file or stderr. Fields: ts, daemon, event (start|end|rejected), task,
 * request id, caller metadata (base64), peer pid/uid/gid, connection, and what the daemon adds
 * (addresses, byte counts, end reason, TCP_INFO).
 */
package warren.daemon.audit;
