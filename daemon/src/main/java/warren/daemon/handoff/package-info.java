/**
 * The upgrade handoff (DESIGN §4, proto {@code warren.handoff.v1.HandoffMessage}): an old process
 * ({@link warren.daemon.handoff.HandoffSender}) pauses its tasks and passes named items — a
 * protobuf payload each, in one sealed memfd, plus their fds in acknowledged batches — to its
 * successor ({@link warren.daemon.handoff.HandoffReceiver}), which validates and prepares them,
 * says ready, and takes over on commit. Anything that goes wrong before commit leaves the old
 * process serving and the new one holding nothing. Shared by all three daemons.
 *
 * <p>Protocol 2 pre-copies first: while the old process serves on, {@code Source.preCopy} chunks
 * (duplicated fds, closed by the sender once sent) go to {@code Preparer.preCopy}, which builds
 * the tasks paused; the pause then carries only the delta each engine computes (what started,
 * ended or changed since its copy). Until commit the old process owns its fds; the successor's
 * duplicates are closed on any failure ({@code Preparer.discard}, or its exit). The successor's
 * hello lists the items it pre-adopts ({@code pre_copies}); only those are pre-copied. A successor
 * of protocol 1 (a build before the pre-copy: a rollback) gets no pre-copy, everything in the
 * offer; any other protocol is refused. docs/upgrade.md.
 */
package warren.daemon.handoff;
