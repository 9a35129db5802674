/** The daemons' shared command line: options, usage text, one-line errors with exit status 2. */
package warren.daemon.cli;
