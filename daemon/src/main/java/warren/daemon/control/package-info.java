/**
 * The control-socket server (see {@link warren.daemon.control.ControlServer}), the per-request
 * promise of exactly one final answer ({@link warren.daemon.control.Call}), the interface a
 * daemon implements for its own requests ({@link warren.daemon.control.RequestHandler}) and who
 * may ask what: the role table and its defaults ({@link warren.daemon.control.Authorizer}, from
 * SO_PEERCRED and SO_PEERGROUPS) over the principals of the control.* keys
 * ({@link warren.daemon.control.Principals}).
 */
package warren.daemon.control;
