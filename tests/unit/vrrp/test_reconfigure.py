"""The pure cores take a live reload: the machine's settings, tracking, sync group membership."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from lvsha.vrrp.events import (
    FaultChanged,
    FaultReason,
    LinkChanged,
    PriorityChanged,
    SendAdvert,
    StateChanged,
    SyncGroupFault,
    SyncGroupMaster,
    TimerFired,
    TrackingFault,
    VrrpState,
)
from lvsha.vrrp.machine import InvalidEventError, VrrpMachine
from lvsha.vrrp.syncgroup import MemberEvent, MemberSnapshot, SyncGroup
from lvsha.vrrp.tracking import Tracker, TrackingState
from tests.unit.vrrp.test_machine import LOWER_V4, advert, as_master, make_params, started

B, M, F = VrrpState.BACKUP, VrrpState.MASTER, VrrpState.FAULT


# The machine.


def test_a_new_name_and_vips_change_no_state_and_no_timer() -> None:
    machine = as_master(20.0)
    deadline = machine.next_deadline()
    new = dataclasses.replace(machine.params, name="VI_renamed", vips=machine.params.vips[:1])
    assert machine.reconfigure(new, 20.3) == []
    assert machine.state is M
    assert machine.next_deadline() == deadline
    assert machine.params.name == "VI_renamed"


def test_a_master_adopts_a_shorter_advert_interval_from_its_next_advert() -> None:
    machine = as_master(20.0)  # next advert due at 21.0
    machine.reconfigure(dataclasses.replace(machine.params, advert_interval=0.1), 20.5)
    assert machine.next_deadline() == pytest.approx(20.6)
    assert machine.handle(TimerFired(), 20.6) == [SendAdvert(100)]
    assert machine.next_deadline() == pytest.approx(20.7)


def test_a_master_keeps_its_next_advert_when_the_interval_grows() -> None:
    machine = as_master(20.0)
    machine.reconfigure(dataclasses.replace(machine.params, advert_interval=2.0), 20.5)
    assert machine.next_deadline() == pytest.approx(21.0)
    machine.handle(TimerFired(), 21.0)
    assert machine.next_deadline() == pytest.approx(23.0)


def test_a_v2_backup_times_its_master_by_its_own_new_interval() -> None:
    # RFC 3768: Master_Down_Interval = 3 x Advertisement_Interval + Skew_Time (v2 skew
    # does not depend on the interval).
    machine = started(0.0, version=2, advert_interval=1.0)
    assert machine.next_deadline() == pytest.approx(3 + 156 / 256)
    machine.reconfigure(dataclasses.replace(machine.params, advert_interval=2.0), 1.0)
    assert machine.next_deadline() == pytest.approx(6 + 156 / 256)
    assert machine.master_down_interval() == pytest.approx(6 + 156 / 256)


def test_a_v3_backup_keeps_the_interval_its_master_advertises() -> None:
    machine = started(0.0)
    machine.handle(advert(LOWER_V4, 200, 0.5), 1.0)
    deadline = machine.next_deadline()
    machine.reconfigure(dataclasses.replace(machine.params, advert_interval=2.0), 1.5)
    assert machine.next_deadline() == deadline
    assert machine.master_adver_interval == 0.5


def test_a_backup_stops_preempting_when_preempt_is_turned_off() -> None:
    machine = started(0.0, priority=150)
    machine.handle(advert(LOWER_V4, 100), 1.0)  # a lower master: we let the timer run out
    deadline = machine.next_deadline()
    machine.reconfigure(dataclasses.replace(machine.params, preempt=False), 1.5)
    machine.handle(advert(LOWER_V4, 100), 2.0)  # now accepted: the timer restarts
    later = machine.next_deadline()
    assert deadline is not None and later is not None and later > deadline
    assert machine.state is B


def test_the_preempt_delay_already_running_follows_the_new_delay() -> None:
    machine = started(0.0, priority=150, preempt_delay=10.0)
    machine.handle(advert(LOWER_V4, 100), 1.0)  # the hold runs until 11.0
    machine.reconfigure(dataclasses.replace(machine.params, preempt_delay=2.0), 1.5)
    machine.handle(advert(LOWER_V4, 100), 2.5)  # still held (until 3.0): accepted
    deadline = machine.next_deadline()
    assert deadline is not None
    machine.handle(advert(LOWER_V4, 100), 3.5)  # hold over: not accepted, timer runs on
    assert machine.next_deadline() == deadline


def test_leaving_a_sync_group_clears_the_fault_the_group_imposed() -> None:
    machine = started(0.0, sync_group="G")
    machine.handle(SyncGroupFault(active=True), 1.0)
    assert machine.state is F
    actions = machine.reconfigure(dataclasses.replace(machine.params, sync_group=None), 2.0)
    assert FaultChanged(frozenset()) in actions
    assert [(a.old, a.new) for a in actions if isinstance(a, StateChanged)] == [(F, B)]
    assert machine.fault_reasons == frozenset()


@pytest.mark.parametrize("what", ["vrid", "version", "primary_address"])
def test_what_needs_another_router_cannot_change_in_place(what: str) -> None:
    machine = as_master(20.0)
    other: dict[str, Any] = {"vrid": 52, "version": 2, "primary_address": LOWER_V4}
    with pytest.raises(InvalidEventError, match=what):
        machine.reconfigure(dataclasses.replace(machine.params, **{what: other[what]}), 20.5)
    assert machine.params.name == "VI_1"
    assert machine.state is M


def test_new_params_are_validated_before_they_reach_the_machine() -> None:
    machine = as_master(20.0)
    with pytest.raises(ValueError, match="always preempts"):
        dataclasses.replace(machine.params, priority=255, preempt=False)


# Tracking: the base priority changes under the trackers.


def test_a_new_base_priority_comes_out_as_the_new_effective_priority() -> None:
    tracking = TrackingState(100, [Tracker("script:chk", 20)], {"script:chk": True})
    assert tracking.verdict.priority == 120
    assert tracking.reconfigure(50, [Tracker("script:chk", 20)], {}) == [PriorityChanged(70)]
    assert tracking.base_priority == 50


def test_trackers_that_stay_keep_their_health_and_new_ones_take_theirs() -> None:
    tracking = TrackingState(100, [Tracker("script:chk", -30)], {"script:chk": False})
    assert tracking.verdict.priority == 70
    events = tracking.reconfigure(
        100,
        [Tracker("script:chk", -10), Tracker("interface:eth1", 0)],
        {"script:chk": True, "interface:eth1": False},  # chk's entry is not consulted
    )
    assert events == [PriorityChanged(90), TrackingFault(active=True)]
    assert tracking.health("script:chk") is False


def test_a_removed_tracker_no_longer_counts() -> None:
    tracking = TrackingState(100, [Tracker("interface:eth1", 0)], {"interface:eth1": False})
    assert tracking.verdict.fault
    assert tracking.reconfigure(100, [], {}) == [TrackingFault(active=False)]


def test_a_new_tracker_without_health_is_refused_and_nothing_changes() -> None:
    tracking = TrackingState(100, [], {})
    with pytest.raises(ValueError, match="no health"):
        tracking.reconfigure(150, [Tracker("script:new", 5)], {})
    assert tracking.base_priority == 100
    assert tracking.trackers == ()


# Sync groups formed from running members.


def test_a_group_formed_with_a_member_in_fault_puts_the_others_in_fault() -> None:
    group, events = SyncGroup.resume(
        "G",
        {
            "A": MemberSnapshot(M),
            "B": MemberSnapshot(F, frozenset({FaultReason.LINK_DOWN})),
        },
    )
    assert group.in_fault
    assert events == [
        MemberEvent("A", SyncGroupFault(active=True)),
        MemberEvent("B", SyncGroupFault(active=True)),
    ]


def test_a_member_leaving_the_group_at_fault_clears_the_others() -> None:
    group, events = SyncGroup.resume(
        "G", {"A": MemberSnapshot(F, frozenset({FaultReason.SYNC_GROUP}))}
    )
    assert not group.in_fault
    assert events == [MemberEvent("A", SyncGroupFault(active=False))]


def test_a_member_ready_for_master_is_granted_it_when_the_others_are_master() -> None:
    group, events = SyncGroup.resume(
        "G", {"A": MemberSnapshot(M), "B": MemberSnapshot(B, ready=True)}
    )
    assert events == [MemberEvent("B", SyncGroupMaster())]
    assert group.state_of("B") is M


def test_a_group_of_members_in_order_needs_no_event() -> None:
    _, events = SyncGroup.resume("G", {"A": MemberSnapshot(M), "B": MemberSnapshot(B)})
    assert events == []


def test_a_machine_in_a_resumed_group_takes_its_events() -> None:
    machine = VrrpMachine(make_params(sync_group="G"))
    machine.handle(LinkChanged(up=True), 0.0)
    _, events = SyncGroup.resume(
        "G",
        {
            "VI_1": MemberSnapshot(machine.state),
            "X": MemberSnapshot(F, frozenset({FaultReason.TRACKING})),
        },
    )
    for event in events:
        if event.member == "VI_1":
            machine.handle(event.event, 1.0)
    assert machine.fault_reasons == frozenset({FaultReason.SYNC_GROUP})
