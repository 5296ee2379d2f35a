"""The VRRP machine against RFC 5798 / RFC 3768 section 6, with a hand-stepped clock."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsha.vrrp.events import (
    Action,
    Address,
    AddVips,
    AdvertReceived,
    Announce,
    Event,
    FaultChanged,
    FaultReason,
    Handover,
    LinkChanged,
    PriorityChanged,
    RemoveVips,
    SendAdvert,
    Shutdown,
    Startup,
    StateChanged,
    SyncGroupBackup,
    SyncGroupFault,
    SyncGroupMaster,
    TimerFired,
    TrackingFault,
    VrrpState,
)
from lvsha.vrrp.machine import (
    ClockWentBackwardsError,
    InitialState,
    InstanceParams,
    InvalidEventError,
    UnexpectedEventError,
    VrrpError,
    VrrpMachine,
    master_down_interval,
    skew_time,
)

INIT, B, M, F, R = (
    VrrpState.INITIALIZE,
    VrrpState.BACKUP,
    VrrpState.MASTER,
    VrrpState.FAULT,
    VrrpState.RELEASING,
)
OWN_V4 = IPv4Address("192.0.2.10")
LOWER_V4 = IPv4Address("192.0.2.5")
HIGHER_V4 = IPv4Address("192.0.2.20")
VIPS_V4 = (IPv4Interface("192.0.2.100/24"), IPv4Interface("192.0.2.101/24"))
OWN_V6 = IPv6Address("2001:db8::10")
LOWER_V6 = IPv6Address("2001:db8::5")
HIGHER_V6 = IPv6Address("2001:db8::1:0")
VIPS_V6 = (IPv6Interface("2001:db8::100/64"),)


def make_params(**overrides: Any) -> InstanceParams:
    values: dict[str, Any] = {
        "name": "VI_1",
        "vrid": 51,
        "version": 3,
        "priority": 100,
        "advert_interval": 1.0,
        "primary_address": OWN_V4,
        "vips": VIPS_V4,
    }
    values.update(overrides)
    return InstanceParams(**values)


def started(now: float = 0.0, **overrides: Any) -> VrrpMachine:
    machine = VrrpMachine(make_params(**overrides))
    machine.handle(Startup(), now)
    return machine


def as_master(now: float = 0.0, **overrides: Any) -> VrrpMachine:
    """A machine that has become master through its master down timer at `now`."""
    machine = started(now - 10.0, **overrides)
    deadline = machine.next_deadline()
    assert deadline is not None
    machine.handle(TimerFired(), deadline)
    assert machine.state is M
    machine.handle(TimerFired(), now)  # a routine advert, so the adver timer runs from `now`
    return machine


def advert(source: Address, priority: int, interval: float = 1.0) -> AdvertReceived:
    return AdvertReceived(source=source, priority=priority, advert_interval=interval)


def transitions(actions: list[Action]) -> list[tuple[VrrpState, VrrpState]]:
    return [(a.old, a.new) for a in actions if isinstance(a, StateChanged)]


def without_state_changes(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, StateChanged)]


BOTH_VERSIONS = pytest.mark.parametrize("version", [2, 3])


# Timer arithmetic, RFC 3768 section 6.1 and RFC 5798 section 6.1


@pytest.mark.parametrize(
    ("priority", "expected"),
    [(255, 1 / 256), (254, 2 / 256), (200, 56 / 256), (100, 156 / 256), (1, 255 / 256)],
)
def test_skew_time_v2_is_256_minus_priority_over_256_seconds_rfc3768_6_1(
    priority: int, expected: float
) -> None:
    assert skew_time(2, priority, 1.0) == pytest.approx(expected)
    # v2 Skew_Time does not depend on the advert interval.
    assert skew_time(2, priority, 5.0) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("priority", "interval", "expected"),
    [
        (255, 1.0, 1 / 256),
        (100, 1.0, 156 / 256),
        (200, 0.5, 56 * 0.5 / 256),
        (1, 2.0, 255 * 2.0 / 256),
        (128, 0.01, 128 * 0.01 / 256),
    ],
)
def test_skew_time_v3_scales_with_master_adver_interval_rfc5798_6_1(
    priority: int, interval: float, expected: float
) -> None:
    assert skew_time(3, priority, interval) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("version", "priority", "interval", "expected"),
    [
        (2, 100, 1.0, 3 + 156 / 256),
        (2, 255, 3.0, 9 + 1 / 256),
        (2, 1, 1.0, 3 + 255 / 256),
        (3, 100, 1.0, 3 + 156 / 256),
        (3, 200, 0.5, 1.5 + 56 * 0.5 / 256),
        (3, 1, 2.0, 6 + 255 * 2.0 / 256),
    ],
)
def test_master_down_interval_is_three_intervals_plus_skew_rfc5798_6_1(
    version: Literal[2, 3], priority: int, interval: float, expected: float
) -> None:
    assert master_down_interval(version, priority, interval) == pytest.approx(expected)


def test_machine_timers_use_effective_priority() -> None:
    machine = VrrpMachine(make_params(priority=100))
    machine.handle(PriorityChanged(200), 0.0)
    assert machine.skew_time() == pytest.approx(56 / 256)
    assert machine.master_down_interval() == pytest.approx(3 + 56 / 256)


# Initialize, RFC 5798 / RFC 3768 section 6.4.1


@BOTH_VERSIONS
def test_initialize_to_backup_on_startup_rfc5798_6_4_1(version: Literal[2, 3]) -> None:
    machine = VrrpMachine(make_params(version=version))
    actions = machine.handle(Startup(), 5.0)
    assert transitions(actions) == [(INIT, B)]
    assert without_state_changes(actions) == []
    assert machine.next_deadline() == pytest.approx(5.0 + 3 + 156 / 256)


@BOTH_VERSIONS
def test_initialize_to_master_at_once_for_address_owner_rfc5798_6_4_1(
    version: Literal[2, 3],
) -> None:
    machine = VrrpMachine(make_params(version=version, priority=255))
    actions = machine.handle(Startup(), 5.0)
    assert transitions(actions) == [(INIT, M)]
    assert without_state_changes(actions) == [
        SendAdvert(255),
        AddVips(VIPS_V4),
        Announce(VIPS_V4),
    ]
    assert machine.next_deadline() == pytest.approx(6.0)


@BOTH_VERSIONS
def test_initial_state_master_waits_one_advert_interval_then_takes_over_keepalived(
    version: Literal[2, 3],
) -> None:
    # keepalived's `state MASTER`: Backup for one interval plus the least Skew_Time.
    machine = VrrpMachine(make_params(version=version, initial_state=InitialState.MASTER))
    assert transitions(machine.handle(Startup(), 0.0)) == [(INIT, B)]
    assert machine.next_deadline() == pytest.approx(1.0 + 1 / 256)
    assert transitions(machine.handle(TimerFired(), 1.0 + 1 / 256)) == [(B, M)]


def test_initial_state_master_yields_to_a_higher_master_heard_in_time() -> None:
    machine = VrrpMachine(make_params(initial_state=InitialState.MASTER))
    machine.handle(Startup(), 0.0)
    assert machine.handle(advert(HIGHER_V4, 150), 0.5) == []
    assert machine.state is B
    assert machine.next_deadline() == pytest.approx(0.5 + 3 + 156 / 256)


def test_initialize_to_fault_on_startup_with_link_down() -> None:
    machine = VrrpMachine(make_params())
    assert machine.handle(LinkChanged(up=False), 0.0) == [
        FaultChanged(frozenset({FaultReason.LINK_DOWN}))
    ]
    actions = machine.handle(Startup(), 0.0)
    assert transitions(actions) == [(INIT, F)]
    assert machine.next_deadline() is None


# Backup, RFC 5798 / RFC 3768 section 6.4.2


@BOTH_VERSIONS
def test_backup_to_master_when_master_down_timer_fires_rfc5798_6_4_2(
    version: Literal[2, 3],
) -> None:
    machine = started(0.0, version=version)
    deadline = machine.next_deadline()
    assert deadline is not None
    actions = machine.handle(TimerFired(), deadline)
    assert transitions(actions) == [(B, M)]
    # The advert goes before the gratuitous ARP: the old master must drop the VIPs first.
    assert without_state_changes(actions) == [
        SendAdvert(100),
        AddVips(VIPS_V4),
        Announce(VIPS_V4),
    ]
    assert machine.next_deadline() == pytest.approx(deadline + 1.0)


def test_backup_timer_fired_early_does_nothing() -> None:
    # asyncio may wake a callback up to one clock resolution early.
    machine = started(0.0)
    deadline = machine.next_deadline()
    assert deadline is not None
    assert machine.handle(TimerFired(), deadline - 0.001) == []
    assert machine.state is B
    assert machine.next_deadline() == deadline


@BOTH_VERSIONS
def test_backup_stays_backup_and_resets_master_down_timer_on_higher_advert_rfc5798_6_4_2(
    version: Literal[2, 3],
) -> None:
    machine = started(0.0, version=version)
    for now in (1.0, 2.0, 3.0, 4.0, 5.0):
        assert machine.handle(advert(HIGHER_V4, 150), now) == []
        assert machine.next_deadline() == pytest.approx(now + 3 + 156 / 256)
    assert machine.state is B


def test_backup_v3_adopts_master_advert_interval_rfc5798_6_4_2() -> None:
    machine = started(0.0, version=3)
    machine.handle(advert(HIGHER_V4, 150, interval=2.5), 1.0)
    assert machine.master_adver_interval == 2.5
    assert machine.next_deadline() == pytest.approx(1.0 + 7.5 + 156 * 2.5 / 256)


def test_backup_v2_discards_advert_with_another_interval_rfc3768_7_1() -> None:
    machine = started(0.0, version=2)
    deadline = machine.next_deadline()
    assert machine.handle(advert(HIGHER_V4, 150, interval=2.0), 1.0) == []
    assert machine.master_adver_interval == 1.0
    assert machine.next_deadline() == deadline


@BOTH_VERSIONS
def test_backup_accepts_equal_priority_advert_whatever_the_address_rfc5798_6_4_2(
    version: Literal[2, 3],
) -> None:
    machine = started(0.0, version=version)
    machine.handle(advert(LOWER_V4, 100), 1.0)
    assert machine.next_deadline() == pytest.approx(1.0 + 3 + 156 / 256)


@BOTH_VERSIONS
def test_backup_preempts_lower_priority_master_by_discarding_its_adverts_rfc5798_6_4_2(
    version: Literal[2, 3],
) -> None:
    machine = started(0.0, version=version, priority=150)
    deadline = machine.next_deadline()
    assert deadline is not None
    assert deadline == pytest.approx(3 + 106 / 256)
    for now in (0.5, 1.5, 2.5):
        assert machine.handle(advert(HIGHER_V4, 100), now) == []
        assert machine.next_deadline() == deadline
    assert transitions(machine.handle(TimerFired(), deadline)) == [(B, M)]


def test_backup_nopreempt_accepts_lower_priority_master_rfc5798_6_4_2() -> None:
    machine = started(0.0, priority=150, preempt=False)
    for step in range(20):
        now = 0.5 + step
        assert machine.handle(advert(LOWER_V4, 100), now) == []
        assert machine.next_deadline() == pytest.approx(now + 3 + 106 / 256)
    assert machine.state is B


def test_backup_preempt_delay_holds_preemption_back_keepalived() -> None:
    # The delay runs from the first lower-priority advert heard in Backup: accepted until
    # then (so the master down timer keeps resetting), discarded after.
    machine = started(0.0, priority=150, preempt_delay=5.0)
    for step in range(5):  # 0.5 .. 4.5: inside the delay
        machine.handle(advert(LOWER_V4, 100), 0.5 + step)
    last_accepted_deadline = machine.next_deadline()
    assert last_accepted_deadline == pytest.approx(4.5 + 3 + 106 / 256)
    machine.handle(advert(LOWER_V4, 100), 5.5)  # the delay is over: discarded
    assert machine.next_deadline() == last_accepted_deadline
    actions = machine.handle(advert(LOWER_V4, 100), 6.5)
    assert actions == [] and machine.state is B
    assert transitions(machine.handle(TimerFired(), 4.5 + 3 + 106 / 256)) == [(B, M)]


def test_backup_preempt_delay_restarts_after_a_higher_master_keepalived() -> None:
    machine = started(0.0, priority=150, preempt_delay=5.0)
    machine.handle(advert(LOWER_V4, 100), 0.5)  # delay until 5.5
    machine.handle(advert(HIGHER_V4, 200), 4.0)  # a higher master: the delay is reset
    machine.handle(advert(LOWER_V4, 100), 6.0)  # starts again: until 11.0
    assert machine.next_deadline() == pytest.approx(6.0 + 3 + 106 / 256)


@BOTH_VERSIONS
def test_backup_priority_zero_sets_master_down_timer_to_skew_time_rfc5798_6_4_2(
    version: Literal[2, 3],
) -> None:
    machine = started(0.0, version=version, priority=200)
    machine.handle(advert(HIGHER_V4, 250), 1.0)
    assert machine.handle(advert(HIGHER_V4, 0), 1.5) == []
    expected_skew = 56 / 256 if version == 2 else 56 * 1.0 / 256
    assert machine.next_deadline() == pytest.approx(1.5 + expected_skew)
    actions = machine.handle(TimerFired(), 1.5 + expected_skew)
    assert transitions(actions) == [(B, M)]
    assert [a.reason for a in actions if isinstance(a, StateChanged)] == [
        f"master {HIGHER_V4} released (priority 0)"
    ]


def test_backup_priority_change_moves_the_running_master_down_timer_keepalived() -> None:
    machine = started(0.0, priority=100)
    machine.handle(PriorityChanged(200), 1.0)
    assert machine.next_deadline() == pytest.approx(3 + 56 / 256)


@BOTH_VERSIONS
def test_backup_to_initialize_on_shutdown_rfc5798_6_4_2(version: Literal[2, 3]) -> None:
    machine = started(0.0, version=version)
    actions = machine.handle(Shutdown(), 1.0)
    assert transitions(actions) == [(B, INIT)]
    assert without_state_changes(actions) == []
    assert machine.next_deadline() is None


# Master, RFC 5798 / RFC 3768 section 6.4.3


@BOTH_VERSIONS
def test_master_sends_advert_when_adver_timer_fires_rfc5798_6_4_3(
    version: Literal[2, 3],
) -> None:
    machine = as_master(20.0, version=version)
    assert machine.handle(TimerFired(), 21.0) == [SendAdvert(100)]
    assert machine.next_deadline() == pytest.approx(22.0)
    # A late wake-up sends one advert, not a burst, and runs the next interval from then.
    assert machine.handle(TimerFired(), 25.3) == [SendAdvert(100)]
    assert machine.next_deadline() == pytest.approx(26.3)


@BOTH_VERSIONS
def test_master_to_backup_on_higher_priority_advert_rfc5798_6_4_3(
    version: Literal[2, 3],
) -> None:
    machine = as_master(20.0, version=version)
    actions = machine.handle(advert(LOWER_V4, 150), 20.5)
    assert transitions(actions) == [(M, B)]
    assert without_state_changes(actions) == [RemoveVips(VIPS_V4, handover=True)]
    assert machine.next_deadline() == pytest.approx(20.5 + 3 + 156 / 256)


def test_master_to_backup_v3_adopts_new_master_interval_rfc5798_6_4_3() -> None:
    machine = as_master(20.0, version=3)
    machine.handle(advert(LOWER_V4, 150, interval=0.5), 20.5)
    assert machine.master_adver_interval == 0.5
    assert machine.next_deadline() == pytest.approx(20.5 + 1.5 + 156 * 0.5 / 256)


@pytest.mark.parametrize(
    ("own", "higher", "vips"),
    [(OWN_V4, HIGHER_V4, VIPS_V4), (OWN_V6, HIGHER_V6, VIPS_V6)],
    ids=["ipv4", "ipv6"],
)
def test_master_to_backup_on_equal_priority_from_higher_address_rfc5798_6_4_3(
    own: Address, higher: Address, vips: tuple[Any, ...]
) -> None:
    machine = as_master(20.0, primary_address=own, vips=vips)
    actions = machine.handle(advert(higher, 100), 20.5)
    assert transitions(actions) == [(M, B)]
    assert RemoveVips(vips, handover=True) in actions


@pytest.mark.parametrize(
    ("own", "lower", "vips"),
    [
        (OWN_V4, LOWER_V4, VIPS_V4),
        (OWN_V6, LOWER_V6, VIPS_V6),
        # Compared as unsigned numbers, not as text: "192.0.2.9" > "192.0.2.10" as strings.
        (OWN_V4, IPv4Address("192.0.2.9"), VIPS_V4),
        (IPv4Address("200.0.0.1"), IPv4Address("10.0.0.1"), VIPS_V4),
    ],
    ids=["ipv4", "ipv6", "ipv4-not-as-text", "ipv4-high-bit"],
)
def test_master_stays_on_equal_priority_from_lower_address_rfc5798_6_4_3(
    own: Address, lower: Address, vips: tuple[Any, ...]
) -> None:
    machine = as_master(20.0, primary_address=own, vips=vips)
    actions = machine.handle(advert(lower, 100), 20.5)
    assert machine.state is M
    assert actions == [SendAdvert(100), Announce(vips)]


def test_master_reasserts_on_lower_priority_advert_keepalived() -> None:
    # RFC 5798 section 6.4.3 says discard; re-asserting heals ARP caches after a split brain.
    machine = as_master(20.0, priority=150)
    assert machine.handle(advert(HIGHER_V4, 100), 20.5) == [
        SendAdvert(150),
        Announce(VIPS_V4),
    ]
    assert machine.state is M
    assert machine.next_deadline() == pytest.approx(21.0)


def test_master_reasserts_at_most_once_per_advert_interval_under_a_flood() -> None:
    # A flood of valid lower-priority adverts must not make the master an amplifier: one
    # advert and one GARP round per advert interval re-asserts; the rest are counted.
    machine = as_master(20.0, priority=150)
    sent: list[Any] = []
    now = 20.0
    for _ in range(22_500):  # 9,000 adverts/s for 2.5 s
        now += 1 / 9_000
        sent += without_state_changes(machine.handle(advert(HIGHER_V4, 100), now))
    assert machine.state is M
    # The flood's first advert is answered, then one each time a full interval has passed;
    # the periodic adverts at 21.0 and 22.0 come from the timer as always.
    assert sent.count(Announce(VIPS_V4)) == 3
    assert sent.count(SendAdvert(150)) == 3 + 2
    assert len(sent) == 3 + 5
    assert machine.reassertions_suppressed == 22_500 - 3


def test_master_reasserts_again_once_an_interval_has_passed() -> None:
    machine = as_master(20.0, priority=150, advert_interval=0.5)
    reassert = [SendAdvert(150), Announce(VIPS_V4)]
    assert machine.handle(advert(HIGHER_V4, 100), 20.1) == reassert
    assert machine.handle(advert(HIGHER_V4, 100), 20.3) == []
    assert machine.handle(advert(HIGHER_V4, 100), 20.59) == [SendAdvert(150)]  # the timer's
    assert machine.handle(advert(HIGHER_V4, 100), 20.6) == reassert
    assert machine.reassertions_suppressed == 2


def test_priority_zero_answers_are_limited_apart_from_reassertions_rfc5798_6_4_3() -> None:
    machine = as_master(20.0, priority=150)
    assert machine.handle(advert(HIGHER_V4, 100), 20.1) == [SendAdvert(150), Announce(VIPS_V4)]
    # A leaving master's priority 0 is still answered at once: a re-assertion flood must
    # not starve the answer the backups' Skew_Time depends on.
    assert machine.handle(advert(HIGHER_V4, 0), 20.2) == [SendAdvert(150)]
    assert machine.next_deadline() == pytest.approx(21.2)
    # A flood of priority 0 is answered once per interval, and does not hold the timer back.
    assert machine.handle(advert(HIGHER_V4, 0), 20.3) == []
    assert machine.handle(advert(HIGHER_V4, 0), 21.1) == []
    assert machine.next_deadline() == pytest.approx(21.2)
    assert machine.handle(advert(HIGHER_V4, 0), 21.25) == [SendAdvert(150), SendAdvert(150)]
    assert machine.reassertions_suppressed == 2


def test_a_higher_priority_advert_is_never_rate_limited() -> None:
    machine = as_master(20.0, priority=150)
    for k in range(100):
        machine.handle(advert(LOWER_V4, 100), 20.0 + k / 1000)
    assert transitions(machine.handle(advert(LOWER_V4, 200), 20.2)) == [(M, B)]


@BOTH_VERSIONS
def test_master_answers_priority_zero_with_advert_and_resets_timer_rfc5798_6_4_3(
    version: Literal[2, 3],
) -> None:
    machine = as_master(20.0, version=version)
    assert machine.handle(advert(HIGHER_V4, 0), 20.4) == [SendAdvert(100)]
    assert machine.state is M
    assert machine.next_deadline() == pytest.approx(21.4)


def test_master_v2_discards_advert_with_another_interval_rfc3768_7_1() -> None:
    machine = as_master(20.0, version=2)
    assert machine.handle(advert(HIGHER_V4, 200, interval=3.0), 20.5) == []
    assert machine.state is M


def test_master_keeps_advertising_with_lowered_priority() -> None:
    machine = as_master(20.0, priority=150)
    assert machine.handle(PriorityChanged(90), 20.2) == []
    assert machine.state is M
    assert machine.handle(TimerFired(), 21.0) == [SendAdvert(90)]
    # Now a 100 backup's advert outranks us.
    assert transitions(machine.handle(advert(LOWER_V4, 100), 21.5)) == [(M, B)]


# Shutdown of a master: priority 0, make-before-break, RFC 5798 section 6.4.3


@BOTH_VERSIONS
def test_master_shutdown_sends_priority_zero_and_keeps_vips_rfc5798_6_4_3(
    version: Literal[2, 3],
) -> None:
    machine = as_master(20.0, version=version)
    actions = machine.handle(Shutdown(), 20.5)
    assert transitions(actions) == [(M, R)]
    assert without_state_changes(actions) == [SendAdvert(0)]
    assert machine.holds_vips
    assert machine.next_deadline() == pytest.approx(20.5 + 3 + 156 / 256)


def test_releasing_to_initialize_when_new_master_is_heard() -> None:
    machine = as_master(20.0)
    machine.handle(Shutdown(), 20.5)
    # A peer also leaving tells us nothing about a successor.
    assert machine.handle(advert(LOWER_V4, 0), 20.6) == []
    assert machine.state is R
    actions = machine.handle(advert(LOWER_V4, 90), 20.7)
    assert transitions(actions) == [(R, INIT)]
    assert without_state_changes(actions) == [RemoveVips(VIPS_V4, handover=True)]
    assert machine.next_deadline() is None
    assert not machine.holds_vips


def test_releasing_to_initialize_after_master_down_interval_without_new_master() -> None:
    machine = as_master(20.0)
    machine.handle(Shutdown(), 20.5)
    deadline = machine.next_deadline()
    assert deadline is not None
    assert machine.handle(TimerFired(), deadline - 0.1) == []  # early: no further advert
    actions = machine.handle(TimerFired(), deadline)
    assert transitions(actions) == [(R, INIT)]
    assert without_state_changes(actions) == [RemoveVips(VIPS_V4)]


def test_releasing_repeated_shutdown_releases_vips_at_once() -> None:
    machine = as_master(20.0)
    machine.handle(Shutdown(), 20.5)
    actions = machine.handle(Shutdown(), 20.6)
    assert transitions(actions) == [(R, INIT)]
    assert RemoveVips(VIPS_V4) in actions


def test_releasing_fault_releases_vips_at_once() -> None:
    machine = as_master(20.0)
    machine.handle(Shutdown(), 20.5)
    actions = machine.handle(LinkChanged(up=False), 20.6)
    assert transitions(actions) == [(R, INIT)]
    assert RemoveVips(VIPS_V4) in actions
    assert not any(isinstance(a, SendAdvert) for a in actions)


def test_startup_after_shutdown_starts_again_rfc5798_6_4_1() -> None:
    machine = started(0.0)
    machine.handle(Shutdown(), 1.0)
    assert transitions(machine.handle(Startup(), 2.0)) == [(INIT, B)]


# Fault: tracking and link state (keepalived; no RFC state)


def test_master_to_fault_on_tracking_failure_sends_priority_zero_keepalived() -> None:
    machine = as_master(20.0)
    actions = machine.handle(TrackingFault(active=True), 20.5)
    assert transitions(actions) == [(M, F)]
    assert without_state_changes(actions) == [
        FaultChanged(frozenset({FaultReason.TRACKING})),
        SendAdvert(0),
        RemoveVips(VIPS_V4),
    ]
    assert machine.next_deadline() is None


def test_master_to_fault_on_link_down_removes_vips_without_advert() -> None:
    machine = as_master(20.0)
    actions = machine.handle(LinkChanged(up=False), 20.5)
    assert transitions(actions) == [(M, F)]
    assert without_state_changes(actions) == [
        FaultChanged(frozenset({FaultReason.LINK_DOWN})),
        RemoveVips(VIPS_V4),
    ]


def test_backup_to_fault_on_link_down_and_back_to_backup_on_link_up() -> None:
    machine = started(0.0)
    assert transitions(machine.handle(LinkChanged(up=False), 1.0)) == [(B, F)]
    assert machine.next_deadline() is None
    assert machine.handle(advert(HIGHER_V4, 200), 2.0) == []  # no part in the election
    actions = machine.handle(LinkChanged(up=True), 3.0)
    assert transitions(actions) == [(F, B)]
    assert machine.next_deadline() == pytest.approx(3.0 + 3 + 156 / 256)


def test_fault_stays_until_every_reason_clears() -> None:
    machine = started(0.0)
    machine.handle(TrackingFault(active=True), 1.0)
    machine.handle(LinkChanged(up=False), 2.0)
    actions = machine.handle(TrackingFault(active=False), 3.0)
    assert actions == [FaultChanged(frozenset({FaultReason.LINK_DOWN}))]
    assert machine.state is F
    assert transitions(machine.handle(LinkChanged(up=True), 4.0)) == [(F, B)]


def test_repeated_link_state_changes_nothing() -> None:
    machine = started(0.0)
    assert machine.handle(LinkChanged(up=True), 1.0) == []
    machine.handle(LinkChanged(up=False), 2.0)
    assert machine.handle(LinkChanged(up=False), 3.0) == []


def test_v3_leaving_fault_forgets_the_adopted_master_interval() -> None:
    machine = started(0.0, version=3)
    machine.handle(advert(HIGHER_V4, 200, interval=3.0), 1.0)
    machine.handle(LinkChanged(up=False), 2.0)
    machine.handle(LinkChanged(up=True), 3.0)
    assert machine.master_adver_interval == 1.0


def test_owner_leaving_fault_takes_over_after_one_advert_interval_keepalived() -> None:
    machine = started(0.0, priority=255)
    machine.handle(LinkChanged(up=False), 1.0)
    assert transitions(machine.handle(LinkChanged(up=True), 2.0)) == [(F, B)]
    assert machine.next_deadline() == pytest.approx(3.0 + 1 / 256)


def test_fault_to_initialize_on_shutdown() -> None:
    machine = started(0.0)
    machine.handle(LinkChanged(up=False), 1.0)
    actions = machine.handle(Shutdown(), 2.0)
    assert transitions(actions) == [(F, INIT)]
    assert without_state_changes(actions) == []


# Errors: the machine's own, and it is left unchanged


def snapshot(machine: VrrpMachine) -> tuple[Any, ...]:
    return (
        machine.state,
        machine.next_deadline(),
        machine.priority,
        machine.fault_reasons,
        machine.master_adver_interval,
    )


@pytest.mark.parametrize(
    ("setup", "event"),
    [
        ("initialize", TimerFired()),
        ("initialize", advert(HIGHER_V4, 200)),
        ("initialize", Shutdown()),
        ("backup", Startup()),
        ("master", Startup()),
        ("fault", TimerFired()),
        ("fault", Startup()),
        ("releasing", Startup()),
        ("after-shutdown", Shutdown()),
    ],
)
def test_event_the_state_cannot_take_raises_and_changes_nothing(setup: str, event: Event) -> None:
    if setup == "initialize":
        machine = VrrpMachine(make_params())
    elif setup == "backup":
        machine = started(0.0)
    elif setup == "master":
        machine = as_master(0.0)
    elif setup == "fault":
        machine = started(0.0)
        machine.handle(LinkChanged(up=False), 0.0)
    elif setup == "releasing":
        machine = as_master(0.0)
        machine.handle(Shutdown(), 0.0)
    else:
        machine = started(0.0)
        machine.handle(Shutdown(), 0.0)
    before = snapshot(machine)
    with pytest.raises(UnexpectedEventError):
        machine.handle(event, 0.1)
    assert snapshot(machine) == before


def test_raise_after_an_overdue_timer_rolls_the_timer_back_too() -> None:
    machine = as_master(20.0)
    machine.handle(Shutdown(), 20.5)
    before = snapshot(machine)
    # The release timer is overdue; Initialize cannot take an advert, so nothing happens.
    with pytest.raises(UnexpectedEventError):
        machine.handle(advert(LOWER_V4, 100), 100.0)
    assert snapshot(machine) == before
    assert machine.holds_vips


def test_overdue_timer_runs_before_the_event() -> None:
    machine = started(0.0)
    deadline = machine.next_deadline()
    assert deadline is not None
    actions = machine.handle(advert(HIGHER_V4, 200), deadline + 1.0)
    # The master down timer expired first; then the higher advert makes us step down.
    assert transitions(actions) == [(B, M), (M, B)]
    assert actions.count(AddVips(VIPS_V4)) == 1
    assert actions.count(RemoveVips(VIPS_V4, handover=True)) == 1


def test_advert_from_other_address_family_raises_invalid_event() -> None:
    machine = started(0.0)
    with pytest.raises(InvalidEventError):
        machine.handle(advert(HIGHER_V6, 200), 1.0)


@pytest.mark.parametrize("event", [SyncGroupFault(active=True), SyncGroupMaster()])
def test_sync_group_event_without_sync_group_raises_invalid_event(event: Event) -> None:
    machine = started(0.0)
    with pytest.raises(InvalidEventError):
        machine.handle(event, 1.0)


def test_sync_group_backup_in_backup_raises() -> None:
    machine = started(0.0, sync_group="G")
    with pytest.raises(UnexpectedEventError):
        machine.handle(SyncGroupBackup(), 1.0)


def test_clock_going_backwards_raises() -> None:
    machine = started(5.0)
    with pytest.raises(ClockWentBackwardsError):
        machine.handle(advert(HIGHER_V4, 200), 4.0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vrid": 0}, "vrid"),
        ({"priority": 0}, "priority"),
        ({"version": 2, "advert_interval": 0.5}, "v2 advert interval"),
        ({"version": 3, "advert_interval": 0.005}, "v3 advert interval"),
        ({"version": 3, "advert_interval": 41.0}, "v3 advert interval"),
        ({"vips": ()}, "no virtual addresses"),
        ({"vips": VIPS_V6}, "is IPv6"),
        ({"version": 2, "primary_address": OWN_V6, "vips": VIPS_V6}, "IPv4 only"),
        ({"preempt": False, "preempt_delay": 5.0}, "nopreempt"),
        ({"preempt": False, "priority": 255}, "always preempts"),
        ({"initial_state": InitialState.MASTER, "preempt": False}, "initial state BACKUP"),
        ({"preempt_delay": -1.0}, "negative"),
    ],
)
def test_params_refuse_what_cannot_work(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_params(**overrides)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": HIGHER_V4, "priority": 256, "advert_interval": 1.0}, "priority"),
        ({"source": HIGHER_V4, "priority": 100, "advert_interval": 0.0}, "interval"),
    ],
)
def test_malformed_advert_event_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdvertReceived(**kwargs)


def test_priority_changed_refuses_zero() -> None:
    with pytest.raises(ValueError, match="priority"):
        PriorityChanged(0)


# Random event sequences


PEERS = [LOWER_V4, HIGHER_V4, OWN_V4]


def events_strategy(in_sync_group: bool) -> st.SearchStrategy[Event]:
    adverts = st.builds(
        AdvertReceived,
        source=st.sampled_from(PEERS),
        priority=st.sampled_from([0, 1, 99, 100, 101, 150, 200, 254, 255]),
        advert_interval=st.sampled_from([1.0, 1.0, 2.0, 0.5]),
    )
    choices: list[st.SearchStrategy[Event]] = [
        adverts,
        adverts,
        adverts,
        st.just(TimerFired()),
        st.builds(PriorityChanged, st.integers(1, 255)),
        st.builds(TrackingFault, st.booleans()),
        st.builds(LinkChanged, st.booleans()),
        st.sampled_from([Startup(), Shutdown()]),
        st.builds(Handover, st.booleans()),
    ]
    if in_sync_group:
        choices += [
            st.builds(SyncGroupFault, st.booleans()),
            st.sampled_from([SyncGroupBackup(), SyncGroupMaster()]),
        ]
    return st.one_of(choices)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[InstanceParams, list[tuple[str, float, Event]]]:
    in_sync_group = draw(st.booleans())
    version = draw(st.sampled_from([2, 3]))
    preempt = draw(st.booleans())
    params = make_params(
        version=version,
        priority=draw(st.sampled_from([1, 100, 200, 254] + ([255] if preempt else []))),
        preempt=preempt,
        preempt_delay=draw(st.sampled_from([0.0, 2.5])) if preempt else 0.0,
        sync_group="G" if in_sync_group else None,
    )
    after = st.tuples(
        st.just("after"),
        st.one_of(st.floats(0.0, 1.5), st.floats(0.0, 10.0)),
        events_strategy(in_sync_group),
    )
    # ("at-deadline", _, TimerFired) delivers the timer when it is due, as the adapter does.
    at_deadline = st.tuples(st.just("at-deadline"), st.just(0.0), st.just(TimerFired()))
    steps = draw(st.lists(st.one_of(after, after, at_deadline), min_size=5, max_size=60))
    if draw(st.integers(0, 9)) > 0:
        steps.insert(0, ("after", 0.0, Startup()))
    return params, steps


@settings(max_examples=500, deadline=None)
@given(scenarios())
def test_random_event_sequences_keep_the_invariants(
    scenario: tuple[InstanceParams, list[tuple[str, float, Event]]],
) -> None:
    params, steps = scenario
    machine = VrrpMachine(params)
    now = 0.0
    vips_held = False
    released = False  # sent priority 0 on shutdown: no more adverts until Startup
    for how, delay, event in steps:
        deadline = machine.next_deadline()
        if how == "at-deadline":
            if deadline is None:
                continue
            now = max(now, deadline)
        else:
            now += delay
        before = snapshot(machine)
        try:
            actions = machine.handle(event, now)
        except VrrpError:
            assert snapshot(machine) == before
            continue
        if isinstance(event, Startup):
            released = False
        back_to_master = (R, M) in transitions(actions)
        for action in actions:
            if isinstance(action, AddVips):
                # A handover that failed or was cancelled: the VIPs never left (harmless).
                assert not vips_held or back_to_master, "AddVips twice without RemoveVips"
                vips_held = True
            elif isinstance(action, RemoveVips):
                assert vips_held, "RemoveVips without AddVips"
                vips_held = False
            elif isinstance(action, SendAdvert):
                assert not released, "advert after the priority 0 one"
                released = action.priority == 0 and isinstance(event, Shutdown)
        assert vips_held == machine.holds_vips
        assert machine.holds_vips == (machine.state in (VrrpState.MASTER, VrrpState.RELEASING))
        next_deadline = machine.next_deadline()
        assert next_deadline is None or next_deadline > now
        # Backup, Master and Releasing always have a timer running (but a handed-over
        # backup, which never takes over); the others never do.
        timed = machine.state in (VrrpState.BACKUP, VrrpState.MASTER, VrrpState.RELEASING)
        timed = timed and not (machine.handed_over and machine.state is VrrpState.BACKUP)
        assert not (machine.handed_over and machine.state is VrrpState.MASTER)
        assert (next_deadline is not None) == timed
        assert machine.fault_reasons == frozenset() or machine.state in (
            VrrpState.FAULT,
            VrrpState.INITIALIZE,
        )


def test_params_are_frozen() -> None:
    params = make_params()
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.priority = 5  # type: ignore[misc]
