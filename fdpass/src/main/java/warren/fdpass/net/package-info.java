/**
 * TCP sockets as owned fds and TCP_INFO snapshots: what a program that hands sockets to warren,
 * or reads them when they come back, needs beside fd passing.
 */
package warren.fdpass.net;
