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
 * <p>Toward N loops: every part holds only its own loop's state (buffers, flyweights, the slots it
 * was given), so a loop gets its own set. The slot table partitions by slot range (loop k owns
 * slots [k*S/N, (k+1)*S/N)), and since a packet from the TUN names its slot in its destination
 * address, the owner of a TUN packet is computed, not looked up; the same holds for an accepted
 * connection's peer. What remains shared is the environment's fds and the counters (LongAdders,
 * safe to bump from any loop).
 */
package warren.bumblebee.nat;
