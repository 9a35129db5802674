/**
 * netns-helper: what a daemon needs inside its private network namespace, created from Java.
 * <ul>
 *   <li>{@link warren.netns.Netns}: run code on a fresh thread that has entered a namespace
 *       (setns(2)), so the sockets and devices it creates live there;</li>
 *   <li>{@link warren.netns.Tun}: TUN devices (IFF_TUN | IFF_NO_PI: one raw IP packet per read and
 *       write);</li>
 *   <li>{@link warren.netns.Rtnetlink}: link up / MTU, addresses and routes over rtnetlink (no
 *       {@code ip} in production code).</li>
 * </ul>
 * Still to come with the Bumblebee issue: the helper process that creates the namespace (inside
 * a new user namespace when not root) and passes every fd back over fdpass, listeners, and
 * on-demand outbound connects. Its test-jar holds the namespace test harness
 * {@code warren.netns.testing} used by every module's integration tests.
 */
package warren.netns;
