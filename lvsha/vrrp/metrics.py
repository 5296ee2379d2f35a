"""The VRRP process's metric families (lvsha.daemon.metrics) and the samples it exports.

Every per-instance sample carries `instance` (its name), `interface`, `vrid` and `family`
(ipv4, ipv6): the name changes with a reload, the other three are what identifies the virtual
router. The counters are kept by the engine, its instances and their sockets, as integers
incremented on paths already taken; collecting reads them (once a second: `EXPORT_INTERVAL`).
A counter starts again from 0 when its instance is rebuilt by a reload (another version,
source address or unicast peers), which Prometheus takes as a counter reset.

With `global.metrics.keepalived_names` the keepalived exporter's families are written too
(lvsha.vrrp.keepalived_names), following reloads.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from lvsha.daemon.metrics import LOOP_FAMILIES, Family, LoopLag, Sample, catalog
from lvsha.vrrp.engine import VrrpEngine
from lvsha.vrrp.events import VrrpState
from lvsha.vrrp.keepalived_names import KEEPALIVED_FAMILIES, keepalived_samples
from lvsha.vrrp.socket import SocketDropReason
from lvsha.vrrp.wire import DropReason

PROCESS = "vrrp"
EXPORT_INTERVAL = 1.0
"""Seconds between two writes of the metrics file (RUN_DIR/metrics-vrrp.prom)."""

VRRP_FAMILIES = (
    Family(
        "lvsha_vrrp_state",
        "gauge",
        "1 for the instance's current state, 0 for the others (state: INITIALIZE, BACKUP, "
        "MASTER, FAULT, RELEASING).",
    ),
    Family(
        "lvsha_vrrp_effective_priority",
        "gauge",
        "The priority the instance advertises and elects with: the configured one adjusted by "
        "tracking.",
    ),
    Family(
        "lvsha_vrrp_configured_priority",
        "gauge",
        "The instance's priority as configured, before tracking.",
    ),
    Family(
        "lvsha_vrrp_transitions_total",
        "counter",
        "State changes of the instance, by the state left (from) and entered (to).",
    ),
    Family(
        "lvsha_vrrp_adverts_sent_total",
        "counter",
        "Adverts sent (priority 0 ones included).",
    ),
    Family(
        "lvsha_vrrp_advert_send_errors_total",
        "counter",
        "Adverts the kernel refused to send (a full send buffer is not counted here).",
    ),
    Family(
        "lvsha_vrrp_adverts_received_total",
        "counter",
        "Adverts from another router that passed every check and reached the state machine.",
    ),
    Family(
        "lvsha_vrrp_rx_errors_total",
        "counter",
        "Packets received on the instance's socket and not taken, by reason (each instance's "
        "socket hears every VRRP packet of its interface: vrid_mismatch counts the other "
        "virtual routers' adverts).",
    ),
    Family(
        "lvsha_vrrp_address_list_mismatch_total",
        "counter",
        "Adverts taken although their address list differs from ours.",
    ),
    Family(
        "lvsha_vrrp_priority_zero_sent_total",
        "counter",
        "Adverts sent with priority 0: the instance left mastership (shutdown, fault, handover).",
    ),
    Family(
        "lvsha_vrrp_priority_zero_received_total",
        "counter",
        "Adverts received with priority 0: the master left.",
    ),
    Family(
        "lvsha_vrrp_reassertions_suppressed_total",
        "counter",
        "Reassertions of mastership suppressed (past one answer per advert interval).",
    ),
    Family(
        "lvsha_garp_sent_total",
        "counter",
        "Gratuitous ARP (IPv4) and unsolicited neighbour advertisement (IPv6) frames sent for "
        "the instance's VIPs.",
    ),
    Family(
        "lvsha_garp_send_errors_total",
        "counter",
        "Announcements of the instance's VIPs that failed (some or all of their frames unsent).",
    ),
    Family(
        "lvsha_vrrp_track_file_value",
        "gauge",
        "The number a tracked file holds (vrrp_track_files; 0 when missing or not a number).",
    ),
)

FAMILIES = catalog(*LOOP_FAMILIES, *VRRP_FAMILIES, *KEEPALIVED_FAMILIES)
"""Every family the VRRP process may write; the keepalived ones only with keepalived_names."""


def rx_errors(
    drops: Mapping[DropReason, int], ignored: Mapping[SocketDropReason, int]
) -> dict[str, int]:
    """Every reason a packet was not taken, zeros included (a stable label set): the wire's
    drops but the address list mismatch (taken all the same), and the socket's own ignores
    (own_advert from either side counts once, under one label)."""
    out = {
        reason.value: count
        for reason, count in drops.items()
        if reason is not DropReason.ADDRESS_LIST_MISMATCH
    }
    for reason in SocketDropReason:
        out[reason.value] = out.get(reason.value, 0) + ignored.get(reason, 0)
    return out


def vrrp_samples(engine: VrrpEngine) -> Iterator[Sample]:
    """The lvsha_vrrp_* and lvsha_garp_* samples of every configured instance."""
    for name, record in engine.instances.items():
        inst = record.config
        runner = record.runner
        machine = runner.machine
        labels = {
            "instance": name,
            "interface": inst.interface,
            "vrid": str(inst.virtual_router_id),
            "family": inst.family,
        }
        for state in VrrpState:
            value = 1.0 if machine.state is state else 0.0
            yield "lvsha_vrrp_state", {**labels, "state": state.name}, value
        yield "lvsha_vrrp_effective_priority", labels, float(machine.priority)
        yield "lvsha_vrrp_configured_priority", labels, float(machine.params.priority)
        for (old, new), count in record.transitions.items():
            yield (
                "lvsha_vrrp_transitions_total",
                {**labels, "from": old.name, "to": new.name},
                float(count),
            )
        yield "lvsha_vrrp_adverts_sent_total", labels, float(runner.adverts_sent)
        yield "lvsha_vrrp_advert_send_errors_total", labels, float(runner.send_errors)
        yield "lvsha_vrrp_adverts_received_total", labels, float(record.adverts_received)
        drops = record.socket.drops.snapshot()
        for reason, count in rx_errors(drops, record.socket.ignored).items():
            yield "lvsha_vrrp_rx_errors_total", {**labels, "reason": reason}, float(count)
        yield (
            "lvsha_vrrp_address_list_mismatch_total",
            labels,
            float(drops[DropReason.ADDRESS_LIST_MISMATCH]),
        )
        yield "lvsha_vrrp_priority_zero_sent_total", labels, float(runner.priority_zero_sent)
        yield (
            "lvsha_vrrp_priority_zero_received_total",
            labels,
            float(record.priority_zero_received),
        )
        yield (
            "lvsha_vrrp_reassertions_suppressed_total",
            labels,
            float(machine.reassertions_suppressed),
        )
        yield "lvsha_garp_sent_total", labels, float(runner.frames_announced)
        yield "lvsha_garp_send_errors_total", labels, float(runner.announce_failures)
    for track_file, value in engine.track_file_values.items():
        yield "lvsha_vrrp_track_file_value", {"file": track_file}, float(value)


def process_samples(engine: VrrpEngine, lag: LoopLag, *, running: bool = True) -> Iterator[Sample]:
    """Everything the VRRP process writes to its metrics file: the event loop's lag, the
    instances, and with `global.metrics.keepalived_names` (of the configuration in force)
    the keepalived exporter's families. `running` is false for the last write, on the way
    out (keepalived_up 0)."""
    yield from lag.samples(PROCESS)
    yield from vrrp_samples(engine)
    if engine.config.global_.metrics.keepalived_names:
        yield from keepalived_samples(engine, up=running)
