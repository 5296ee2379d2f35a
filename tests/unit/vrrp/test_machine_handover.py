"""`lvsha handover` in the VRRP machine: the master gives the VIPs to the peer
(make-before-break) and stays backup until the handover is cancelled."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from lvsha.vrrp.events import (
    AddVips,
    Announce,
    FaultChanged,
    FaultReason,
    Handover,
    LinkChanged,
    PriorityChanged,
    ReadyForMaster,
    RemoveVips,
    SendAdvert,
    Shutdown,
    Startup,
    StateChanged,
    SyncGroupMaster,
    TimerFired,
    TrackingFault,
    VrrpState,
)
from lvsha.vrrp.machine import InitialState, VrrpMachine
from tests.unit.vrrp.test_machine import (
    HIGHER_V4,
    LOWER_V4,
    VIPS_V4,
    advert,
    as_master,
    make_params,
    started,
    transitions,
    without_state_changes,
)

INIT, B, M, F, R = (
    VrrpState.INITIALIZE,
    VrrpState.BACKUP,
    VrrpState.MASTER,
    VrrpState.FAULT,
    VrrpState.RELEASING,
)
MDI = 3 + 156 / 256
"""Master_Down_Interval at priority 100, advert interval 1 s (v3)."""


def handing_over(now: float = 20.5, **overrides: object) -> VrrpMachine:
    """A master that was handed over at `now` (RELEASING, priority 0 sent)."""
    machine = as_master(now - 0.5, **overrides)
    machine.handle(Handover(active=True), now)
    assert machine.state is R
    return machine


def reason_of(actions: Sequence[object]) -> str:
    (change,) = [a for a in actions if isinstance(a, StateChanged)]
    return change.reason


# A master hands over: priority 0, VIPs kept until the new master is heard.


def test_master_handover_sends_priority_zero_and_keeps_the_vips() -> None:
    machine = as_master(20.0)
    actions = machine.handle(Handover(active=True), 20.5)
    assert transitions(actions) == [(M, R)]
    assert reason_of(actions) == "handover: sent priority 0"
    assert without_state_changes(actions) == [SendAdvert(0)]
    assert machine.handed_over
    assert machine.holds_vips
    assert machine.next_deadline() == pytest.approx(20.5 + MDI)


def test_handover_releasing_goes_to_backup_when_the_new_master_is_heard() -> None:
    machine = handing_over(20.5)
    assert machine.handle(advert(LOWER_V4, 0), 20.6) == []  # another leaver: keep waiting
    actions = machine.handle(advert(LOWER_V4, 90), 20.7)
    assert transitions(actions) == [(R, B)]
    assert reason_of(actions) == f"handover: new master {LOWER_V4} heard"
    assert without_state_changes(actions) == [RemoveVips(VIPS_V4, handover=True)]
    assert machine.handed_over
    assert not machine.holds_vips
    assert machine.next_deadline() is None


def test_handover_that_hears_no_new_master_stays_master() -> None:
    machine = handing_over(20.5)
    deadline = machine.next_deadline()
    assert deadline is not None
    actions = machine.handle(TimerFired(), deadline)
    assert transitions(actions) == [(R, M)]
    assert reason_of(actions) == (
        "handover failed: no new master heard within the master down interval; staying master"
    )
    # The VIPs never left: AddVips finds them there (already ours) and the announcements
    # repair whatever the peer's attempt did to the clients' caches.
    assert without_state_changes(actions) == [SendAdvert(100), AddVips(VIPS_V4), Announce(VIPS_V4)]
    assert not machine.handed_over
    assert machine.next_deadline() == pytest.approx(deadline + 1.0)
    # A master again in every way: a higher advert takes it down to an armed backup.
    assert transitions(machine.handle(advert(HIGHER_V4, 200), deadline + 0.5)) == [(M, B)]
    assert machine.next_deadline() is not None


def test_shutdown_during_a_handover_releases_at_once() -> None:
    machine = handing_over(20.5)
    actions = machine.handle(Shutdown(), 20.6)
    assert transitions(actions) == [(R, INIT)]
    assert without_state_changes(actions) == [RemoveVips(VIPS_V4)]
    assert machine.next_deadline() is None


def test_a_shutdown_releasing_still_ends_in_initialize() -> None:
    machine = as_master(20.0)
    machine.handle(Shutdown(), 20.5)
    assert machine.handle(Handover(active=True), 20.6) == []  # recorded, nothing else
    assert machine.handed_over
    actions = machine.handle(advert(LOWER_V4, 90), 20.7)
    assert transitions(actions) == [(R, INIT)]
    # And a shutdown that hears nobody ends in INITIALIZE too, not back in MASTER.
    machine = as_master(20.0)
    machine.handle(Shutdown(), 20.5)
    machine.handle(Handover(active=True), 20.6)
    deadline = machine.next_deadline()
    assert deadline is not None
    assert transitions(machine.handle(TimerFired(), deadline)) == [(R, INIT)]


def test_cancelling_during_a_shutdown_does_not_cancel_the_shutdown() -> None:
    machine = as_master(20.0)
    machine.handle(Handover(active=True), 20.5)
    machine.handle(Handover(active=False), 20.6)  # master again
    machine.handle(Shutdown(), 20.7)
    machine.handle(Handover(active=True), 20.8)
    assert machine.handle(Handover(active=False), 20.9) == []  # the shutdown goes on
    assert machine.state is R and not machine.handed_over
    assert transitions(machine.handle(advert(LOWER_V4, 90), 21.0)) == [(R, INIT)]


def test_handover_startup_after_shutdown_stays_a_handed_over_backup() -> None:
    machine = handing_over(20.5)
    machine.handle(Shutdown(), 20.6)
    actions = machine.handle(Startup(), 21.0)
    assert transitions(actions) == [(INIT, B)]
    assert machine.next_deadline() is None


def test_fault_during_a_handover_goes_to_fault_not_initialize() -> None:
    machine = handing_over(20.5)
    actions = machine.handle(TrackingFault(active=True), 20.6)
    assert transitions(actions) == [(R, F)]
    assert without_state_changes(actions) == [
        FaultChanged(frozenset({FaultReason.TRACKING})),
        RemoveVips(VIPS_V4),
    ]
    assert machine.next_deadline() is None
    assert machine.handed_over
    # Out of fault: a handed-over backup.
    assert transitions(machine.handle(TrackingFault(active=False), 21.0)) == [(F, B)]
    assert machine.next_deadline() is None


def test_cancel_during_a_handover_is_master_again() -> None:
    machine = handing_over(20.5)
    actions = machine.handle(Handover(active=False), 20.7)
    assert transitions(actions) == [(R, M)]
    assert reason_of(actions) == "handover cancelled: master again"
    assert without_state_changes(actions) == [SendAdvert(100), AddVips(VIPS_V4), Announce(VIPS_V4)]
    assert not machine.handed_over
    assert machine.next_deadline() == pytest.approx(21.7)
    # The releasing timer is gone: the next timer is an advert, not a release.
    assert machine.handle(TimerFired(), 21.7) == [SendAdvert(100)]


def test_handover_repeated_does_nothing() -> None:
    machine = handing_over(20.5)
    deadline = machine.next_deadline()
    assert machine.handle(Handover(active=True), 20.6) == []
    assert machine.state is R and machine.next_deadline() == deadline
    backup = started(0.0)
    assert backup.handle(Handover(active=False), 1.0) == []
    assert backup.next_deadline() == pytest.approx(MDI)  # the running timer, untouched
    assert not backup.handed_over


# A handed-over backup never takes over.


def test_backup_handover_cancels_the_master_down_timer() -> None:
    machine = started(0.0)
    machine.handle(advert(HIGHER_V4, 200), 1.0)
    assert machine.handle(Handover(active=True), 1.5) == []
    assert machine.state is B and machine.handed_over
    assert machine.next_deadline() is None


def test_handed_over_backup_ignores_adverts_stopping_and_priority_zero() -> None:
    machine = started(0.0)
    machine.handle(Handover(active=True), 0.5)
    assert machine.handle(advert(HIGHER_V4, 200), 1.0) == []
    assert machine.next_deadline() is None
    assert machine.handle(advert(HIGHER_V4, 0), 2.0) == []  # the master leaves: still not us
    assert machine.next_deadline() is None
    # A lower master is not preempted either.
    assert machine.handle(advert(LOWER_V4, 50), 3.0) == []
    assert machine.next_deadline() is None
    assert machine.handle(TimerFired(), 100.0) == []
    assert machine.state is B


def test_handed_over_backup_still_adopts_the_v3_master_interval() -> None:
    machine = started(0.0, version=3)
    machine.handle(Handover(active=True), 0.5)
    machine.handle(advert(HIGHER_V4, 200, interval=2.0), 1.0)
    assert machine.master_adver_interval == 2.0


def test_handed_over_backup_ignores_sync_group_master() -> None:
    machine = started(0.0, sync_group="G")
    machine.handle(Handover(active=True), 0.5)
    assert machine.handle(SyncGroupMaster(), 1.0) == []
    assert machine.state is B


def test_backup_ready_for_master_is_no_longer_ready_once_handed_over() -> None:
    machine = started(0.0, sync_group="G")
    deadline = machine.next_deadline()
    assert deadline is not None
    assert machine.handle(TimerFired(), deadline) == [ReadyForMaster(ready=True)]
    assert machine.handle(Handover(active=True), deadline + 0.1) == [ReadyForMaster(ready=False)]
    assert not machine.ready_for_master
    assert machine.next_deadline() is None


def test_cancel_on_a_backup_arms_the_master_down_timer() -> None:
    machine = started(0.0)
    machine.handle(Handover(active=True), 0.5)
    assert machine.handle(Handover(active=False), 5.0) == []
    assert not machine.handed_over
    assert machine.next_deadline() == pytest.approx(5.0 + MDI)
    # Normal VRRP from here: a lower master is preempted when the timer runs out.
    machine.handle(advert(LOWER_V4, 50), 6.0)
    assert transitions(machine.handle(TimerFired(), 5.0 + MDI)) == [(B, M)]


def test_cancel_on_a_backup_hearing_a_higher_master_stays_backup() -> None:
    machine = started(0.0)
    machine.handle(Handover(active=True), 0.5)
    machine.handle(Handover(active=False), 5.0)
    machine.handle(advert(HIGHER_V4, 200), 5.5)
    assert machine.next_deadline() == pytest.approx(5.5 + MDI)
    assert machine.state is B


def test_priority_change_of_a_handed_over_backup_arms_nothing() -> None:
    machine = started(0.0)
    machine.handle(Handover(active=True), 0.5)
    assert machine.handle(PriorityChanged(200), 1.0) == []
    assert machine.next_deadline() is None


# Handed over before it comes up: backup without a timer, whatever it would do otherwise.


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"priority": 255},
        {"initial_state": InitialState.MASTER},
        {"priority": 255, "sync_group": "G"},
    ],
    ids=["plain", "address-owner", "initial-state-master", "owner-in-sync-group"],
)
def test_handed_over_before_startup_comes_up_as_backup_without_timer(
    overrides: dict[str, object],
) -> None:
    machine = VrrpMachine(make_params(**overrides))
    assert machine.handle(Handover(active=True), 0.0) == []
    actions = machine.handle(Startup(), 0.0)
    assert transitions(actions) == [(INIT, B)]
    assert reason_of(actions) == "startup: handed over"
    assert without_state_changes(actions) == []
    assert machine.next_deadline() is None
    assert machine.handle(TimerFired(), 100.0) == []
    assert machine.state is B


def test_handed_over_in_fault_comes_up_as_backup_without_timer() -> None:
    machine = started(0.0, priority=255)
    machine.handle(LinkChanged(up=False), 1.0)
    assert machine.handle(Handover(active=True), 1.5) == []
    assert machine.handed_over
    actions = machine.handle(LinkChanged(up=True), 2.0)
    assert transitions(actions) == [(F, B)]
    assert machine.next_deadline() is None


def test_cancel_in_fault_or_initialize_comes_up_normally() -> None:
    machine = VrrpMachine(make_params(priority=255))
    machine.handle(Handover(active=True), 0.0)
    assert machine.handle(Handover(active=False), 0.0) == []
    assert transitions(machine.handle(Startup(), 0.0)) == [(INIT, M)]
    machine = started(0.0)
    machine.handle(LinkChanged(up=False), 1.0)
    machine.handle(Handover(active=True), 1.5)
    machine.handle(Handover(active=False), 1.7)
    machine.handle(LinkChanged(up=True), 2.0)
    assert machine.next_deadline() == pytest.approx(2.0 + MDI)
