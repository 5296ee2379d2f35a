"""The failover measures from a synthetic client's-eye timeline of one kill and one return,
and those from the new master's timer being due and over all of its VIPs."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest

from lvsha.drill.capture import (
    AddressEvent,
    AdvertSeen,
    GarpSeen,
    last_first_address_added,
    last_first_garp,
)
from lvsha.drill.probe import Probe
from lvsha.drill.scenarios import Election, FailoverMeasures, measure_failover, timer_due
from lvsha.vrrp.wire import VrrpVersion

A, B = IPv4Address("192.0.2.11"), IPv4Address("192.0.2.12")
MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
VIP = IPv4Address("192.0.2.100")
VRID = 42


def advert(at: float, source: IPv4Address, priority: int) -> AdvertSeen:
    mac = MAC_A if source == A else MAC_B
    return AdvertSeen(at, source, mac, VRID, priority, VrrpVersion.V3, 0.1)


def probes(start: float, end: float, lost_from: float, lost_until: float) -> list[Probe]:
    found = []
    for index in range(round((end - start) / 0.01)):
        sent = start + index * 0.01
        if lost_from <= sent < lost_until:
            found.append(Probe(index, sent))
        else:
            mac = MAC_A if sent < lost_from else MAC_B
            found.append(Probe(index, sent, sent + 0.001, mac))
    return found


def b_takes_over_from_a(
    adverts: Sequence[AdvertSeen],
    garps: Sequence[GarpSeen],
    probes_seen: Sequence[Probe] = (),
    **overrides: Any,
) -> FailoverMeasures:
    """`measure_failover` of B taking over from A (VRID, VIP and reply timeout as here);
    `overrides` are its other keyword arguments."""
    arguments: dict[str, Any] = {
        "fault_at": 10.05,
        "window_end": 10.9,
        "vrid": VRID,
        "vip": VIP,
        "old_master": A,
        "new_master": B,
        "new_master_mac": MAC_B,
        "reply_timeout": 0.5,
    }
    arguments.update(overrides)
    return measure_failover(adverts, garps, probes_seen, **arguments)


def test_kill_of_the_master() -> None:
    # A advertises every 100 ms until 10.0; killed at 10.05; B's first advert at 10.41 and
    # its GARP at 10.412; probes from 10.06 up to 10.42 are lost.
    adverts = [advert(9.0 + i * 0.1, A, 150) for i in range(11)]
    adverts += [advert(10.41 + i * 0.1, B, 100) for i in range(5)]
    garps = [GarpSeen(10.412, VIP, MAC_B, 1), GarpSeen(9.0, VIP, MAC_A, 1)]
    timeline = probes(9.0, 11.0, lost_from=10.055, lost_until=10.415)
    measures = b_takes_over_from_a(adverts, sorted(garps, key=lambda garp: garp.at), timeline)
    assert measures.fault_to_advert == pytest.approx(0.36)
    assert measures.last_advert_to_advert == pytest.approx(0.41)
    assert measures.fault_to_garp == pytest.approx(0.362)
    assert measures.lost_probes == 36
    assert measures.outage == pytest.approx(0.37)
    assert measures.recovered


def test_master_returns_while_the_backup_still_advertises() -> None:
    # B is master; A is started at 20.0 and advertises from 20.8; B's adverts go on until 20.75.
    adverts = [advert(19.05 + i * 0.1, B, 100) for i in range(18)]
    adverts += [advert(20.8, A, 150), advert(20.9, A, 150)]
    measures = b_takes_over_from_a(
        adverts,
        [],
        probes(19.0, 21.5, lost_from=99.0, lost_until=99.0),
        fault_at=20.0,
        window_end=21.0,
        old_master=B,
        new_master=A,
        new_master_mac=MAC_A,
    )
    assert measures.fault_to_advert == pytest.approx(0.8)
    assert measures.last_advert_to_advert == pytest.approx(0.05)
    assert measures.fault_to_garp is None
    assert (measures.lost_probes, measures.outage) == (0, 0.0)


def test_events_after_the_window_are_not_measured() -> None:
    measures = b_takes_over_from_a(
        [advert(5.0, B, 100)], [GarpSeen(5.0, VIP, MAC_B, 1)], fault_at=1.0, window_end=2.0
    )
    assert (measures.fault_to_advert, measures.fault_to_garp) == (None, None)


def test_master_down_interval_follows_rfc_5798() -> None:
    election = Election(VRID, IPv4Interface("192.0.2.100/24"), "eth0", 1.0)
    assert election.master_down_interval(100) == pytest.approx(3 + 156 / 256)
    assert election.master_down_interval(255) == pytest.approx(3 + 1 / 256)


MDI_B = 3 * 0.1 + 156 / 256 * 0.1
SKEW_B = 156 / 256 * 0.1


def test_the_timer_is_due_master_down_interval_after_the_last_advert() -> None:
    adverts = [advert(9.9, A, 150), advert(10.0, A, 150), advert(10.4, B, 100)]
    due = timer_due(adverts, A, VRID, before=10.4, master_down_interval=MDI_B, skew_time=SKEW_B)
    assert due == pytest.approx(10.0 + MDI_B)


def test_after_a_priority_0_advert_the_timer_is_due_after_skew_time() -> None:
    adverts = [advert(10.0, A, 150), advert(10.02, A, 0), advert(10.09, B, 100)]
    due = timer_due(adverts, A, VRID, before=10.09, master_down_interval=MDI_B, skew_time=SKEW_B)
    assert due == pytest.approx(10.02 + SKEW_B)


def test_without_an_advert_of_the_old_master_no_timer_is_known() -> None:
    adverts = [advert(10.4, B, 100)]
    assert (
        timer_due(adverts, A, VRID, before=10.4, master_down_interval=MDI_B, skew_time=SKEW_B)
        is None
    )


def kill_timeline(
    *, vips: tuple[IPv4Address, ...] = (VIP,), added_at: float = 10.3625
) -> tuple[list[AdvertSeen], list[GarpSeen], list[AddressEvent]]:
    """A's last advert at 10.0; B's timer due at 10.0 + MDI_B (10.3609); B advertises 1 ms
    later, its kernel adds the VIPs from `added_at`, 0.1 ms apart, each announced 0.2 ms after."""
    adverts = [advert(9.9, A, 150), advert(10.0, A, 150)]
    adverts += [advert(10.0 + MDI_B + 0.001 + i * 0.1, B, 100) for i in range(3)]
    events = [
        AddressEvent(added_at + i * 0.0001, True, IPv4Interface(f"{v}/24"), 2, None)
        for i, v in enumerate(vips)
    ]
    garps = [GarpSeen(e.at + 0.0002, e.address.ip, MAC_B, 1) for e in events]
    return adverts, garps, events


def test_takeover_measured_from_the_timers_due_time() -> None:
    adverts, garps, events = kill_timeline()
    measures = b_takes_over_from_a(
        adverts, garps, new_master_addresses=events, timers=(MDI_B, SKEW_B)
    )
    due = 10.0 + MDI_B
    assert measures.due_to_advert == pytest.approx(0.001)
    assert measures.due_to_vip_added == pytest.approx(10.3625 - due)
    assert measures.due_to_garp == pytest.approx(10.3627 - due)
    assert measures.vip_added_to_garp == pytest.approx(0.0002)
    # One VIP: the last of "all" is that one.
    assert measures.advert_to_last_garp == pytest.approx(10.3627 - (due + 0.001))


def test_a_preempting_master_has_no_timer_figures() -> None:
    adverts, garps, events = kill_timeline()
    measures = b_takes_over_from_a(adverts, garps, new_master_addresses=events)
    assert (measures.due_to_advert, measures.due_to_vip_added, measures.due_to_garp) == (
        None,
        None,
        None,
    )
    assert measures.vip_added_to_garp is not None


TWENTY = tuple(VIP + i for i in range(20))


def twenty_vip_measures(garps: list[GarpSeen], events: list[AddressEvent]) -> FailoverMeasures:
    adverts, _, _ = kill_timeline(vips=TWENTY)
    return b_takes_over_from_a(
        adverts,
        garps,
        window_end=10.37,
        new_master_addresses=events,
        timers=(MDI_B, SKEW_B),
        vips=TWENTY,
    )


def test_twenty_vips_are_announced_when_the_last_first_garp_arrives() -> None:
    _, garps, events = kill_timeline(vips=TWENTY)
    # A second burst repeats the first: it does not move "announced", nor do the old master's.
    repeats = [GarpSeen(g.at + 1.0, g.address, MAC_B, 1) for g in garps]
    old = [GarpSeen(10.5, TWENTY[-1], MAC_A, 1)]
    measures = twenty_vip_measures(sorted(garps + repeats + old, key=lambda g: g.at), events)
    first_advert_at = 10.0 + MDI_B + 0.001
    last_added = 10.3625 + 19 * 0.0001
    # Past the window's end (10.37), the last of the twenty still counts.
    assert measures.advert_to_last_vip_added == pytest.approx(last_added - first_advert_at)
    assert measures.advert_to_last_garp == pytest.approx(last_added + 0.0002 - first_advert_at)


def test_a_vip_never_announced_leaves_no_figure() -> None:
    _, garps, events = kill_timeline(vips=TWENTY)
    measures = twenty_vip_measures(garps[:-1], events[:-1])
    assert (measures.advert_to_last_garp, measures.advert_to_last_vip_added) == (None, None)


def test_last_first_garp_and_address_of_each_vip() -> None:
    vips = (VIP, VIP + 1)
    garps = [
        GarpSeen(1.0, VIP, MAC_B, 1),
        GarpSeen(2.0, VIP, MAC_B, 1),
        GarpSeen(1.5, VIP + 1, MAC_B, 1),
    ]
    found = last_first_garp(garps, vips, MAC_B, after=0.5)
    assert found is not None and (found.at, found.address) == (1.5, VIP + 1)
    assert last_first_garp(garps, vips, MAC_A, after=0.5) is None
    assert last_first_garp(garps, vips, MAC_B, after=1.6) is None  # none of VIP + 1 after
    events = [
        AddressEvent(1.0, False, IPv4Interface(f"{VIP + 1}/24"), 2, None),
        AddressEvent(1.1, True, IPv4Interface(f"{VIP}/24"), 2, None),
        AddressEvent(1.2, True, IPv4Interface(f"{VIP + 1}/24"), 2, None),
    ]
    added = last_first_address_added(events, vips, after=0.5)
    assert added is not None and added.at == 1.2
    assert last_first_address_added(events, (*vips, VIP + 2), after=0.5) is None
