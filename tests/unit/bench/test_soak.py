"""The soak's reading of the event stream and of the master's advert rhythm."""

from __future__ import annotations

import json
from ipaddress import IPv4Address

import pytest

from bench.soak import advert_rhythm, state_changes
from lvsha.drill.capture import AdvertSeen
from lvsha.vrrp.wire import VrrpVersion

A, B = IPv4Address("192.0.2.11"), IPv4Address("192.0.2.12")


def line(seq: int, kind: str = "vrrp_state", **fields: object) -> str:
    return json.dumps({"seq": seq, "time": "2025-01-01T00:00:00.000Z", "type": kind, **fields})


def test_state_changes_skip_other_events_and_replayed_ones() -> None:
    seen: set[int] = set()
    first = state_changes([line(1, old="INITIALIZE", new="BACKUP"), line(2, "link"), ""], 1.0, seen)
    assert [c.line["new"] for c in first] == ["BACKUP"]
    # A reconnection replays recent events: only seq 3 is new.
    again = state_changes([line(1, new="BACKUP"), line(3, new="MASTER")], 2.0, seen)
    assert [(c.at, c.line["new"]) for c in again] == [(2.0, "MASTER")]


def advert(at: float, source: IPv4Address, priority: int = 150) -> AdvertSeen:
    return AdvertSeen(at, source, "02:00:00:00:00:0a", 42, priority, VrrpVersion.V3, 0.02)


def test_advert_rhythm_counts_gaps_over_three_intervals() -> None:
    times = [0.0, 0.02, 0.04, 0.11, 0.13]
    adverts = [advert(t, A) for t in times] + [advert(0.05, B, 100), advert(0.2, A, 0)]
    rhythm = advert_rhythm(adverts, A)
    assert rhythm.count == 5
    assert rhythm.max_gap == pytest.approx(0.07)
    assert rhythm.median_gap == pytest.approx(0.02)
    assert rhythm.late == 1
    assert advert_rhythm(adverts, B).max_gap is None
