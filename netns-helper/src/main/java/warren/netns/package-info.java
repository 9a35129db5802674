/**
 * netns-helper: the helper process that gives a daemon a private network namespace without
 * root. {@link warren.netns.Helper} starts {@link warren.netns.HelperMain} with unshare(1) inside
 * a new user and network namespace; the helper sets up a TUN and listeners there and passes every
 * fd back over fdpass, then serves on-demand outbound connects. {@link warren.netns.TunPump}
 * moves packets between a TUN and a socket. The namespace plumbing it uses ({@code Tun},
 * {@code Rtnetlink}, {@code Netns}) lives in the {@code linux} module ({@link warren.linux.net}),
 * so daemons that need no helper process (Fish) do not depend on this module. Its test-jar holds
 * the namespace test harness {@code warren.netns.testing} used by every module's integration
 * tests.
 */
package warren.netns;
