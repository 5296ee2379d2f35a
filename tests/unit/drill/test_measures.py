"""The failover measures from a synthetic client's-eye timeline of one kill and one return."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface

import pytest

from lvsha.drill.capture import AdvertSeen, GarpSeen
from lvsha.drill.probe import Probe
from lvsha.drill.scenarios import Election, measure_failover
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


def test_kill_of_the_master() -> None:
    # A advertises every 100 ms until 10.0; killed at 10.05; B's first advert at 10.41 and
    # its GARP at 10.412; probes from 10.06 up to 10.42 are lost.
    adverts = [advert(9.0 + i * 0.1, A, 150) for i in range(11)]
    adverts += [advert(10.41 + i * 0.1, B, 100) for i in range(5)]
    garps = [GarpSeen(10.412, VIP, MAC_B, 1), GarpSeen(9.0, VIP, MAC_A, 1)]
    timeline = probes(9.0, 11.0, lost_from=10.055, lost_until=10.415)
    measures = measure_failover(
        adverts,
        sorted(garps, key=lambda garp: garp.at),
        timeline,
        fault_at=10.05,
        window_end=10.9,
        vrid=VRID,
        vip=VIP,
        old_master=A,
        new_master=B,
        new_master_mac=MAC_B,
        reply_timeout=0.5,
    )
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
    measures = measure_failover(
        adverts,
        [],
        probes(19.0, 21.5, lost_from=99.0, lost_until=99.0),
        fault_at=20.0,
        window_end=21.0,
        vrid=VRID,
        vip=VIP,
        old_master=B,
        new_master=A,
        new_master_mac=MAC_A,
        reply_timeout=0.5,
    )
    assert measures.fault_to_advert == pytest.approx(0.8)
    assert measures.last_advert_to_advert == pytest.approx(0.05)
    assert measures.fault_to_garp is None
    assert (measures.lost_probes, measures.outage) == (0, 0.0)


def test_events_after_the_window_are_not_measured() -> None:
    measures = measure_failover(
        [advert(5.0, B, 100)],
        [GarpSeen(5.0, VIP, MAC_B, 1)],
        [],
        fault_at=1.0,
        window_end=2.0,
        vrid=VRID,
        vip=VIP,
        old_master=A,
        new_master=B,
        new_master_mac=MAC_B,
        reply_timeout=0.5,
    )
    assert (measures.fault_to_advert, measures.fault_to_garp) == (None, None)


def test_master_down_interval_follows_rfc_5798() -> None:
    election = Election(VRID, IPv4Interface("192.0.2.100/24"), "eth0", 1.0)
    assert election.master_down_interval(100) == pytest.approx(3 + 156 / 256)
    assert election.master_down_interval(255) == pytest.approx(3 + 1 / 256)
