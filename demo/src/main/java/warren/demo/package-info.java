/**
 * {@code ./warren demo}: the whole suite doing its job, then upgraded in place, with nothing
 * configured. {@link warren.demo.Demo} runs the parts ({@link warren.demo.SplicerPart},
 * {@link warren.demo.BumblebeePart}, {@link warren.demo.FishPart}); each daemon runs as its own
 * process ({@link warren.demo.DaemonRun}) started from this JVM's class path, with a config
 * and control socket in a temporary directory. Namespaces are made with
 * {@link warren.netns.ip.IpNetns} (unique names, removed on exit and on Ctrl-C); addresses are
 * in 198.18.0.0/15 and fd00::/8 and nothing routes out of them; the root namespace is not
 * changed (Splicer's part runs on its loopback, which needs no root).
 *
 * <p>Every part prints what runs where, the clients' results and shortened audit lines, and
 * records {@link warren.demo.Checks}; the demo exits 1 when any check failed. The upgrade part
 * moves a {@link warren.demo.Transfer} (an echoed stream, SHA-256 on both ends) through each
 * daemon while a Restart replaces its process.
 */
package warren.demo;
