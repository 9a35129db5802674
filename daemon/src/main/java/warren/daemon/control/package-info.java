/**
 * The control-socket server (see {@link warren.daemon.control.ControlServer}), the per-request
 * promise of exactly one final answer ({@link warren.daemon.control.Call}) and the interface a
 * daemon implements for its own requests ({@link warren.daemon.control.RequestHandler}).
 */
package warren.daemon.control;
