"""The address watcher hears its own namespace's address changes, and only those."""

from __future__ import annotations

import time
from ipaddress import IPv4Interface

import pytest

from lvsha.drill.capture import AddressWatcher
from lvsha.drill.lab import Lab, wait_until

pytestmark = pytest.mark.netns

VIP = IPv4Interface("192.0.2.100/24")


def test_added_and_removed_addresses_are_recorded_in_order(lab: Lab) -> None:
    director = lab.add_host("a", "192.0.2.11/24")
    other = lab.add_host("b", "192.0.2.12/24")
    with AddressWatcher(director) as watcher:
        other.ip("addr", "add", "192.0.2.200/24", "dev", "eth0")
        before_add = time.monotonic()
        director.ip("addr", "add", str(VIP), "dev", "eth0")
        after_add = time.monotonic()
        director.ip("addr", "del", str(VIP), "dev", "eth0")
        wait_until(lambda: len(watcher.events_since(0.0)) >= 2, 5.0, what="two address events")
        events = watcher.events_since(0.0)
    assert [(e.added, e.address) for e in events] == [(True, VIP), (False, VIP)]
    assert events[0].at <= events[1].at
    # Stamped by another process on the same monotonic clock, while `ip` was adding it.
    assert before_add <= events[0].at <= after_add
    assert events[0].label == "eth0"
