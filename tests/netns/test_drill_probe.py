"""The VIP prober measures a VIP moved by hand: the outage, the lost probes and who answered."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from ipaddress import IPv4Address

import pytest

from lvsha.drill.lab import Host, Lab, wait_until
from lvsha.drill.probe import Probe, VipProber, measure_outage
from tests.netns.standin_director import garp_frame, open_arp_socket

pytestmark = pytest.mark.netns

VIP = IPv4Address("192.0.2.100")
INTERVAL = 0.01
REPLY_TIMEOUT = 0.2


def mac_of(host: Host) -> str:
    mac: str = json.loads(host.ip("-j", "link", "show", "dev", "eth0"))[0]["address"]
    return mac


def announce(host: Host, address: IPv4Address) -> None:
    def send() -> None:
        sock, mac = open_arp_socket("eth0")
        with sock:
            sock.send(garp_frame(mac, address))

    host.call(send)


def answered_by_last(probes: Sequence[Probe], count: int) -> list[str | None]:
    judged = [p for p in probes if p.sent_at <= time.monotonic() - 0.05]
    return [p.answered_by for p in judged[-count:]]


def test_outage_and_answering_mac_follow_a_hand_made_move(lab: Lab) -> None:
    client = lab.add_host("client", "192.0.2.1/24")
    a = lab.add_host("a", "192.0.2.11/24")
    b = lab.add_host("b", "192.0.2.12/24")
    mac_a, mac_b = mac_of(a), mac_of(b)
    a.ip("addr", "add", f"{VIP}/24", "dev", "eth0")
    with VipProber(client, VIP, INTERVAL) as prober:
        started = time.monotonic()
        wait_until(
            lambda: answered_by_last(prober.probes_since(started), 10) == [mac_a] * 10,
            5,
            what="a answering for the VIP",
        )
        fault_at = time.monotonic()
        a.ip("addr", "del", f"{VIP}/24", "dev", "eth0")
        deleted_at = time.monotonic()
        # Let a gap of at least 20 probes build up before the VIP reappears on b.
        wait_until(
            lambda: sum(p.answered_at is None for p in prober.probes_since(deleted_at)) >= 20,
            5,
            what="20 probes unanswered",
        )
        moved_at = time.monotonic()
        b.ip("addr", "add", f"{VIP}/24", "dev", "eth0")
        announce(b, VIP)
        announced_at = time.monotonic()
        wait_until(
            lambda: answered_by_last(prober.probes_since(announced_at), 10) == [mac_b] * 10,
            5,
            what="b answering for the VIP",
        )
        window_end = time.monotonic()
        wait_until(
            lambda: all(
                p.answered_at is not None or p.sent_at < time.monotonic() - REPLY_TIMEOUT
                for p in prober.probes_since(fault_at)
                if p.sent_at <= window_end
            ),
            5,
            what="every probe of the window answered or timed out",
        )
        probes = prober.probes_since(fault_at - 1.0)

    outage = measure_outage(probes, fault_at, window_end, REPLY_TIMEOUT)
    assert outage.recovered
    # Nothing answers between the delete and the announcement; probes on either side do.
    assert moved_at - deleted_at <= outage.outage <= announced_at - fault_at + 0.05
    assert 20 <= outage.lost <= (announced_at - fault_at) / INTERVAL + 3
    assert abs(outage.lost - (outage.outage / INTERVAL - 1)) <= 3
    before = {p.answered_by for p in probes if p.sent_at < fault_at and p.answered_by}
    after = {p.answered_by for p in probes if p.sent_at > announced_at and p.answered_by}
    assert (before, after) == ({mac_a}, {mac_b})


def test_probes_go_unanswered_when_nobody_holds_the_vip(lab: Lab) -> None:
    client = lab.add_host("client", "192.0.2.1/24")
    with VipProber(client, VIP, INTERVAL) as prober:
        started = time.monotonic()
        wait_until(lambda: len(prober.probes_since(started)) >= 30, 5, what="30 probes sent")
        probes = prober.probes_since(started)
    assert all(p.answered_at is None for p in probes)
    outage = measure_outage(probes, started, probes[-1].sent_at, REPLY_TIMEOUT)
    assert outage.lost == len(probes) and not outage.recovered
