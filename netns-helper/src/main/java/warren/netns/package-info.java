/**
 * netns-helper: creates namespaces, TUN devices, routes and listeners and passes the fds back
 * (the Bumblebee issue). Its test-jar holds the namespace test harness used by every module:
 * {@code warren.netns.testing}.
 */
package warren.netns;
