/** Splicer: zero-copy relay of handed-in socket pairs (the Splicer issue). */
package warren.splicer;
