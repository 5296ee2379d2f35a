"""Probe durations counted into histogram buckets by check type."""

from __future__ import annotations

import math

from lvsha.checks.durations import DURATION_BUCKETS, CheckDurations


def test_buckets_span_a_millisecond_to_ten_seconds_in_order() -> None:
    assert DURATION_BUCKETS[0] == 0.001
    assert DURATION_BUCKETS[-1] == 10.0
    assert list(DURATION_BUCKETS) == sorted(set(DURATION_BUCKETS))


def test_each_duration_lands_in_the_first_bucket_that_holds_it() -> None:
    durations = CheckDurations()
    for seconds in (0.0004, 0.001, 0.0011, 0.3, 10.0, 42.0, -0.5):
        durations.observe("tcp", seconds)
    tcp = durations.by_type()["tcp"]
    cumulative = dict(tcp.cumulative())
    # A duration equal to a bound is within it (le); a negative one (a clock step) counts as 0.
    assert cumulative[0.001] == 3  # 0.0004, 0.001 and -0.5 read as 0
    assert cumulative[0.0025] == 4
    assert cumulative[0.25] == 4
    assert cumulative[0.5] == 5
    assert cumulative[10.0] == 6
    assert cumulative[math.inf] == 7 == tcp.count
    assert math.isclose(tcp.total, 0.0004 + 0.001 + 0.0011 + 0.3 + 10.0 + 42.0)
    counts = [count for _, count in tcp.cumulative()]
    assert counts == sorted(counts)  # cumulative: never decreasing


def test_types_are_kept_apart_in_the_order_first_seen() -> None:
    durations = CheckDurations()
    durations.observe("http", 0.02)
    durations.observe("tcp", 0.002)
    durations.observe("http", 0.03)
    assert list(durations.by_type()) == ["http", "tcp"]
    assert durations.by_type()["http"].count == 2
    assert durations.by_type()["tcp"].count == 1


def test_a_declared_type_is_there_at_zero_until_observed() -> None:
    durations = CheckDurations()
    durations.declare("dns")
    dns = durations.by_type()["dns"]
    assert (dns.count, dns.total, [count for _, count in dns.cumulative()][-1]) == (0, 0.0, 0)
    durations.observe("dns", 0.004)
    durations.declare("dns")  # declaring again keeps what was observed
    assert durations.by_type()["dns"].count == 1
