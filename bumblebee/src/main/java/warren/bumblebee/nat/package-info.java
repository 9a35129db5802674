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
 * handshake on {@code Flow.accept}), never per packet. docs/bumblebee.md (Threads) has the rest.
 */
package warren.bumblebee.nat;
