/**
 * The control-contract codec: {@code warren.control.v1} envelopes to and from one SEQPACKET
 * message, with fd fields ({@code fd_*}) paired to the attached fds and large envelopes spilled to
 * a sealed memfd. The rules are listed on {@link warren.fdpass.codec.ControlCodec}.
 */
package warren.fdpass.codec;
