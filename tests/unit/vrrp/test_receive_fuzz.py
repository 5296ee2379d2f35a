"""Fuzz the whole receive path: socket edge, decoder, instance check, drop log, state machine
and sync groups, in every machine state (Initialize included), one instance or several.

Packets are built for the instances under test (their VRIDs, versions and VIPs) with random
priorities, intervals, senders and auth, then mutated, so that many get past the decoder and
reach the machines. Nothing but a counted drop or machine actions may come out.
`bench/fuzz_adverts.py` runs the same fuzzer for a million adverts.
"""

from __future__ import annotations

import pytest

from lvsha.vrrp.events import VrrpState
from lvsha.vrrp.wire import DropReason
from tests.unit.vrrp.advert_fuzz import CONFIGS, run_fuzz, unexplained

PACKETS = {"v2": 4_000, "v3": 4_000, "v3-ipv6": 4_000, "multi": 8_000}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_packet_is_dropped_or_becomes_machine_actions(name: str) -> None:
    packets = PACKETS[name]
    report = run_fuzz(CONFIGS[name], f"lvsha-{name}", packets)
    assert report.packets == packets
    assert report.escaped == 0
    assert report.internal_errors == 0
    # A bug caught at the edge would be counted here, with a traceback in the log.
    assert report.drops[DropReason.RECEIVE_ERROR.value] == 0
    assert report.tracebacks == 0
    # Every delivery is a drop counted by reason or an advert the machine took.
    assert unexplained(report) == 0
    # The generator is aimed well enough that the machines really are exercised, in
    # every state, and adverts do arrive while instances are in Initialize.
    assert report.accepted > report.deliveries // 20
    assert report.drops[DropReason.INSTANCE_NOT_RUNNING.value] > 0
    for instance, states in report.states.items():
        assert VrrpState.INITIALIZE in states, instance
        assert {VrrpState.BACKUP, VrrpState.FAULT} <= states, instance
    assert any(VrrpState.MASTER in states for states in report.states.values())
    # The log stays bounded: the drop log is rate-limited per (reason, sender).
    assert report.log_lines < report.deliveries // 2
