/**
 * Splicer: relays pairs of connected sockets handed in by a front proxy and hands them back.
 *
 * <ul>
 *   <li>{@link warren.splicer.Main}: {@code ./warren splicer --control PATH}.</li>
 *   <li>{@link warren.splicer.SpliceHandler}: checks a {@code Splice} request's fds and limits.</li>
 *   <li>{@link warren.daemon.relay}: the relay engine (splice(2) through lent pipes,
 *       half-close, limits, hand-back).</li>
 *   <li>{@link warren.splicer.client.SplicerClient}: the Java client (the demo module's
 *       {@code warren.demo.SplicerPart} drives it as a front proxy would).</li>
 * </ul>
 */
package warren.splicer;
