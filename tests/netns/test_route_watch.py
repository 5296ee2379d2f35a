"""The drill's route watcher against the kernel: multipath routes added, changed, removed."""

from __future__ import annotations

import time

import pytest

from lvsha.drill.lab import Lab
from lvsha.drill.route_watch import RouteWatcher

pytestmark = pytest.mark.netns

PREFIX = "198.51.100.10/32"


def test_the_watcher_times_each_change_of_the_ecmp_set(lab: Lab) -> None:
    host = lab.add_host("r", "192.0.2.1/24")
    watcher = RouteWatcher(host, PREFIX)
    try:
        assert watcher.current() == frozenset()
        began = time.monotonic()
        host.ip(
            "route", "add", PREFIX,
            "nexthop", "via", "192.0.2.11", "nexthop", "via", "192.0.2.12",
        )  # fmt: skip
        host.ip("route", "add", "198.51.100.11/32", "via", "192.0.2.13")  # another prefix
        assert watcher.wait_current(lambda hops: hops == {"192.0.2.11", "192.0.2.12"}, 5)
        host.ip("route", "replace", PREFIX, "via", "192.0.2.12")
        change = watcher.wait_for(lambda hops: hops == {"192.0.2.12"}, began, 5)
        assert change is not None and change.at >= began
        host.ip("route", "del", PREFIX)
        assert watcher.wait_current(lambda hops: not hops, 5)
        assert [c.nexthops for c in watcher.changes_since(began)] == [
            {"192.0.2.11", "192.0.2.12"},
            {"192.0.2.12"},
            frozenset(),
        ]
        assert not watcher.wait_current(bool, 0.05)
    finally:
        watcher.stop()
