"""The keepalived exporter's metric names, for dashboards and alerts built on it.

With `global.metrics.keepalived_names: true` the VRRP process also writes the families of the
widely used keepalived exporter (github.com/mehdy/keepalived-exporter, formerly
cafebazaar/keepalived-exporter), with its names, label names and value encodings, from lvsha's
own figures. Its per-instance labels are `iname` (the instance's name), `intf` (its
interface) and `vrid`; the state families are per VIP, with `intf` the VIP's device and
`ip_address` the VIP as keepalived prints it (address/prefix length).

| keepalived exporter family                        | from lvsha                                  |
| ------------------------------------------------- | ------------------------------------------- |
| keepalived_up                                     | 1 while the VRRP engine runs; 0 in the      |
|                                                   | file's last write, on the way out (then     |
|                                                   | nothing else, as the exporter does)         |
| keepalived_vrrp_state{iname,intf,vrid,ip_address} | the state, as keepalived numbers it:        |
|                                                   | 0 INIT (lvsha's INITIALIZE), 1 BACKUP,      |
|                                                   | 2 MASTER, 3 FAULT; RELEASING (priority 0    |
|                                                   | sent, VIPs kept until the new master is     |
|                                                   | heard) is 1: mastership is given up, and    |
|                                                   | keepalived_release_master_total counted it  |
| keepalived_vrrp_excluded_state{...}               | the same, per virtual_ipaddresses_excluded  |
| keepalived_advertisements_received_total          | lvsha_vrrp_adverts_received_total: adverts  |
|                                                   | that passed every check (keepalived also    |
|                                                   | counts ones it then refuses for their       |
|                                                   | authentication or interval)                 |
| keepalived_advertisements_sent_total              | lvsha_vrrp_adverts_sent_total               |
| keepalived_become_master_total                    | lvsha_vrrp_transitions_total{to="MASTER"}   |
| keepalived_release_master_total                   | lvsha_vrrp_transitions_total{from="MASTER"} |
| keepalived_priority_zero_received_total           | lvsha_vrrp_priority_zero_received_total     |
| keepalived_priority_zero_sent_total               | lvsha_vrrp_priority_zero_sent_total         |
| keepalived_gratuitous_arp_delay_total             | the instance's garp.delay in seconds        |
|                                                   | (keepalived's garp_master_delay): a setting |
|                                                   | as in the exporter, despite the name        |
| keepalived_packet_length_errors_total             | rx errors truncated, ipv4_header_invalid,   |
|                                                   | ipv4_length_mismatch,                       |
|                                                   | address_length_mismatch,                    |
|                                                   | address_count_mismatch                      |
| keepalived_advertisements_interval_errors_total   | advert_interval_mismatch,                   |
|                                                   | zero_advert_interval                        |
| keepalived_ip_ttl_errors_total                    | ttl_not_255                                 |
| keepalived_invalid_type_received_total            | unknown_type                                |
| keepalived_address_list_errors_total              | lvsha_vrrp_address_list_mismatch_total      |
| keepalived_authentication_invalid_total           | unknown_auth_type, auth_ah_unsupported      |
| keepalived_authentication_mismatch_total          | auth_type_mismatch                          |
| keepalived_authentication_failure_total           | auth_password_mismatch                      |
| keepalived_script_status{name}                    | each running vrrp_script: 1 GOOD (healthy), |
|                                                   | 0 BAD (failed, or no result yet, as         |
|                                                   | keepalived reports a script in INIT)        |
| keepalived_script_state{name}                     | 0 idle, 1 running (keepalived's 2 and 3,    |
|                                                   | termination requested or forced, do not     |
|                                                   | occur: lvsha kills a run's process group at |
|                                                   | its timeout)                                |

Not exported: `keepalived_exporter_check_script_status` (a script the exporter itself runs per
VIP) and `keepalived_exporter_build_info` (the exporter's own build; lvsha_build_info is
lvsha's). The rx error reasons with no keepalived counter (not_vrrp_protocol, unknown_version,
version_2_over_ipv6, bad_checksum, invalid_vrid, vrid_mismatch, version_mismatch,
local_address_owner, own_advert, family_mismatch, instance_not_running, receive_error and the
socket's not_a_unicast_peer, unicast_on_multicast_socket, multicast_on_unicast_socket) are in
lvsha_vrrp_rx_errors_total only.
"""

from __future__ import annotations

from collections.abc import Iterator

from lvsha.daemon.metrics import Family, Sample
from lvsha.vrrp.engine import VrrpEngine
from lvsha.vrrp.events import VrrpState
from lvsha.vrrp.track_script import RunPhase, ScriptHealth
from lvsha.vrrp.wire import DropReason

STATE_VALUES: dict[VrrpState, int] = {
    VrrpState.INITIALIZE: 0,
    VrrpState.BACKUP: 1,
    VrrpState.MASTER: 2,
    VrrpState.FAULT: 3,
    VrrpState.RELEASING: 1,
}
"""keepalived_vrrp_state's value for each state (the exporter's INIT, BACKUP, MASTER, FAULT)."""

