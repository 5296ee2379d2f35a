"""The announcement schedule, stepped by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsha.net.garp import AnnouncementSchedule, GarpSettings

T0 = 1000.0


def run_until(schedule: AnnouncementSchedule, end: float) -> list[tuple[float, int]]:
    """Wake exactly at every deadline up to `end`, as an on-time event loop would."""
    sent = []
    while (deadline := schedule.next_deadline()) is not None and deadline <= end:
        count = schedule.due(deadline)
        assert count > 0, f"woken at {deadline} for nothing"
        sent.append((deadline - T0, count))
    return sent


def test_defaults_send_a_burst_now_and_another_after_the_delay() -> None:
    schedule = AnnouncementSchedule(GarpSettings(), T0)
    assert schedule.next_deadline() == T0
    assert schedule.due(T0) == 5
    assert schedule.next_deadline() == T0 + 5
    assert schedule.due(T0 + 4.999) == 0
    assert schedule.due(T0 + 5) == 5
    assert schedule.next_deadline() is None
    assert schedule.due(T0 + 100) == 0


def test_no_delay_means_a_single_burst() -> None:
    schedule = AnnouncementSchedule(GarpSettings(burst=3, delay=0), T0)
    assert run_until(schedule, T0 + 3600) == [(0.0, 3)]


def test_interval_spaces_the_packets_of_a_burst() -> None:
    schedule = AnnouncementSchedule(GarpSettings(burst=3, interval=0.25, delay=2), T0)
    assert run_until(schedule, T0 + 10) == [
        (0.0, 1), (0.25, 1), (0.5, 1), (2.0, 1), (2.25, 1), (2.5, 1),
    ]  # fmt: skip


def test_a_late_wakeup_sends_what_is_owed_at_once() -> None:
    schedule = AnnouncementSchedule(GarpSettings(burst=4, interval=0.1, delay=0), T0)
    assert schedule.due(T0 + 0.25) == 3
    assert schedule.next_deadline() == pytest.approx(T0 + 0.3)
    assert schedule.due(T0 + 0.3) == 1
    assert schedule.next_deadline() is None


def test_nothing_is_due_before_becoming_master() -> None:
    schedule = AnnouncementSchedule(GarpSettings(burst=2), T0)
    assert schedule.due(T0 - 1) == 0
    assert schedule.due(T0) == 2


def test_overlapping_bursts_both_count() -> None:
    # The second burst starts while the first is still going.
    schedule = AnnouncementSchedule(GarpSettings(burst=3, interval=1, delay=1.5), T0)
    assert run_until(schedule, T0 + 10) == [
        (0.0, 1), (1.0, 1), (1.5, 1), (2.0, 1), (2.5, 1), (3.5, 1),
    ]  # fmt: skip


def test_refresh_repeats_while_master() -> None:
    settings = GarpSettings(burst=2, delay=0, refresh=10, refresh_burst=3)
    schedule = AnnouncementSchedule(settings, T0)
    assert run_until(schedule, T0 + 35) == [(0.0, 2), (10.0, 3), (20.0, 3), (30.0, 3)]
    assert schedule.next_deadline() == T0 + 40


def test_refresh_burst_is_spaced_by_the_interval() -> None:
    settings = GarpSettings(burst=1, interval=0.5, delay=0, refresh=10, refresh_burst=2)
    schedule = AnnouncementSchedule(settings, T0)
    assert run_until(schedule, T0 + 21) == [(0.0, 1), (10.0, 1), (10.5, 1), (20.0, 1), (20.5, 1)]


def test_missed_refresh_periods_are_not_made_up() -> None:
    settings = GarpSettings(burst=1, delay=0, refresh=10, refresh_burst=2)
    schedule = AnnouncementSchedule(settings, T0)
    assert schedule.due(T0) == 1
    # The loop stalled for 35 s: one refresh burst now, then back on the 10 s grid.
    assert schedule.due(T0 + 35) == 2
    assert schedule.next_deadline() == T0 + 40
    assert schedule.due(T0 + 39.9) == 0
    assert schedule.due(T0 + 40) == 2


def test_leaving_master_stops_everything() -> None:
    settings = GarpSettings(burst=3, interval=1, delay=5, refresh=10)
    schedule = AnnouncementSchedule(settings, T0)
    assert schedule.due(T0) == 1
    schedule.left_master()
    assert schedule.stopped
    assert schedule.next_deadline() is None
    assert schedule.due(T0 + 100) == 0


@pytest.mark.parametrize(
    "changes",
    [
        {"burst": 0},
        {"refresh_burst": 0},
        {"interval": -0.1},
        {"delay": -1},
        {"refresh": math.nan},
        {"delay": math.inf},
    ],
)
def test_settings_are_checked(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="GARP"):
        GarpSettings(**changes)  # type: ignore[arg-type]


@given(
    burst=st.integers(1, 10),
    interval=st.sampled_from([0.0, 0.01, 0.1, 0.3]),
    delay=st.sampled_from([0.0, 0.5, 1.0, 5.0]),
    refresh=st.sampled_from([0.0, 0.1, 0.7, 3.0]),
    refresh_burst=st.integers(1, 5),
    start=st.floats(0, 1e6),
)
def test_packet_count_over_a_spell_as_master(  # noqa: PLR0917
    burst: int, interval: float, delay: float, refresh: float, refresh_burst: int, start: float
) -> None:
    settings = GarpSettings(burst, interval, delay, refresh, refresh_burst)
    schedule = AnnouncementSchedule(settings, start)
    # Every setting is a multiple of 0.01 s: a horizon between two such times is unambiguous.
    horizon = 10.005
    sent = 0
    previous = -math.inf
    while (deadline := schedule.next_deadline()) is not None and deadline <= start + horizon:
        assert deadline > previous, "deadlines must move forward"
        previous = deadline
        count = schedule.due(deadline)
        assert count > 0
        sent += count
    planned = [k * interval for k in range(burst)]
    if delay > 0:
        planned += [delay + k * interval for k in range(burst)]
    if refresh > 0:
        for period in range(1, int(horizon / refresh) + 1):
            planned += [period * refresh + k * interval for k in range(refresh_burst)]
    assert sent == sum(1 for offset in planned if offset <= horizon)
