/**
 * What a daemon needs inside a network namespace, created from Java (no {@code ip} in production
 * code):
 * <ul>
 *   <li>{@link warren.linux.net.Netns}: run code on a fresh thread that has entered a namespace
 *       (setns(2)), so the sockets and devices it creates live there;</li>
 *   <li>{@link warren.linux.net.Tun}: TUN devices (IFF_TUN | IFF_NO_PI: one raw IP packet per
 *       read and write);</li>
 *   <li>{@link warren.linux.net.Rtnetlink}: link up / MTU, addresses and routes over rtnetlink
 *       (rtnetlink(7)), built and read with {@link warren.linux.netlink}.</li>
 * </ul>
 * Used by Bumblebee, Fish and the namespace helper process (netns-helper); depends only on
 * fdpass's libc facade.
 */
package warren.linux.net;
