package warren.fish.egress;

import java.util.ArrayList;
import java.util.List;

/**
 * A soft-unicast IP in use: its route to fish0, its clients and the flow holding each (protocol,
 * port). It lives exactly as long as its last client ({@link Clients}); its table is sized to the
 * ports in use.
 */
final class SoftIp {
    final byte[] addr;
    final PortTable<Flow> flows = new PortTable<>();
    final List<Client> clients = new ArrayList<>(2);

    SoftIp(byte[] addr) {
        this.addr = addr;
    }
}
