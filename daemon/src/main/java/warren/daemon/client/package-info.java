/** The Java client of the control protocol, used by the demo, the restarter and the tests. */
package warren.daemon.client;
