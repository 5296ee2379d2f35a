"""Effective priority and tracking fault from tracked scripts and interfaces."""

from __future__ import annotations

import pytest

from lvsha.vrrp.events import (
    Action,
    FaultReason,
    LinkChanged,
    PriorityChanged,
    SendAdvert,
    StateChanged,
    TimerFired,
    TrackingFault,
    VrrpState,
)
from lvsha.vrrp.tracking import (
    AnyTracker,
    Reading,
    Tracker,
    TrackingState,
    TrackingVerdict,
    evaluate,
)
from tests.unit.vrrp.test_machine import as_master

BONUS = Tracker("check_lvs", weight=20)
PENALTY = Tracker("eth1", weight=-30)
CRITICAL = Tracker("check_haproxy", weight=0)


@pytest.mark.parametrize(
    ("healthy", "expected"),
    [(True, TrackingVerdict(120, fault=False)), (False, TrackingVerdict(100, fault=False))],
)
def test_positive_weight_adds_while_healthy(healthy: bool, expected: TrackingVerdict) -> None:
    assert evaluate(100, {BONUS: healthy}) == expected


@pytest.mark.parametrize(
    ("healthy", "expected"),
    [(True, TrackingVerdict(100, fault=False)), (False, TrackingVerdict(70, fault=False))],
)
def test_negative_weight_subtracts_while_failing(healthy: bool, expected: TrackingVerdict) -> None:
    assert evaluate(100, {PENALTY: healthy}) == expected


def test_weight_zero_failing_is_a_fault_and_leaves_priority_alone() -> None:
    assert evaluate(100, {CRITICAL: False}) == TrackingVerdict(100, fault=True)
    assert evaluate(100, {CRITICAL: True}) == TrackingVerdict(100, fault=False)


def test_weights_add_up() -> None:
    assert evaluate(100, {BONUS: True, PENALTY: False, CRITICAL: True}).priority == 90


@pytest.mark.parametrize(
    ("base", "health", "expected"),
    [
        (250, {BONUS: True}, 254),  # 255 is for the address owner only
        (20, {PENALTY: False}, 1),  # 0 means "leaving"
        (255, {BONUS: True}, 255),  # the owner stays the owner with no net loss
        (255, {BONUS: False}, 255),
        (255, {PENALTY: False}, 225),  # a net loss makes the owner preemptible
        (255, {BONUS: True, PENALTY: False}, 245),
    ],
)
def test_priority_is_clamped_to_1_254_except_an_owner_without_net_loss(
    base: int, health: dict[AnyTracker, Reading], expected: int
) -> None:
    assert evaluate(base, health).priority == expected


def test_no_trackers_keeps_base_priority() -> None:
    assert evaluate(100, {}) == TrackingVerdict(100, fault=False)


@pytest.mark.parametrize("weight", [-255, 255])
def test_tracker_weight_outside_range_is_refused(weight: int) -> None:
    with pytest.raises(ValueError, match="weight"):
        Tracker("x", weight)


def test_tracking_state_emits_events_only_on_change() -> None:
    state = TrackingState(
        100, [BONUS, PENALTY, CRITICAL], {t.name: True for t in (BONUS, PENALTY, CRITICAL)}
    )
    assert state.initial_events() == [PriorityChanged(120)]
    assert state.set_health("eth1", healthy=False) == [PriorityChanged(90)]
    assert state.set_health("eth1", healthy=False) == []
    assert state.set_health("check_haproxy", healthy=False) == [TrackingFault(active=True)]
    assert state.set_health("check_haproxy", healthy=False) == []
    assert state.set_health("check_lvs", healthy=False) == [PriorityChanged(70)]
    assert state.set_health("check_haproxy", healthy=True) == [TrackingFault(active=False)]
    assert state.verdict == TrackingVerdict(70, fault=False)


def test_tracking_state_initial_events_for_a_failing_start() -> None:
    state = TrackingState(100, [PENALTY, CRITICAL], {"eth1": False, "check_haproxy": False})
    assert state.initial_events() == [PriorityChanged(70), TrackingFault(active=True)]


def test_tracking_state_initial_events_empty_when_nothing_changes_priority() -> None:
    state = TrackingState(100, [BONUS], {"check_lvs": False})
    assert state.initial_events() == []


@pytest.mark.parametrize(
    ("trackers", "healthy", "message"),
    [
        ([BONUS, BONUS], {"check_lvs": True}, "twice"),
        ([BONUS], {}, "missing"),
        ([BONUS], {"check_lvs": True, "eth9": True}, "unknown"),
    ],
)
def test_tracking_state_refuses_inconsistent_setup(
    trackers: list[Tracker], healthy: dict[str, bool], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TrackingState(100, trackers, healthy)


def test_tracking_state_refuses_unknown_tracker() -> None:
    state = TrackingState(100, [BONUS], {"check_lvs": True})
    with pytest.raises(KeyError):
        state.set_health("nope", healthy=True)


def test_tracking_drives_the_machine_to_fault_and_back() -> None:
    machine = as_master(20.0, priority=150)
    tracking = TrackingState(150, [PENALTY, CRITICAL], {"eth1": True, "check_haproxy": True})
    actions: list[Action] = []
    for event in tracking.set_health("eth1", healthy=False):
        actions += machine.handle(event, 20.1)
    assert machine.priority == 120
    assert machine.handle(TimerFired(), 21.0) == [SendAdvert(120)]
    for event in tracking.set_health("check_haproxy", healthy=False):
        actions += machine.handle(event, 21.2)
    assert machine.fault_reasons == {FaultReason.TRACKING}
    for event in tracking.set_health("check_haproxy", healthy=True):
        actions += machine.handle(event, 21.3)
    assert machine.state is VrrpState.BACKUP
    assert [(a.old, a.new) for a in actions if isinstance(a, StateChanged)] == [
        (VrrpState.MASTER, VrrpState.FAULT),
        (VrrpState.FAULT, VrrpState.BACKUP),
    ]
    # A link-down fault and a tracking fault are separate reasons.
    link_down = machine.handle(LinkChanged(up=False), 21.4)
    assert StateChanged(VrrpState.BACKUP, VrrpState.FAULT, "link down") in link_down
