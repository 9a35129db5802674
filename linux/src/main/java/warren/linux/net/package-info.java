/**
 * What a daemon needs inside a network namespace, created from Java (no {@code ip} in production
 * code):
 * <ul>
 *   <li>{@link warren.linux.net.Netns}: run code on a fresh thread that has entered a namespace
 *       (setns(2)), so the sockets and devices it creates live there;</li>
 *   <li>{@link warren.linux.net.Tun}: TUN devices (IFF_TUN | IFF_NO_PI: one raw IP packet per
 *       read and write), also multi-queue (one queue fd per event loop), and with IFF_VNET_HDR
 *       and TUNSETOFFLOAD: a virtio_net_hdr per packet, partial checksums and 64 KiB TCP/UDP
 *       super-packets per read and write (the header's format is {@code warren.packet.VnetHdr});
 *       the format is the device's, not the fd's;</li>
 *   <li>{@link warren.linux.net.TunSteering}: the eBPF program (written with the small assembler
 *       {@link warren.linux.net.Bpf}) that tells a multi-queue TUN which queue each packet the
 *       kernel sends goes to, so a flow's two directions meet on one loop (docs/loops.md);</li>
 *   <li>{@link warren.linux.net.Rtnetlink}: link up / MTU, addresses and routes over rtnetlink
 *       (rtnetlink(7)), built and read with {@link warren.linux.netlink}.</li>
 * </ul>
 * Used by Bumblebee, Fish and the namespace helper process (netns-helper); depends only on
 * fdpass's libc facade.
 */
package warren.linux.net;