ERROR_COUNTERS: dict[str, tuple[DropReason, ...]] = {
    "keepalived_packet_length_errors_total": (
        DropReason.TRUNCATED,
        DropReason.IPV4_HEADER_INVALID,
        DropReason.IPV4_LENGTH_MISMATCH,
        DropReason.ADDRESS_LENGTH_MISMATCH,
        DropReason.ADDRESS_COUNT_MISMATCH,
    ),
    "keepalived_advertisements_interval_errors_total": (
        DropReason.ADVERT_INTERVAL_MISMATCH,
        DropReason.ZERO_ADVERT_INTERVAL,
    ),
    "keepalived_ip_ttl_errors_total": (DropReason.TTL_NOT_255,),
    "keepalived_invalid_type_received_total": (DropReason.UNKNOWN_TYPE,),
    "keepalived_address_list_errors_total": (
        DropReason.ADDRESS_LIST_MISMATCH,
        DropReason.ADDRESS_LIST_REFUSED,
    ),
    "keepalived_authentication_invalid_total": (
        DropReason.UNKNOWN_AUTH_TYPE,
        DropReason.AUTH_AH_UNSUPPORTED,
    ),
    "keepalived_authentication_mismatch_total": (DropReason.AUTH_TYPE_MISMATCH,),
    "keepalived_authentication_failure_total": (DropReason.AUTH_PASSWORD_MISMATCH,),
}
"""Each keepalived error counter: the sum of these lvsha receive drops."""

SCRIPT_STATUS = {ScriptHealth.HEALTHY: 1, ScriptHealth.FAILED: 0, ScriptHealth.INIT: 0}
SCRIPT_STATE = {RunPhase.IDLE: 0, RunPhase.RUNNING: 1}

KEEPALIVED_FAMILIES = (
    Family("keepalived_up", "gauge", "Status"),
    Family("keepalived_vrrp_state", "gauge", "State of vrrp"),
    Family("keepalived_vrrp_excluded_state", "gauge", "State of vrrp with excluded VIP"),
    Family("keepalived_gratuitous_arp_delay_total", "counter", "Gratuitous ARP delay"),
    Family("keepalived_advertisements_received_total", "counter", "Advertisements received"),
    Family("keepalived_advertisements_sent_total", "counter", "Advertisements sent"),
    Family("keepalived_become_master_total", "counter", "Became master"),
    Family("keepalived_release_master_total", "counter", "Released master"),
    Family("keepalived_packet_length_errors_total", "counter", "Packet length errors"),
    Family(
        "keepalived_advertisements_interval_errors_total",
        "counter",
        "Advertisement interval errors",
    ),
    Family("keepalived_ip_ttl_errors_total", "counter", "TTL errors"),
    Family("keepalived_invalid_type_received_total", "counter", "Invalid type errors"),
    Family("keepalived_address_list_errors_total", "counter", "Address list errors"),
    Family("keepalived_authentication_invalid_total", "counter", "Authentication invalid"),
    Family("keepalived_authentication_mismatch_total", "counter", "Authentication mismatch"),
    Family("keepalived_authentication_failure_total", "counter", "Authentication failure"),
    Family("keepalived_priority_zero_received_total", "counter", "Priority zero received"),
    Family("keepalived_priority_zero_sent_total", "counter", "Priority zero sent"),
    Family("keepalived_script_status", "gauge", "Tracker Script Status"),
    Family("keepalived_script_state", "gauge", "Tracker Script State"),
)
"""The exporter's families, with its help texts."""


def keepalived_samples(engine: VrrpEngine, *, up: bool = True) -> Iterator[Sample]:
    """The keepalived exporter's samples for every configured instance and track script."""
    yield "keepalived_up", {}, 1.0 if up else 0.0
    if not up:
        return
    for name, record in engine.instances.items():
        inst = record.config
        runner = record.runner
        labels = {"iname": name, "intf": inst.interface, "vrid": str(inst.virtual_router_id)}
        state = float(STATE_VALUES[runner.state])
        for family, vips in (
            ("keepalived_vrrp_state", inst.virtual_ipaddresses),
            ("keepalived_vrrp_excluded_state", inst.virtual_ipaddresses_excluded),
        ):
            for vip in vips:
                yield (
                    family,
                    {
                        "iname": name,
                        "intf": vip.device or inst.interface,
                        "vrid": labels["vrid"],
                        "ip_address": str(vip.address),
                    },
                    state,
                )
        became = left = 0
        for (old, new), count in record.transitions.items():
            became += count if new is VrrpState.MASTER else 0
            left += count if old is VrrpState.MASTER else 0
        yield "keepalived_advertisements_received_total", labels, float(record.adverts_received)
        yield "keepalived_advertisements_sent_total", labels, float(runner.adverts_sent)
        yield "keepalived_become_master_total", labels, float(became)
        yield "keepalived_release_master_total", labels, float(left)
        drops = record.socket.drops
        for family, reasons in ERROR_COUNTERS.items():
            yield family, labels, float(sum(drops[reason] for reason in reasons))
        yield (
            "keepalived_priority_zero_received_total",
            labels,
            float(record.priority_zero_received),
        )
        yield "keepalived_priority_zero_sent_total", labels, float(runner.priority_zero_sent)
        yield "keepalived_gratuitous_arp_delay_total", labels, float(runner.garp.delay)
    for name, script in engine.scripts.items():
        state_of = script.state
        if state_of is None:
            continue  # not started yet
        labels = {"name": name}
        yield "keepalived_script_status", labels, float(SCRIPT_STATUS[state_of.health])
        yield "keepalived_script_state", labels, float(SCRIPT_STATE[state_of.phase])
