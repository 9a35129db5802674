/** {@code ./warren demo}: Splicer, an upstream server and a front proxy on loopback, end to end. */
package warren.splicer.demo;
