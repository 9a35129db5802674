package warren.daemon.metrics;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The one table of warren's Prometheus metrics: which family each dotted counter of
 * {@link Counters} belongs to, with the label its name carries ({@code drops.bad_ihl} ->
 * {@code warren_drops_total{reason="bad_ihl"}}), the histograms (by dotted key too) and the
 * gauges the daemons sample. Every sample also carries {@code daemon="splicer"} etc.
 *
 * <p>A name is looked up exactly first, then by its longest prefix ending in a dot; a name in
 * neither falls into {@link #OTHER} ({@code warren_other_events_total{name="a.b"}}) so a counter added
 * without a row here is still exported. Hot paths keep bumping their {@code LongAdder}s; the
 * mapping happens at scrape time only.
 */
public final class Families {
    private Families() {}

    /** A counter family: Prometheus name without {@code _total}, the label its entries fill (or null), help. */
    public record CounterFamily(String name, String label, String help) {}

    /** Where one dotted name (or prefix) goes: its family, and the label value for an exact name. */
    record Rule(CounterFamily family, String value) {}

    /** A gauge family with its label names (besides {@code daemon}). */
    public record Gauge(String name, String help, List<String> labels) {
        public Gauge(String name, String help, String... labels) {
            this(name, help, List.of(labels));
        }
    }

    /** A histogram family: dotted key prefix (or exact key), name, label filled from the key's rest, bounds. */
    public record HistogramFamily(String key, String name, String label, double[] bounds, String help) {}

    // ---- counters

    private static final CounterFamily TASKS_ENDED = new CounterFamily("warren_tasks_ended", "reason",
            "tasks ended, by outcome (as in the audit end line: an EndReason such as BOTH_EOF, or error:CODE)");
    /** Read from the task registry (its total travels in the handoff), not from a dotted counter. */
    public static final CounterFamily TASKS_STARTED = new CounterFamily("warren_tasks_started", null,
            "tasks started (pairs, flows, clients)");
    private static final CounterFamily REQUESTS = new CounterFamily("warren_requests", "kind",
            "control requests received, by body (splice, status, restart, ...)");
    private static final CounterFamily ERRORS = new CounterFamily("warren_errors", "code",
            "final answers that were an Error, by Error.Code (requests rejected at decode included)");
    private static final CounterFamily CONNECTIONS = new CounterFamily("warren_control_connections", "result",
            "control connections accepted, or refused (control.max_clients)");
    private static final CounterFamily DROPS = new CounterFamily("warren_drops", "reason",
            "packets dropped by the daemon, by reason (malformed, not of the flow, socket full, ...)");
    private static final CounterFamily TUN_DROPS = new CounterFamily("warren_tun_drops", "reason",
            "packets read from the TUN and dropped as malformed, by reason");
    private static final CounterFamily IP_PACKETS = new CounterFamily("warren_ip_packets", "direction",
            "IP packets of flows (Bumblebee) or clients (Fish); out: from the socket handed in toward its"
                    + " destination, in: back; tasks in flight included");
    private static final CounterFamily IP_BYTES = new CounterFamily("warren_ip_bytes", "direction",
            "bytes of those IP packets, headers included; out and in as for warren_ip_packets_total");
    private static final CounterFamily RELAY_BYTES = new CounterFamily("warren_relay_bytes", "direction",
            "payload bytes spliced by relay pairs (Splicer's, Bumblebee's downgrades); out: from socket a (the one"
                    + " handed in first) to b, in: back; pairs in flight included");
    private static final CounterFamily PAIRS_STARTED = new CounterFamily("warren_relay_pairs_started", null,
            "relay pairs started");
    private static final CounterFamily PAIRS_ENDED = new CounterFamily("warren_relay_pairs_ended", "reason",
            "relay pairs ended, by EndReason");
    private static final CounterFamily PIPE_WAITS = new CounterFamily("warren_relay_pipe_waits", null,
            "times a pair waited for a pipe (splice.max_pipes or the fd limit reached)");
    private static final CounterFamily FLOWS_ENDED = new CounterFamily("warren_flows_ended", "reason",
            "flows ended, by reason (Bumblebee's NAT slots; Fish's expired flows are reason=\"expired\")");
    private static final CounterFamily UPGRADES = new CounterFamily("warren_upgrades", "protocol",
            "Bumblebee flows upgraded to a kernel socket, by protocol");
    private static final CounterFamily DOWNGRADES = new CounterFamily("warren_downgrades", "protocol",
            "Bumblebee TCP sockets downgraded to a raw flow");
    private static final CounterFamily EXHAUSTED = new CounterFamily("warren_nat_exhausted", "request",
            "requests or flows refused because no NAT slot or port was free (Bumblebee slots, Fish port ranges)");
    private static final CounterFamily COLLISIONS = new CounterFamily("warren_nat_collisions", null,
            "egress ports found taken in conntrack (EEXIST) and skipped (Fish)");
    private static final CounterFamily RESERVATIONS = new CounterFamily("warren_reservations", null,
            "conntrack reservations made (Fish)");
    private static final CounterFamily RESERVATION_ERRORS = new CounterFamily("warren_reservation_errors", null,
            "conntrack reservations that failed for another reason than a collision (Fish)");
    private static final CounterFamily STALE_REMOVED = new CounterFamily("warren_reservations_stale_removed", null,
            "conntrack entries an earlier Fish left (marked, fixed-timeout) removed when Fish started or recovered");
    private static final CounterFamily RESERVATIONS_LOST = new CounterFamily("warren_reservations_lost", null,
            "conntrack reservations found gone when Fish refreshed them (deleted by someone else; the flow goes on)");
    private static final CounterFamily CONNTRACK_BATCHES = new CounterFamily("warren_conntrack_batches", null,
            "writes of batched ctnetlink requests: a read batch's new flows' reservations, ended flows' deletes (Fish)");
    private static final CounterFamily CONNTRACK_BATCHED = new CounterFamily("warren_conntrack_batched_requests", null,
            "ctnetlink requests sent in batches; batched / batches is the mean batch size (Fish)");
    private static final CounterFamily RESERVATIONS_RECLAIMED = new CounterFamily("warren_reservations_reclaimed", null,
            "conntrack reservations found remade by the flow's own packets when Fish refreshed them, taken back (Fish)");
    private static final CounterFamily RESERVATIONS_REFRESHED = new CounterFamily("warren_reservations_refreshed", null,
            "conntrack reservations of live flows given their fixed timeout again at a flow's check (Fish)");
    private static final CounterFamily RESERVATIONS_REUSED = new CounterFamily("warren_reservations_reused", null,
            "ports taken over from TCP flows an RST closed, for new TCP flows when a client's range had none free (Fish)");
    private static final CounterFamily OFFLOAD = new CounterFamily("warren_offload_packets", "kind",
            "GSO super-packets (virtio_net_hdr, issue 15): read from the TUN (tun_in), written to it (tun_out), cut"
                    + " into segments in software for a client without the capability (segmented); datagrams joined into UDP"
                    + " super-packets for the TUN (joined)");
    private static final CounterFamily SOFT_IP_CHANGES = new CounterFamily("warren_soft_ip_changes", "change",
            "soft-unicast IPs taken (route to fish0 added) and released with their last client (Fish)");
    private static final CounterFamily KERNEL_MULTICAST = new CounterFamily("warren_tun_kernel_multicast", null,
            "packets the kernel sent to Fish's TUN for a multicast or broadcast destination (its own MLD"
                    + " reports), counted apart from drops");
    private static final CounterFamily HANDOVER = new CounterFamily("warren_handover_packets", null,
            "packets read on one event loop and handed to the loop that owns their flow (Fish: replies to a port"
                    + " outside its client's loop class, or with no steering program; Bumblebee: packets for another"
                    + " loop's slot without the steering program or on the helper's one-queue TUN); full rings count as"
                    + " warren_drops_total{reason=\"handover_full\"}");
    private static final CounterFamily STEERING_UNAVAILABLE = new CounterFamily("warren_tun_steering_unavailable", null,
            "1 when the TUN's steering program could not be loaded or attached with N event loops (replies are"
                    + " then handed over between loops)");
    private static final CounterFamily ICMP = new CounterFamily("warren_icmp_errors_relayed", "direction",
            "ICMP errors translated and passed on; out: toward the destination side, in: toward the client");
    private static final CounterFamily REJECTS = new CounterFamily("warren_rejects_sent", null,
            "rejections (TCP RST or ICMP unreachable) sent to a client for a flow Fish could not egress");
    private static final CounterFamily ORPHANS = new CounterFamily("warren_nat_orphan_accepts", null,
            "kernel connections accepted for no reserved slot (closed at once)");
    private static final CounterFamily REFUSED = new CounterFamily("warren_refused", "reason",
            "requests refused for lack of a resource, by which (e.g. fd_limit)");
    private static final CounterFamily ANSWERS_DROPPED = new CounterFamily("warren_answers_dropped", null,
            "answers dropped because their connection had gone (their fds closed)");
    private static final CounterFamily LOOP_ERRORS = new CounterFamily("warren_loop_errors", null,
            "unexpected failures caught by the event loop");
    private static final CounterFamily AUDIT_DROPPED = new CounterFamily("warren_audit_lines_dropped", null,
            "audit lines dropped because the audit writer's queue was full");
    private static final CounterFamily LOG_DROPPED = new CounterFamily("warren_log_lines_dropped", null,
            "log lines dropped because the log writer's queue was full");
    private static final CounterFamily SCRAPE_TIMEOUTS = new CounterFamily("warren_metrics_loop_timeouts", null,
            "scrapes the event loop did not sample in time (the previous sample was served)");
    private static final CounterFamily ACCEPT_EXHAUSTED = new CounterFamily("warren_control_accept_paused", null,
            "times accept4() on the control socket ran out of fds or memory and the listener was paused (back-off)");
    private static final CounterFamily PEER_CHECK_UNKNOWN = new CounterFamily("warren_splice_peer_check_unknown", null,
            "Splice pairs whose sockets could not be checked for being each other's peer (relayed under the budget)");
    private static final CounterFamily WRITE_ERRORS = new CounterFamily("warren_log_write_errors", "log",
            "failed writes of the audit file or of stderr (the lines are lost and counted)");
    private static final CounterFamily LOG_SUPPRESSED = new CounterFamily("warren_log_lines_suppressed", null,
            "repeating log lines held back by the rate limit (each kind summarised with its count)");
    /** Counters that have no family of their own yet: exported under their dotted name. */
    public static final CounterFamily OTHER = new CounterFamily("warren_other_events", "name",
            "counters without a family of their own, by their dotted name as in Status");

    private static final Map<String, Rule> EXACT = new LinkedHashMap<>();
    private static final Map<String, Rule> PREFIX = new LinkedHashMap<>();

    static {
        prefix("tasks.ended.", TASKS_ENDED);
        prefix("requests.", REQUESTS);
        prefix("errors.", ERRORS);
        prefix("clients.", CONNECTIONS);
        prefix("drops.", DROPS);
        prefix("offload.", OFFLOAD);
        prefix("tun.drops.", TUN_DROPS);
        prefix("ip.packets.", IP_PACKETS);
        exact("packets.flow_to_kernel", IP_PACKETS, "out");
        exact("packets.kernel_to_flow", IP_PACKETS, "in");
        prefix("ip.bytes.", IP_BYTES);
        prefix("relay.bytes.", RELAY_BYTES);
        exact("pairs.started", PAIRS_STARTED, null);
        prefix("pairs.ended.", PAIRS_ENDED);
        exact("pipes.waits", PIPE_WAITS, null);
        prefix("flows.ended.", FLOWS_ENDED);
        exact("flows.expired", FLOWS_ENDED, "expired");
        exact("upgrades.tcp", UPGRADES, "tcp");
        exact("upgrades.udp", UPGRADES, "udp");
        exact("upgrades.refused_no_slot", EXHAUSTED, "upgrade");
        exact("downgrades.tcp", DOWNGRADES, "tcp");
        exact("downgrades.refused_no_slot", EXHAUSTED, "downgrade");
        exact("reservations.exhausted", EXHAUSTED, "egress");
        exact("reservations.collisions", COLLISIONS, null);
        exact("handover.packets", HANDOVER, null);
        exact("tun.steering_unavailable", STEERING_UNAVAILABLE, null);
        exact("reservations.made", RESERVATIONS, null);
        exact("reservations.errors", RESERVATION_ERRORS, null);
        exact("reservations.stale_removed", STALE_REMOVED, null);
        exact("reservations.lost", RESERVATIONS_LOST, null);
        exact("reservations.reclaimed", RESERVATIONS_RECLAIMED, null);
        exact("reservations.refreshed", RESERVATIONS_REFRESHED, null);
        exact("reservations.reused", RESERVATIONS_REUSED, null);
        exact("conntrack.batches", CONNTRACK_BATCHES, null);
        exact("conntrack.batched", CONNTRACK_BATCHED, null);
        exact("soft_ips.added", SOFT_IP_CHANGES, "added");
        exact("soft_ips.removed", SOFT_IP_CHANGES, "removed");
        exact("tun.kernel_multicast", KERNEL_MULTICAST, null);
        exact("icmp.to_kernel", ICMP, "out");
        exact("icmp.to_flow", ICMP, "in");
        exact("icmp_errors.to_client", ICMP, "in");
        exact("rejects.sent", REJECTS, null);
        exact("accepts.orphan", ORPHANS, null);
        prefix("refused.", REFUSED);
        exact("answers.dropped", ANSWERS_DROPPED, null);
        exact("loop.errors", LOOP_ERRORS, null);
        exact("audit.dropped", AUDIT_DROPPED, null);
        exact("log.dropped", LOG_DROPPED, null);
        exact("metrics.loop_timeouts", SCRAPE_TIMEOUTS, null);
        exact("accept.exhausted", ACCEPT_EXHAUSTED, null);
        exact("splice.peer_check_unknown", PEER_CHECK_UNKNOWN, null);
        exact("audit.write_errors", WRITE_ERRORS, "audit");
        exact("log.write_errors", WRITE_ERRORS, "stderr");
        exact("log.suppressed", LOG_SUPPRESSED, null);
    }

    private static void prefix(String p, CounterFamily f) {
        PREFIX.put(p, new Rule(f, null));
    }

    private static void exact(String name, CounterFamily f, String value) {
        if ((f.label() == null) != (value == null)) {
            throw new IllegalStateException(name + ": a label value exactly when its family has a label");
        }
        EXACT.put(name, new Rule(f, value));
    }

    /** The family of a dotted counter name and the value of its label (null for a family without one). */
    public record Mapped(CounterFamily family, String labelValue) {}

    public static Mapped counter(String name) {
        Rule r = EXACT.get(name);
        if (r != null) {
            return new Mapped(r.family(), r.value());
        }
        String best = null;
        for (String p : PREFIX.keySet()) {
            if (name.startsWith(p) && name.length() > p.length() && (best == null || p.length() > best.length())) {
                best = p;
            }
        }
        if (best != null) {
            return new Mapped(PREFIX.get(best).family(), name.substring(best.length()));
        }
        return new Mapped(OTHER, name);
    }

    /** Every counter family of the table (for tests and docs). */
    static List<CounterFamily> counterFamilies() {
        java.util.Set<CounterFamily> all = new java.util.LinkedHashSet<>();
        EXACT.values().forEach(r -> all.add(r.family()));
        PREFIX.values().forEach(r -> all.add(r.family()));
        all.add(OTHER);
        return List.copyOf(all);
    }

    // ---- histograms (dotted keys in Counters, so they travel in the handoff)

    private static final double[] DURATION = {0.001, 0.01, 0.1, 1, 10, 60, 300, 1800, 3600, 14400, 86400};
    private static final double[] LATENCY = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
    private static final double[] PAUSE = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

    public static final HistogramFamily TASK_DURATION = new HistogramFamily("task_duration.",
            "warren_task_duration_seconds", "kind", DURATION, "how long tasks lasted, start to end, by kind");
    public static final HistogramFamily UPGRADE_LATENCY = new HistogramFamily("upgrade_latency.",
            "warren_upgrade_latency_seconds", "protocol", LATENCY,
            "Bumblebee: from an Upgrade request to its Upgraded answer (kernel handshake done), by protocol");
    public static final HistogramFamily UPGRADE_PAUSE = new HistogramFamily("upgrade_pause",
            "warren_upgrade_pause_seconds", null, PAUSE,
            "in-place upgrades of this daemon: from the old process pausing to this one serving");
    static final List<HistogramFamily> HISTOGRAMS = List.of(TASK_DURATION, UPGRADE_LATENCY, UPGRADE_PAUSE);

    /** The histogram family of a dotted key, or IllegalArgumentException. */
    static HistogramFamily histogram(String key) {
        for (HistogramFamily h : HISTOGRAMS) {
            if (h.label() == null ? key.equals(h.key()) : key.startsWith(h.key()) && key.length() > h.key().length()) {
                return h;
            }
        }
        throw new IllegalArgumentException("no histogram family for '" + key + "' (warren.daemon.metrics.Families)");
    }

    // ---- gauges

    public static final Gauge TASKS_ACTIVE = new Gauge("warren_tasks_active", "tasks in flight (pairs, flows, clients)");
    public static final Gauge RELAY_PAIRS = new Gauge("warren_relay_pairs",
            "relay pairs live on each event loop (config key threads)", "loop");
    public static final Gauge CLIENTS = new Gauge("warren_control_clients", "control connections open");
    public static final Gauge PIPES_LENT = new Gauge("warren_relay_pipes_lent",
            "pipes lent to relay directions with bytes in flight");
    public static final Gauge PIPES_OPEN = new Gauge("warren_relay_pipes_open",
            "pipes open: lent, or kept empty for reuse (splice.pipes_kept)");
    public static final Gauge NAT_SLOTS = new Gauge("warren_nat_slots", "Bumblebee NAT slots, by state (free,"
            + " quarantined, in_use)", "state");
    public static final Gauge PORTS_FREE = new Gauge("warren_ports_free", "Fish: ports of each live client's range"
            + " held by no flow, by tenant and protocol (an ICMP echo id counts as a port)", "tenant", "protocol");
    public static final Gauge FISH_CLIENTS = new Gauge("warren_fish_clients", "Fish: clients living on each event"
            + " loop (config key threads)", "loop");
    public static final Gauge SOFT_IPS = new Gauge("warren_soft_ips", "Fish: soft-unicast IPs in use (each a route to"
            + " fish0 and a table of its flows, held while it has a client)");
    public static final Gauge OPEN_FDS = new Gauge("process_open_fds", "file descriptors open in the daemon process");
    public static final Gauge MAX_FDS = new Gauge("process_max_fds", "the process's fd limit (RLIMIT_NOFILE, soft)");
    public static final Gauge BUILD_INFO = new Gauge("warren_build_info", "always 1; the daemon's version", "version");
}
