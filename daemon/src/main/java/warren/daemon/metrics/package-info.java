/** Counters a daemon reports in its StatusReport (and later as Prometheus metrics). */
package warren.daemon.metrics;
