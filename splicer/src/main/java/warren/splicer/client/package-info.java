/** The Java client of Splicer (used by the demo, the tests and the benchmarks). */
package warren.splicer.client;
