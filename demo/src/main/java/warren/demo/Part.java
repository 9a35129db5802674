package warren.demo;

/**
 * One daemon's part of the demo. {@link Demo} calls {@link #start} on every part first (the
 * daemons' JVMs start in parallel), then {@link #job} on each, then {@link #upgrade} on each,
 * and {@link #close} always (also from the shutdown hook on Ctrl-C).
 */
interface Part extends AutoCloseable {
    /** "splicer", "bumblebee" or "fish". */
    String name();

    /** Why this part cannot run here (not root, a tool missing), or null when it can. */
    String cannotRun();

    /** Makes its namespaces and starts its daemon's process (not waiting for it). */
    void start() throws Exception;

    /** The daemon doing its job: prints its section and records checks. */
    void job(Checks checks) throws Exception;

    /** The daemon upgraded in place while a long transfer runs through it. */
    void upgrade(Checks checks) throws Exception;

    /** Stops the daemon and removes what the part made; idempotent. */
    @Override
    void close();
}
