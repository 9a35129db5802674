/**
 * Per-task capture on demand ({@code Trace} in control.proto). A {@link warren.daemon.trace.Tracer}
 * serves the request; the traced task is a {@link warren.daemon.trace.Traceable}: a packet task
 * (Bumblebee flow, Fish client) holds the {@link warren.daemon.trace.TraceRing} it is lent in one
 * field and copies each packet into it at four points (from the client as read, as translated
 * and written on, toward the client as read on the translated side, as written to the client);
 * with no trace the field is null and the packet paths do one null check, nothing else. A
 * {@link warren.daemon.trace.TraceSession} (a task of kind "trace") drains the ring on a timer
 * into {@code TraceChunk} answers and ends with {@code TraceEnded}.
 *
 * <p>Bounds: {@code trace.max_active} traces at once, each with one preallocated ring of
 * {@code trace.ring_bytes}; a packet that finds the ring full is dropped from the trace (never
 * from the flow) and counted. A trace ends when it has sent {@code max_packets}, after
 * {@code seconds}, when its task ends, on Cancel (of its request id or its task number), when the
 * daemon stops or upgrades in place (traces do not move to the successor), or when its requester
 * disconnects.
 */
package warren.daemon.trace;
