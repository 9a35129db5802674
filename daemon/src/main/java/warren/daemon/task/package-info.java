/**
 * Tasks in flight: the registry (numbers, origin, audit start/end lines) and the interface the
 * plumbing uses to cancel or stop a task. The registry is the root of the handoff state.
 */
package warren.daemon.task;
