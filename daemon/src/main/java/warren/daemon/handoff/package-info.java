/**
 * The upgrade handoff (DESIGN §4, proto {@code warren.handoff.v1.HandoffMessage}): an old process
 * ({@link warren.daemon.handoff.HandoffSender}) pauses its tasks and passes named items — a
 * protobuf payload each, in one sealed memfd, plus their fds in acknowledged batches — to its
 * successor ({@link warren.daemon.handoff.HandoffReceiver}), which validates and prepares them,
 * says ready, and takes over on commit. Anything that goes wrong before commit leaves the old
 * process serving and the new one holding nothing. Shared by all three daemons.
 */
package warren.daemon.handoff;
