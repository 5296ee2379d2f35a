"""Address events decoded from rtnetlink datagrams, and the VIP-added-to-GARP measure."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv4Interface

import pytest

from lvsha.drill.capture import (
    IFA_ADDRESS,
    IFA_LABEL,
    IFA_LOCAL,
    RTM_DELADDR,
    RTM_NEWADDR,
    AddressEvent,
    AdvertSeen,
    GarpSeen,
    first_address_added,
    parse_address_messages,
)
from lvsha.drill.report import MEASURES, VIP_TO_GARP, format_table, report_json
from lvsha.drill.scenarios import Scenario, ScenarioResult, measure_failover
from lvsha.vrrp.wire import VrrpVersion

VIP = IPv4Address("192.0.2.100")
A, B = IPv4Address("192.0.2.11"), IPv4Address("192.0.2.12")
MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
RTM_NEWLINK = 16


def attribute(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * (-length % 4)


def message(kind: int, family: int, prefix: int, index: int, *attributes: bytes) -> bytes:
    body = struct.pack("=BBBBI", family, prefix, 0, 0, index) + b"".join(attributes)
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def new_vip(kind: int = RTM_NEWADDR, label: bytes = b"eth0\0") -> bytes:
    packed = VIP.packed
    return message(
        kind,
        socket.AF_INET,
        24,
        2,
        attribute(IFA_ADDRESS, packed),
        attribute(IFA_LOCAL, packed),
        attribute(IFA_LABEL, label),
    )


def test_an_added_and_a_removed_ipv4_address() -> None:
    added, removed = parse_address_messages(new_vip() + new_vip(RTM_DELADDR), at=5.0)
    assert added == AddressEvent(5.0, True, IPv4Interface("192.0.2.100/24"), 2, "eth0")
    assert (removed.added, removed.address.ip) == (False, VIP)


def test_the_local_address_wins_over_the_peer_address() -> None:
    peer = IPv4Address("198.51.100.1")
    data = message(
        RTM_NEWADDR,
        socket.AF_INET,
        32,
        3,
        attribute(IFA_ADDRESS, peer.packed),
        attribute(IFA_LOCAL, VIP.packed),
    )
    (event,) = parse_address_messages(data, at=1.0)
    assert (event.address, event.label) == (IPv4Interface("192.0.2.100/32"), None)


def test_other_families_kinds_and_truncated_messages_are_skipped() -> None:
    ipv6 = message(RTM_NEWADDR, socket.AF_INET6, 64, 2, attribute(IFA_ADDRESS, b"\x20" * 16))
    link = message(RTM_NEWLINK, socket.AF_UNSPEC, 0, 2)
    assert parse_address_messages(ipv6 + link, at=1.0) == []
    assert parse_address_messages(new_vip()[:-4], at=1.0) == []
    (event,) = parse_address_messages(ipv6 + new_vip(), at=1.0)
    assert event.address.ip == VIP


def test_first_address_added_skips_removals_earlier_events_and_other_addresses() -> None:
    other = IPv4Interface("192.0.2.7/24")
    events = [
        AddressEvent(1.0, True, IPv4Interface("192.0.2.100/24"), 2, None),
        AddressEvent(2.0, False, IPv4Interface("192.0.2.100/24"), 2, None),
        AddressEvent(2.5, True, other, 2, None),
        AddressEvent(3.0, True, IPv4Interface("192.0.2.100/24"), 2, None),
    ]
    found = first_address_added(events, VIP, after=1.5)
    assert found is not None and found.at == 3.0
    assert first_address_added(events, VIP, after=3.5) is None


def measure(garp_at: float, added_at: float | None) -> float | None:
    adverts = [AdvertSeen(9.9, A, MAC_A, 42, 150, VrrpVersion.V3, 0.1)]
    adverts.append(AdvertSeen(10.3, B, MAC_B, 42, 100, VrrpVersion.V3, 0.1))
    events = []
    if added_at is not None:
        events.append(AddressEvent(added_at, True, IPv4Interface("192.0.2.100/24"), 2, None))
    measures = measure_failover(
        adverts,
        [GarpSeen(garp_at, VIP, MAC_B, 1)],
        [],
        fault_at=10.0,
        window_end=11.0,
        vrid=42,
        vip=VIP,
        old_master=A,
        new_master=B,
        new_master_mac=MAC_B,
        reply_timeout=0.5,
        new_master_addresses=events,
    )
    return measures.vip_added_to_garp


def test_vip_added_to_garp_is_measured_from_the_address_event() -> None:
    assert measure(garp_at=10.3025, added_at=10.3005) == pytest.approx(0.002)


def test_a_garp_before_the_address_shows_as_negative() -> None:
    assert measure(garp_at=10.3, added_at=10.301) == pytest.approx(-0.001)


def test_without_an_address_event_there_is_no_figure() -> None:
    assert measure(garp_at=10.3, added_at=None) is None
    # An address added before the fault belongs to an earlier election.
    assert measure(garp_at=10.3, added_at=9.0) is None


def test_the_vip_column_appears_only_when_asked_for() -> None:
    result = ScenarioResult(Scenario.KILL, 1, "a", "b", None, "not within 2 s")
    assert VIP_TO_GARP.heading not in format_table([result])
    assert VIP_TO_GARP.heading in format_table([result], measures=(*MEASURES, VIP_TO_GARP))
    plain = report_json([result])
    watched = report_json([result], measures=(*MEASURES, VIP_TO_GARP))
    assert VIP_TO_GARP.key not in plain["runs"][0]
    assert watched["runs"][0][VIP_TO_GARP.key] is None
    assert VIP_TO_GARP.key in watched["summary"]["kill"]
