/**
 * Bumblebee's NAT between flow sockets and the TUN in its namespace.
 *
 * <pre>
 *  flow socket --FlowPath--> TUN --kernel TCP--> listener --TcpUpgrade.accept--> Upgraded(socket)
 *  flow socket <--TunPath--- TUN <--kernel TCP--
 *  flow socket <--UdpUpgrade--> datagram socketpair (UDP: headers stripped/added in userspace)
 *  Downgrade: inner socket in the namespace --TUN/TunPath--> flow socket; relay(socket, inner)
 * </pre>
 *
 * <p>The parts, each one job: {@link warren.bumblebee.nat.SlotTable} (the preallocated flows by
 * slot number, free stack, quarantine; {@link warren.bumblebee.nat.AddressPlan} maps slot to pool
 * address and back), the two packet paths {@link warren.bumblebee.nat.FlowPath} and
 * {@link warren.bumblebee.nat.TunPath}, the starts {@link warren.bumblebee.nat.TcpUpgrade},
 * {@link warren.bumblebee.nat.UdpUpgrade} and {@link warren.bumblebee.nat.Downgrade},
 * {@link warren.bumblebee.nat.Lifecycle} (timers and the one end of a flow, for a typed
 * {@link warren.bumblebee.nat.FlowEnd}), {@link warren.bumblebee.nat.FlowStore} (handoff and fd
 * store; {@link warren.bumblebee.nat.FlowTableCodec} is the encoding) and
 * {@link warren.bumblebee.nat.NatCounters}. {@link warren.bumblebee.nat.Nat} wires them on one
 * event loop and is what the request handler sees. A slot's states are in {@link
 * warren.bumblebee.nat.Flow}.
 *
 * <p>N loops ({@link warren.bumblebee.nat.Nat#onLoops}): every loop has its own set of these parts
 * over one shared table of {@code Flow}s; loop k owns the slots with {@code (slot + 1) % N == k}
 * and TUN queue k, where the device's steering program (low 16 bits of the destination = slot +
 * 1, modulo the queues) puts every packet the kernel sends to one of its slots, so the owner of a
 * TUN packet is computed by the kernel, not looked up. Requests and the listeners' accepts are
 * the control loop's; what crosses loops is once per flow (a claim, a posted start, the accept
 * handshake on {@code Flow.accept}), never per packet with the program. Without it (EPERM, or
 * {@code bumblebee.tun_steering = off}) the kernel picks queues by its flow table and a packet
 * read on a loop that does not own its slot is copied through a single-producer ring to the
 * owner ({@code Handover}, {@code TunPath#onPacket}). docs/bumblebee.md (Threads) has the rest.
 *
 * <p>Offloads (issue 15; docs/bumblebee.md, Offloads): the paths hold a virtio_net_hdr before
 * every packet in their buffers, so one code path serves both formats of bb0 ({@code
 * Environment#vnetHdr}) and both kinds of flow ({@code Flow.vnet}, {@code Upgrade.vnet_hdr}): a
 * super-packet crosses whole where both ends take one, else it is cut ({@code warren.packet.Gso})
 * and a partial checksum completed where the reader needs it.
 *
 * <p>Pausing (the upgrade in place) is the event loop's, not the NAT's: each loop's {@code Nat}
 * owns one {@link warren.daemon.loop.EventLoop.Group} ({@code bumblebee-nat-<k>}) in which every
 * registration (its TUN queue, loop 0's listeners, flow sockets, UDP datagram sockets, downgrade
 * inner sockets) and every timer (handshake, idle, linger, quarantine) lives. {@code Nat.pause}
 * pauses the group and the downgrades' relay: O(1), nothing unregistered or cancelled, packets
 * wait in their sockets and the TUN queue while the group holds their events and the timers that
 * come due; {@code Nat.resume} delivers them. A request that reaches a paused loop registers and
 * arms into the paused group like any other. A successor's Nats are built paused; {@code
 * Nat.adopt} registers and arms every adopted flow into their groups before the loops run, so
 * its start is the same {@code resume} as after a failed handoff. After a commit {@code
 * abandon} forgets the table and the group stays paused for good. A pause ends no flow: the
 * idle check and the handshake timer count from the last resume ({@link
 * warren.bumblebee.nat.Lifecycle}).
 */
package warren.bumblebee.nat;
